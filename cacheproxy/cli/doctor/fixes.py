"""The Dockerfile lines `cacheproxy doctor` suggests: rewritten RUN lines and stage layouts."""

from __future__ import annotations

import posixpath
import re

from cacheproxy.cli.doctor.dockerfile import InstallCommand, Instruction, Stage, install_commands

# BuildKit keeps this directory between builds; pip, uv, poetry, pdm and pipenv all cache under
# it when run as root (the python images' default user).
CACHE_MOUNT = "--mount=type=cache,target=/root/.cache"

# The variable to pass as a build argument to point each tool at a proxy.
PROXY_ARG = {
    "pip": "PIP_INDEX_URL",
    "uv": "UV_DEFAULT_INDEX",
    "pdm": "PDM_PYPI_URL",
    "pipenv": "PIPENV_PYPI_MIRROR",
}

_LOCK_FILES = {
    "uv": ("uv.lock", r"(\buv\s+sync\b)", r"\1 --no-install-project"),
    "poetry": ("poetry.lock", r"(\bpoetry\s+install\b)", r"\1 --no-root"),
    "pdm": ("pdm.lock", r"(\bpdm\s+(?:install|sync)\b)", r"\1 --no-self"),
}
_PIP_ONLY = re.compile(
    r"\s+(?:--no-cache-dir|--disable-pip-version-check|--no-warn-script-location"
    r"|--root-user-action[= ]\S+|--progress-bar[= ]\S+)(?=\s|$)"
)
_PIP_CALL = re.compile(
    r"(?<![\w/.-])(?<!uv )(?:(?P<py>\S*python[\d.]*)\s+-m\s+pip|(?P<venv>\S*/)bin/pip[\d.]*"
    r"|pip[\d.]*)\s+install\b"
)
_NO_CACHE_OPTION = re.compile(r"\s+(?:--no-cache-dir|--no-cache)(?=\s|$)")


def build_hint(arg: str) -> str:
    return (
        f"# docker build --network=host --build-arg {arg}=http://127.0.0.1:3145/simple/ ."
        "  (see cacheproxy env)"
    )


def run_line(flags: tuple[str, ...], body: str) -> str:
    """A RUN instruction, long && chains broken over lines as people write them."""
    if "\n" in body:  # a heredoc: its lines are the script
        return " ".join(["RUN", *flags, body.rstrip("\n")])
    text = " ".join(body.split())
    head = " ".join(["RUN", *flags])
    if len(head) + len(text) < 90:
        return f"{head} {text}"
    parts = text.split(" && ")
    return f"{head} \\\n    " + " \\\n && ".join(parts)


def with_cache_mount(instruction: Instruction) -> str:
    flags = instruction.flags
    if not any("type=cache" in flag for flag in flags):
        flags = (*flags, CACHE_MOUNT)
    return run_line(flags, _NO_CACHE_OPTION.sub("", instruction.body))


def with_uv(instruction: Instruction) -> str:
    def replace(match: re.Match) -> str:
        if match.group("venv"):
            return f"uv pip install --python {match.group('venv')}bin/python"
        return "uv pip install --system"

    body = _PIP_CALL.sub(replace, instruction.body)
    return run_line(instruction.flags, _PIP_ONLY.sub("", body))


def dependency_files(command: InstallCommand) -> tuple[list[str], str, str | None]:
    """What to copy before the install so it depends on those files only: the files, the
    install to run on them, and the install to run after the code is in (None: no second)."""
    call = f"{command.executable} install {' '.join(command.words)}"
    if command.tool in _LOCK_FILES:
        lock, pattern, replacement = _LOCK_FILES[command.tool]
        plain = _plain(command)
        return ["pyproject.toml", lock], re.sub(pattern, replacement, plain, count=1), plain
    if command.tool == "pipenv":
        return ["Pipfile", "Pipfile.lock"], _plain(command), None
    requirements = command.option_values("-r", "--requirement", "-c", "--constraint")
    if requirements:
        return requirements, call, None
    if any(p in (".", "./") or p.startswith("./") for p in command.packages):
        # The project itself needs the code; its dependencies only need pyproject.toml.
        return ["pyproject.toml"], "uv pip install --system -r pyproject.toml", call
    return [], call, None


def _plain(command: InstallCommand) -> str:
    verb = "install" if command.tool in ("poetry", "pipenv") else ""
    words = [command.executable, *([verb] if verb else []), *command.words]
    if command.tool == "uv":
        words.insert(1, "sync")
    elif command.tool == "pdm":
        words.insert(1, "install")
    return " ".join(words)


def copy_lines(files: list[str], context_destination: str) -> list[str]:
    """COPY lines that put each dependency file where the install reads it."""
    if len(files) > 1 and not any(posixpath.isabs(f) for f in files):
        return [f"COPY {' '.join(files)} ./"]
    lines = []
    for target in files:
        source = target
        if posixpath.isabs(target):
            base = posixpath.normpath(context_destination)
            inside = target.startswith(base.rstrip("/") + "/")
            source = posixpath.relpath(target, base) if inside else posixpath.basename(target)
        lines.append(f"COPY {source} {target}")
    return lines


def instruction_line(instruction: Instruction) -> str:
    if instruction.keyword == "RUN":
        return run_line(instruction.flags, instruction.body)
    return " ".join([instruction.keyword, *instruction.flags, " ".join(instruction.body.split())])


def slim(base: str) -> str:
    name, _, tag = base.partition(":")
    if name.rsplit("/", 1)[-1] != "python" or re.search(r"slim|alpine", tag):
        return base
    version, dash, distribution = tag.partition("-")
    return f"{name}:{version + '-' if version else ''}slim{dash + distribution if dash else ''}"


def multi_stage(stage: Stage, copies_context: set[int]) -> str:
    """The stage split in two: everything up to the last install builds; the release image
    gets the installed packages, the code and what came after."""
    last = max(
        n for n, instruction in enumerate(stage.instructions) if install_commands(instruction)
    )
    venvs = {
        command.executable.split("/bin/")[0]
        for instruction in stage.instructions[: last + 1]
        for command in install_commands(instruction)
        if "/bin/" in command.executable
    }
    build, release = [f"FROM {stage.base} AS build"], [f"FROM {slim(stage.base)} AS release"]
    release.append("# only the run-time libraries here (say libpq5, not libpq-dev)")
    release += [f"COPY --from=build {path} {path}" for path in sorted(venvs or {"/usr/local"})]
    for n, instruction in enumerate(stage.instructions):
        line = instruction_line(instruction)
        if n > last or n in copies_context:
            release.append(line)
        else:
            build.append(line)
            if instruction.keyword in ("WORKDIR", "ENV", "ARG"):  # the release needs them too
                release.append(line)
    return "\n".join(build + [""] + release)
