"""cacheproxy doctor: the rules on Dockerfiles in the shapes people write, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cacheproxy.cli.doctor.diagnose import diagnose
from cacheproxy.cli.doctor.dockerfile import install_commands, parse_dockerfile
from cacheproxy.cli.main import main

ROOT = Path(__file__).resolve().parent.parent

NAIVE = """\
FROM python:3.13-slim
RUN mkdir /code
WORKDIR /code
COPY . /code/
RUN pip install -r requirements.txt
CMD ["python", "manage.py", "runserver", "0.0.0.0:8000"]
"""

ORDERED = """\
FROM python:3.13-slim
RUN mkdir /code
WORKDIR /code
# the requirements alone first: this layer changes only with them
COPY ./requirements.txt /code/requirements.txt
RUN pip install -r requirements.txt
COPY . /code/
"""

CACHE_MOUNT = """\
FROM python:3.13-slim
WORKDIR /code
COPY ./requirements.txt /code/requirements.txt
RUN --mount=type=cache,target=/root/.cache,id=pip \\
    python -m pip install -r /code/requirements.txt
COPY . /code/
"""

UV = """\
FROM python:3.13-slim
WORKDIR /code
RUN --mount=type=cache,target=/root/.cache,id=pip \\
    python -m pip install uv
COPY ./requirements.txt /code/requirements.txt
RUN --mount=type=cache,target=/root/.cache,id=pip \\
    uv pip install --system -r /code/requirements.txt
COPY . /code/
"""

MULTI_STAGE = """\
ARG BASE=python:3.13-slim
FROM $BASE AS builder-py
ARG UV_DEFAULT_INDEX
ARG PIP_INDEX_URL
WORKDIR /code
RUN python -m pip install uv
COPY ./requirements.txt /code/requirements.txt
RUN uv pip install --system -r /code/requirements.txt

