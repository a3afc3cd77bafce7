"""The light install: the S3 tier and doctor are extras, and without them each says so in one
line naming the extra; everything else works without them."""

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from cacheproxy.config import default_upstream

ROOT = Path(__file__).resolve().parent.parent

# Runs the command line as if these modules were not installed: None in sys.modules makes
# every import of them (and of their submodules) fail with ModuleNotFoundError.
SHIM = (
    "import sys\n"
    "for name in sys.argv.pop(1).split(','):\n"
    "    sys.modules[name] = None\n"
    "from cacheproxy.cli.main import main\n"
    "sys.argv[0] = 'cacheproxy'\n"
    "main()\n"
)


def without(modules: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CACHEPROXY_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-c", SHIM, modules, *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=60,
    )


S3_LINE = (
    "cacheproxy: error: the shared cache needs the s3 extra: pip install 'cacheproxy-server[s3]'\n"
)
DOCTOR_LINE = (
    "cacheproxy: error: doctor needs the doctor extra: pip install 'cacheproxy-server[doctor]'\n"
)
NO_S3 = "aiobotocore,botocore"


def test_serve_with_a_shared_cache_and_no_s3_extra_is_one_line_and_exit_2(tmp_path):
    result = without(
        NO_S3, "serve", "--port", "0", "--cache-dir", str(tmp_path), "--shared-cache", "s3://b-1"
    )
    assert result.returncode == 2
    assert result.stderr == S3_LINE


def test_a_shared_command_without_the_s3_extra_is_one_line_and_exit_2(tmp_path):
    assert without(NO_S3, "stats", "--cache-dir", str(tmp_path)).returncode == 2  # no cache yet
    (tmp_path / "store").mkdir()
    result = without(NO_S3, "stats", "--cache-dir", str(tmp_path), "--shared-cache", "s3://b-1")
    assert result.returncode == 2
    assert result.stderr == S3_LINE


def test_doctor_without_its_extra_is_one_line_and_exit_2(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.12\nRUN pip install flask\n")
    result = without("dockerfile_parse", "doctor", str(dockerfile))
    assert result.returncode == 2
    assert result.stderr == DOCTOR_LINE


def test_everything_else_runs_without_the_extras(tmp_path):
    modules = f"{NO_S3},dockerfile_parse"
    assert without(modules, "--help").returncode == 0
    result = without(modules, "env", "--format", "dotenv")
    assert result.returncode == 0, result.stderr
    result = without(modules, "serve", "--port", "0", "--cache-dir", "/proc/nope")
    assert result.returncode == 2 and "cache dir /proc/nope" in result.stderr  # got that far


def test_the_readme_test_command_installs_the_extras_and_the_run_command_does_not():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    assert "aiobotocore" not in base and "dockerfile-parse" not in base
    assert any(dep.startswith("aiobotocore") for dep in extras["s3"])
    assert any(dep.startswith("dockerfile-parse") for dep in extras["doctor"])
    assert f"{project['name']}[s3,doctor]" in extras["test"]


@pytest.mark.parametrize("heavy", ["pypi-simple", "pydantic", "requests", "beautifulsoup4"])
def test_the_default_upstream_comes_without_a_heavy_client(heavy):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith(heavy) for dep in project["dependencies"])


def test_the_default_upstream_is_the_public_index_simple_api():
    url = urllib.parse.urlsplit(default_upstream())
    assert url.scheme == "https" and url.netloc and url.path == "/simple/"
    assert not url.query and not url.fragment
