"""The Dockerfile lines `cacheproxy doctor` suggests: rewritten RUN lines and stage layouts."""

from __future__ import annotations

import posixpath
import re
import shlex

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

# The transparent face (docs/lockfiles.md): a lock install fetches the lock's URLs, so it goes
# through the proxy by HTTPS_PROXY (one of Docker's predefined build arguments: no ARG, not
# kept in the image's history) and trusts the proxy's CA, mounted as a build secret for its RUN
# only, so the image keeps no trace of either.
DOCKER_CA_SECRET = "cacheproxy-ca"
DOCKER_CA_TARGET = "/etc/ssl/certs/cacheproxy-ca.pem"
CA_SECRET_MOUNT = f"--mount=type=secret,id={DOCKER_CA_SECRET},target={DOCKER_CA_TARGET}"
# What each tool reads its trust from: uv SSL_CERT_FILE; pip PIP_CERT; poetry, pdm and pipenv
# (requests, httpx) REQUESTS_CA_BUNDLE.
TRUST_VARIABLE = {
    "uv": "SSL_CERT_FILE",
    "pip": "PIP_CERT",
    "poetry": "REQUESTS_CA_BUNDLE",
    "pdm": "REQUESTS_CA_BUNDLE",
    "pipenv": "REQUESTS_CA_BUNDLE",
}
TRANSPARENT_HINT = (
    '# eval "$(cacheproxy env --transparent)"   (writes the CA bundle, names it $SSL_CERT_FILE)\n'
    "# docker build --network=host --build-arg HTTPS_PROXY=http://127.0.0.1:3145 \\\n"
    f'#     --secret id={DOCKER_CA_SECRET},src="$SSL_CERT_FILE" .'
)

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


def with_ca_secret(instruction: Instruction, command: InstallCommand) -> str:
    """The lock install's RUN with the CA secret mounted and the tool told to trust it."""
    body = instruction.body
    if body.startswith("["):  # exec form: a variable needs a shell
        body = shlex.join(instruction.words())
    variable = TRUST_VARIABLE[command.tool]
    words = [*command.executable.split(), *command.subcommand.split()]
    call = r"(?<![\w/.=-])" + r"\s+".join(re.escape(word) for word in words) + r"(?=\s|$)"
    body = re.sub(call, lambda m: f"{variable}={DOCKER_CA_TARGET} {m.group(0)}", body, count=1)
    flags = instruction.flags
    if not any(f"id={DOCKER_CA_SECRET}" in flag for flag in flags):
        flags = (*flags, CA_SECRET_MOUNT)
    return run_line(flags, body)


def transparent_fix(instruction: Instruction, command: InstallCommand) -> str:
    return "\n".join([TRANSPARENT_HINT, with_ca_secret(instruction, command)])


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