FROM $BASE AS release
COPY --from=builder-py /usr/local /usr/local
COPY . /code/
"""

BUILD_TOOLS = """\
FROM python:3.13-slim
RUN apt-get update \\
 && apt-get install -y --no-install-recommends \\
      build-essential libpq-dev \\
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ARG PIP_INDEX_URL
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
"""


def rules(text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(f.rule, f.lines) for f in diagnose(parse_dockerfile(text))]


def test_naive_copies_everything_downloads_everything_and_uses_pip():
    assert rules(NAIVE) == [
        ("copy-before-install", (4, 5)),
        ("no-proxy-or-cache", (5,)),
        ("pip-not-uv", (5,)),
    ]


def test_ordered_still_downloads_everything():
    assert rules(ORDERED) == [("no-proxy-or-cache", (6,)), ("pip-not-uv", (6,))]


def test_a_cache_mount_leaves_only_pip():
    assert rules(CACHE_MOUNT) == [("pip-not-uv", (4,))]


def test_uv_with_a_cache_mount_is_fine():
    assert rules(UV) == []


def test_multi_stage_through_a_proxy_is_fine():
    assert rules(MULTI_STAGE) == []


def test_a_proxy_arg_before_from_is_not_seen_by_run():
    text = "ARG PIP_INDEX_URL\n" + MULTI_STAGE.replace("ARG PIP_INDEX_URL\n", "")
    [finding] = diagnose(parse_dockerfile(text))
    assert finding.rule == "no-proxy-or-cache"
    assert finding.lines == (6,)  # `pip install uv`: no proxy in its stage any more
    assert "before FROM is not seen" in finding.message
    assert "ARG PIP_INDEX_URL\nRUN --mount=type=cache" in finding.fix


def test_build_tools_in_the_only_stage_and_no_cache_dir():
    findings = {f.rule: f for f in diagnose(parse_dockerfile(BUILD_TOOLS))}
    assert set(findings) == {"build-tools-in-final-stage", "pip-not-uv"}  # proxied: cache off ok
    tools = findings["build-tools-in-final-stage"]
    assert tools.lines == (2, 9)
    fix = tools.fix.splitlines()
    assert fix[0] == "FROM python:3.13-slim AS build"
    release = fix[fix.index("FROM python:3.13-slim AS release") :]
    assert "COPY --from=build /usr/local /usr/local" in release
    assert "COPY . ." in release and not any("build-essential" in line for line in release)
    assert "WORKDIR /app" in release  # the code lands where it did


def test_no_cache_dir_without_a_proxy_is_its_own_finding():
    text = BUILD_TOOLS.replace("ARG PIP_INDEX_URL\n", "")
    findings = {f.rule: f for f in diagnose(parse_dockerfile(text))}
    assert "no-proxy-or-cache" not in findings  # one finding per install for the downloads
    finding = findings["no-cache-dir"]
    assert finding.lines == (8,) and "--no-cache-dir" in finding.message
    assert "--no-cache-dir" not in finding.fix  # the mount replaces it
    assert "--mount=type=cache,target=/root/.cache" in finding.fix


def test_uv_no_cache_env_counts_as_cache_off():
    text = UV.replace("WORKDIR /code\n", "WORKDIR /code\nENV UV_NO_CACHE=1\n")
    assert ("no-cache-dir", (7,)) in rules(text)


def test_the_full_python_image_has_compilers():
    text = ORDERED.replace("python:3.13-slim", "python:3.13")
    [finding] = [f for f in diagnose(parse_dockerfile(text)) if f.rule.startswith("build")]
    assert "FROM python:3.13-slim AS release" in finding.fix


def apply(text: str, first: int, last: int, fix: str) -> str:
    lines = text.splitlines()
    return "\n".join(lines[: first - 1] + fix.splitlines() + lines[last:]) + "\n"


@pytest.mark.parametrize("rule", ["copy-before-install", "no-proxy-or-cache", "pip-not-uv"])
def test_pasting_the_fix_removes_the_finding(rule):
    [finding] = [f for f in diagnose(parse_dockerfile(NAIVE)) if f.rule == rule]
    fixed = apply(NAIVE, finding.lines[0], finding.lines[-1], finding.fix)
    assert rule not in [r for r, _ in rules(fixed)]


def test_pasting_the_multi_stage_fix_leaves_a_clean_final_stage():
    [finding] = [f for f in diagnose(parse_dockerfile(BUILD_TOOLS)) if f.rule.startswith("build")]
    assert "build-tools-in-final-stage" not in [r for r, _ in rules(finding.fix)]


def test_continuation_lines_and_comments_inside_a_run():
    text = """\
FROM python:3.12-slim
WORKDIR /app
COPY requirements.txt .
RUN apt-get update \\
# comments may sit inside a continued RUN
 && python3 -m pip install \\
      --index-url "$INDEX_URL" \\
      -r requirements.txt
"""
    instruction = parse_dockerfile(text).stages[0].instructions[-1]
    assert (instruction.start, instruction.end) == (4, 8)
    [command] = install_commands(instruction)
    assert command.tool == "pip" and command.option_values("-r") == ["requirements.txt"]
    assert rules(text) == [("pip-not-uv", (4,))]  # the --index-url goes through a proxy


def test_heredoc_run_is_one_instruction():
    text = """\
# syntax=docker/dockerfile:1
FROM python:3.13-slim
COPY . /code/
RUN <<EOF
set -e
pip install -r /code/requirements.txt
EOF
COPY app.py /code/
"""
    stage = parse_dockerfile(text).stages[0]
    assert [i.keyword for i in stage.instructions] == ["COPY", "RUN", "COPY"]
    assert (stage.instructions[1].start, stage.instructions[1].end) == (4, 7)
    assert rules(text) == [
        ("copy-before-install", (3, 4)),
        ("no-proxy-or-cache", (4,)),
        ("pip-not-uv", (4,)),
    ]


@pytest.mark.parametrize(
    ("command", "tool", "files", "rule"),
    [
        ("uv sync --locked", "uv", "COPY pyproject.toml uv.lock ./", "lockfile-install"),
        ("poetry install --only main", "poetry", "COPY pyproject.toml poetry.lock ./",
         "lockfile-install"),
        ("pdm install --prod", "pdm", "COPY pyproject.toml pdm.lock ./", "lockfile-install"),
        ("pipenv install --deploy --system", "pipenv", "COPY Pipfile Pipfile.lock ./",
         "lockfile-install"),
        ("pipenv install --system", "pipenv", "COPY Pipfile Pipfile.lock ./",
         "no-proxy-or-cache"),
        ("pip install .", "pip", "COPY pyproject.toml pyproject.toml", "no-proxy-or-cache"),
    ],
)  # fmt: skip
def test_every_installer_is_seen_with_its_dependency_files(command, tool, files, rule):
    """A lock install is told about the transparent face; any other about a proxy or cache."""
    text = f"FROM python:3.13-slim\nWORKDIR /app\nCOPY . .\nRUN {command}\n"
    findings = {f.rule: f for f in diagnose(parse_dockerfile(text))}
    assert tool in findings[rule].message
    fix = findings["copy-before-install"].fix.splitlines()
    assert fix[0] == files and "COPY . ." in fix


def test_the_projects_own_dockerfile():
    """Its one pip install is kept on purpose, and says so in a comment doctor reads."""
    text = (ROOT / "Dockerfile").read_text()
    assert rules(text) == []
    assert rules(text.replace("# doctor: ignore=", "# ")) == [("pip-not-uv", (16,))]


def test_the_compose_example():
    """The sidecar example goes through the proxy and copies requirements first; it uses pip."""
    text = (ROOT / "examples" / "compose-app" / "Dockerfile").read_text()
    assert rules(text) == []
    assert rules(text.replace("# doctor: ignore=", "# ")) == [("pip-not-uv", (10,))]


IGNORED = """FROM python:3.12-slim
ARG PIP_INDEX_URL
COPY requirements.txt .
# doctor: ignore=pip-not-uv, no-cache-dir: pinned by the base team
RUN pip install --no-cache-dir -r requirements.txt
RUN pip install --no-cache-dir -r more.txt
"""


def test_an_ignore_comment_switches_off_its_rules_for_the_next_instruction_only():
    assert rules(IGNORED) == [("pip-not-uv", (6,))]
    other_rule = IGNORED.replace("ignore=pip-not-uv, no-cache-dir", "ignore=copy-before-install")
    assert rules(other_rule) == [("pip-not-uv", (5,)), ("pip-not-uv", (6,))]


def run_doctor(tmp_path: Path, text: str | None, *args: str):
    path = tmp_path / ("Dockerfile" if text is not None else "Missing.dockerfile")
    if text is not None:
        path.write_text(text)
    return CliRunner().invoke(main, ["doctor", str(path), *args])


def test_cli_exit_codes(tmp_path):
    assert run_doctor(tmp_path, UV).exit_code == 0
    found = run_doctor(tmp_path, NAIVE)
    assert found.exit_code == 1
    assert f"{tmp_path / 'Dockerfile'}:4: copy-before-install" in found.output
    assert "    COPY requirements.txt requirements.txt" in found.output
    assert "3 findings" in found.output
    missing = run_doctor(tmp_path, None)
    assert missing.exit_code == 2 and "cannot read" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    assert run_doctor(tmp_path, "# no instructions\n").exit_code == 2


def test_cli_reads_the_default_dockerfile(tmp_path, monkeypatch):
    (tmp_path / "Dockerfile").write_text(MULTI_STAGE)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0 and "Dockerfile: ok" in result.output


def test_cli_json(tmp_path):
    result = run_doctor(tmp_path, NAIVE, "--json")
    assert result.exit_code == 1
    findings = json.loads(result.output)
    assert [f["rule"] for f in findings] == [
        "copy-before-install",
        "no-proxy-or-cache",
        "pip-not-uv",
    ]
    for finding in findings:
        assert set(finding) == {"rule", "lines", "message", "fix"}
        assert all(isinstance(n, int) for n in finding["lines"]) and finding["fix"]
    clean = run_doctor(tmp_path, UV, "--json")
    assert clean.exit_code == 0 and json.loads(clean.output) == []


LOCK_INSTALLS = [
    ("uv sync --locked", "uv.lock", "SSL_CERT_FILE"),
    ("uv sync --frozen --no-install-project", "uv.lock", "SSL_CERT_FILE"),
    ("uv pip install --system -r pylock.toml", "pylock.toml", "SSL_CERT_FILE"),
    ("uv pip sync pylock.prod.toml", "pylock.prod.toml", "SSL_CERT_FILE"),
    ("pip install -r pylock.toml", "pylock.toml", "PIP_CERT"),
    ("python3 -m pip install --requirement=/app/pylock.toml", "/app/pylock.toml", "PIP_CERT"),
    ("poetry install --no-root", "poetry.lock", "REQUESTS_CA_BUNDLE"),
    ("pdm install --prod --frozen-lockfile", "pdm.lock", "REQUESTS_CA_BUNDLE"),
    ("pdm sync", "pdm.lock", "REQUESTS_CA_BUNDLE"),
    ("pipenv sync", "Pipfile.lock", "REQUESTS_CA_BUNDLE"),
    ("pipenv install --deploy", "Pipfile.lock", "REQUESTS_CA_BUNDLE"),
]

TRANSPARENT_RUN = (
    "RUN --mount=type=secret,id=cacheproxy-ca,target=/etc/ssl/certs/cacheproxy-ca.pem \\\n"
    "    {variable}=/etc/ssl/certs/cacheproxy-ca.pem {command}"
)


@pytest.mark.parametrize(("command", "lock", "variable"), LOCK_INSTALLS)
def test_a_lock_install_gets_the_transparent_recipe(command, lock, variable):
    # An index variable does not count: the lock says where each file comes from.
    text = f"FROM python:3.13-slim\nARG UV_DEFAULT_INDEX\nARG PIP_INDEX_URL\nRUN {command}\n"
    [finding] = [f for f in diagnose(parse_dockerfile(text)) if f.rule != "pip-not-uv"]
    assert finding.rule == "lockfile-install" and finding.lines == (4,)
    assert f"installs from {lock}" in finding.message
    fix = finding.fix.splitlines()
    # The docker build line: HTTPS_PROXY (predefined, no ARG) and the CA as a secret.
    assert "--build-arg HTTPS_PROXY=http://127.0.0.1:3145" in finding.fix
    assert '--secret id=cacheproxy-ca,src="$SSL_CERT_FILE"' in finding.fix
    assert not any(line.startswith("ARG") for line in fix)
    # The Dockerfile changes by the CA trust of this one RUN.
    assert "\n".join(fix[-2:]) == TRANSPARENT_RUN.format(variable=variable, command=command)
    # Pasted in, nothing is left to find.
    assert rules("FROM python:3.13-slim\n" + "\n".join(fix) + "\n") in (
        [],
        [("pip-not-uv", (5,))],
    )


def test_a_lock_install_is_told_what_does_not_reach_it():
    text = "FROM python:3.13-slim\nARG UV_DEFAULT_INDEX\nRUN uv sync --locked\n"
    [finding] = diagnose(parse_dockerfile(text))
    assert "UV_DEFAULT_INDEX does not reach it" in finding.message


def test_lock_installs_that_need_nothing():
    cached = "FROM python:3.13-slim\nRUN --mount=type=cache,target=/root/.cache uv sync --locked\n"
    assert rules(cached) == []
    # pdm and pipenv read their mirror variable for a lock that names files by hash.
    mirrored = "FROM python:3.13-slim\nARG PIPENV_PYPI_MIRROR\nRUN pipenv sync --system\n"
    assert rules(mirrored) == []
    # An exec-form RUN is rewritten as a shell line (a variable needs a shell).
    exec_form = 'FROM python:3.13-slim\nRUN ["uv", "sync", "--locked"]\n'
    [finding] = diagnose(parse_dockerfile(exec_form))
    assert finding.fix.endswith("SSL_CERT_FILE=/etc/ssl/certs/cacheproxy-ca.pem uv sync --locked")


def test_uv_sync_with_its_cache_off_gets_the_transparent_recipe():
    text = "FROM python:3.13-slim\nARG UV_DEFAULT_INDEX\nRUN uv sync --locked --no-cache\n"
    [finding] = diagnose(parse_dockerfile(text))
    assert finding.rule == "no-cache-dir"
    assert "--secret id=cacheproxy-ca" in finding.fix and "ARG" not in finding.fix
