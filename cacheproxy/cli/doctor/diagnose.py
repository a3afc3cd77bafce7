"""What makes a Dockerfile's Python builds slow, and the lines that fix it.

Each rule is a function from the parsed Dockerfile to findings; `diagnose` runs them all. The
rules follow the usual path to fast image builds: copy the dependency files before the code,
keep downloads across builds (a proxy such as cacheproxy, or a BuildKit cache mount; for a
lock install, the proxy's transparent face), install with uv, and leave compilers behind in a
build stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from cacheproxy.cli.doctor.dockerfile import (
    Dockerfile,
    InstallCommand,
    Instruction,
    Stage,
    install_commands,
)
from cacheproxy.cli.doctor.fixes import (
    CACHE_MOUNT,
    PROXY_ARG,
    TRUST_VARIABLE,
    build_hint,
    copy_lines,
    dependency_files,
    instruction_line,
    multi_stage,
    run_line,
    transparent_fix,
    with_cache_mount,
    with_uv,
)


@dataclass(frozen=True)
class Finding:
    rule: str
    lines: tuple[int, ...]
    message: str
    fix: str  # Dockerfile lines to paste in place of the ones named

    def as_dict(self) -> dict:
        return {**asdict(self), "lines": list(self.lines)}


# Where each tool can be pointed at a proxy: variables (ARG or ENV) and command-line options.
_PROXY_NAMES = {
    "pip": ("PIP_INDEX_URL",),
    "uv": ("UV_DEFAULT_INDEX", "UV_INDEX_URL"),
    "pdm": ("PDM_PYPI_URL",),
    "pipenv": ("PIPENV_PYPI_MIRROR",),
    "poetry": (),
}
_PROXY_OPTION = re.compile(r"(?:^|[\s{+])(?:--index-url|--default-index|-i|--pypi-mirror)(?:=|\s)")
_NO_CACHE = {
    "pip": (("--no-cache-dir",), "PIP_NO_CACHE_DIR"),
    "uv": (("--no-cache", "-n"), "UV_NO_CACHE"),
}
_BUILD_TOOL = re.compile(
    r"(gcc|g\+\+|clang|build-essential|build-base|make|cmake|gfortran|cargo|rustc|.+-dev|.+-devel)"
)
_SYSTEM_INSTALL = re.compile(
    r"\b(?:apt-get|apt|apk|yum|dnf|microdnf)\s+(?:-\S+\s+)*(?:install|add)\b"
)
_BOOTSTRAP = {"pip", "setuptools", "wheel", "uv"}


def _installs(stage: Stage) -> Iterator[tuple[Instruction, InstallCommand]]:
    for instruction in stage.instructions:
        for command in install_commands(instruction):
            yield instruction, command


def _transparent(instruction: Instruction) -> bool:
    """Through the transparent face: a CA mounted as a secret and a trust variable naming a
    file (HTTPS_PROXY, a predefined build argument, cannot be seen in a Dockerfile)."""
    if not any(f.startswith("--mount=") and "type=secret" in f for f in instruction.flags):
        return False
    names = instruction.args | instruction.envs
    return any(v in names or f"{v}=" in instruction.body for v in set(TRUST_VARIABLE.values()))


def _bypasses_index(command: InstallCommand) -> bool:
    """A lock install no index variable or option reaches: uv sync, pylock.toml, poetry. pdm
    and pipenv read their mirror variable for a lock that names files by hash."""
    return command.lock_file is not None and command.tool not in ("pdm", "pipenv")


def _proxied(instruction: Instruction, command: InstallCommand) -> bool:
    if _transparent(instruction):
        return True
    if _bypasses_index(command):
        return False
    names = instruction.args | instruction.envs
    if any(name in names for name in _PROXY_NAMES[command.tool]):
        return True
    if command.tool == "poetry" and any(
        n.startswith("POETRY_REPOSITORIES_") and n.endswith("_URL") for n in names
    ):
        return True
    return bool(_PROXY_OPTION.search(" ".join(command.words)))


def _cache_mounted(instruction: Instruction) -> bool:
    return any(f.startswith("--mount=") and "type=cache" in f for f in instruction.flags)


def _cache_off(instruction: Instruction, command: InstallCommand) -> str | None:
    """The option or variable that turns the tool's download cache off, if any."""
    options, variable = _NO_CACHE.get(command.tool, ((), None))
    for word in command.words:
        if word in options:
            return word
    return variable if variable in instruction.envs else None


def _global_only(df: Dockerfile, command: InstallCommand, instruction: Instruction) -> str:
    unseen = [n for n in _PROXY_NAMES[command.tool] if n in df.global_args - instruction.args]
    if not unseen:
        return ""
    return f" (ARG {unseen[0]} before FROM is not seen by RUN: declare it again in the stage)"


def copy_before_install(df: Dockerfile) -> list[Finding]:
    """The whole context copied before an install in the same stage."""
    findings = []
    for stage in df.stages:
        copied: Instruction | None = None
        for instruction in stage.instructions:
            if copied is None and _copies_context(instruction):
                copied = instruction
                continue
            commands = install_commands(instruction)
            if copied is None or not commands:
                continue
            files, before, after = dependency_files(commands[0])
            if after is None:  # the same install, only earlier: keep the whole RUN as written
                before = instruction.body
            fix = copy_lines(files, copied.words()[-1])
            fix += [run_line(instruction.flags, before), instruction_line(copied)]
            fix += [run_line(instruction.flags, after)] if after else []
            findings.append(
                Finding(
                    "copy-before-install",
                    (copied.start, instruction.start),
                    f"the whole build context is copied (line {copied.start}) before the "
                    f"install at line {instruction.start}: every code change reinstalls "
                    "every dependency; copy the dependency files first",
                    "\n".join(fix),
                )
            )
            copied = None
    return findings


def _copies_context(instruction: Instruction) -> bool:
    if instruction.keyword not in ("COPY", "ADD"):
        return False
    if any(flag.startswith("--from=") for flag in instruction.flags):
        return False
    sources = instruction.words()[:-1]
    return any(source in (".", "./", "*", "./*") for source in sources)


def no_proxy_or_cache(df: Dockerfile) -> list[Finding]:
    """An install that downloads everything on every build: no proxy, no cache mount."""
    findings = []
    for stage in df.stages:
        for instruction, command in _installs(stage):
            if _proxied(instruction, command) or _cache_mounted(instruction):
                continue
            if _cache_off(instruction, command):
                continue  # said by no_cache_dir, with its own fix
            if command.lock_file is not None:
                continue  # said by lockfile_install, with the transparent face as the fix
            findings.append(
                Finding(
                    "no-proxy-or-cache",
                    (instruction.start,),
                    f"{command.tool} downloads every package on every build: no proxy "
                    "(index URL) and no cache mount" + _global_only(df, command, instruction),
                    _proxy_fix(instruction, command),
                )
            )
    return findings


def lockfile_install(df: Dockerfile) -> list[Finding]:
    """A lock install (uv sync, pylock.toml, poetry, pdm, pipenv sync) with no proxy and no
    cache: the lock names where each file comes from, so an index URL does not bring it
    through a proxy; HTTPS_PROXY and the proxy's CA do (docs/lockfiles.md)."""
    findings = []
    for stage in df.stages:
        for instruction, command in _installs(stage):
            lock = command.lock_file
            if lock is None or _proxied(instruction, command) or _cache_mounted(instruction):
                continue
            if _cache_off(instruction, command):
                continue  # said by no_cache_dir, with the same fix
            findings.append(
                Finding(
                    "lockfile-install",
                    (instruction.start,),
                    _lockfile_message(instruction, command, lock),
                    transparent_fix(instruction, command),
                )
            )
    return findings


def _lockfile_message(instruction: Instruction, command: InstallCommand, lock: str) -> str:
    what = f"{command.tool} {command.subcommand} installs from {lock}"
    face = (
        "cacheproxy's transparent face takes it (HTTPS_PROXY as a build argument, the CA as a "
        "build secret: the image and the lock unchanged)"
    )
    names = instruction.args | instruction.envs
    if _bypasses_index(command):
        ignored = [n for n in _PROXY_NAMES[command.tool] if n in names]
        unheard = f" ({ignored[0]} does not reach it)" if ignored else ""
        return (
            f"{what}, which fetches each file from where the lock says: no index URL changes "
            f"that{unheard}, so every build downloads every package; {face}"
        )
    mirror = _PROXY_NAMES[command.tool][0]
    return (
        f"{what} with no proxy and no cache mount: every build downloads every package; "
        f"{face}, whatever the lock names ({mirror} works too for a lock that names no URLs)"
    )


def _proxy_fix(instruction: Instruction, command: InstallCommand) -> str:
    if command.lock_file is not None:
        return transparent_fix(instruction, command)
    lines = []
    arg = PROXY_ARG.get(command.tool)
    if arg:
        lines += [build_hint(arg), f"ARG {arg}"]
    return "\n".join(lines + [with_cache_mount(instruction)])


def no_cache_dir(df: Dockerfile) -> list[Finding]:
    """The tool's cache switched off while nothing else keeps the downloads."""
    findings = []
    for stage in df.stages:
        for instruction, command in _installs(stage):
            switch = _cache_off(instruction, command)
            if switch is None or _proxied(instruction, command):
                continue
            mounted = " (so the cache mount is never used)" if _cache_mounted(instruction) else ""
            findings.append(
                Finding(
                    "no-cache-dir",
                    (instruction.start,),
                    f"{switch} turns off {command.tool}'s cache{mounted} and no proxy is set: "
                    "every build downloads everything again; a cache mount keeps the image "
                    "as small without it",
                    _proxy_fix(instruction, command),
                )
            )
    return findings


def pip_not_uv(df: Dockerfile) -> list[Finding]:
    """pip where uv would install the same requirements many times faster."""
    findings = []
    for stage in df.stages:
        has_uv = False
        for instruction, command in _installs(stage):
            packages = set(command.packages)
            if command.tool == "uv" or "uv" in packages:
                has_uv = True
            if command.tool != "pip" or (packages and packages <= _BOOTSTRAP):
                continue
            fix = [] if has_uv else [run_line((CACHE_MOUNT,), "python -m pip install uv")]
            findings.append(
                Finding(
                    "pip-not-uv",
                    (instruction.start,),
                    f"{command.executable} install: uv installs the same requirements many "
                    "times faster (uv pip install --system, or a uv multi-stage build)",
                    "\n".join(fix + [with_uv(instruction)]),
                )
            )
    return findings


def build_tools_in_final_stage(df: Dockerfile) -> list[Finding]:
    """Compilers shipped in the image that runs, where a build stage would leave them."""
    final = df.final
    if final is None:
        return []
    installs = [instruction for instruction, _ in _installs(final)]
    if not installs:
        return []
    tools = [i for i in final.instructions if i.keyword == "RUN" and _installs_build_tools(i)]
    full_image = len(df.stages) == 1 and _full_python_image(final.base)
    if not tools and not full_image:
        return []
    where = (
        f"build tools installed at line {tools[0].start}"
        if tools
        else f"the full {final.base} image (with compilers)"
    )
    return [
        Finding(
            "build-tools-in-final-stage",
            tuple(sorted({i.start for i in tools} | {installs[0].start})),
            f"{where} stay in the final image: build in a first stage and copy only the "
            "installed packages into a slim one (smaller, fewer tools to attack)",
            multi_stage(final, {n for n, i in enumerate(final.instructions) if _copies_context(i)}),
        )
    ]


def _installs_build_tools(instruction: Instruction) -> bool:
    if not _SYSTEM_INSTALL.search(instruction.body):
        return False
    return any(_BUILD_TOOL.fullmatch(word) for word in instruction.words())


def _full_python_image(base: str) -> bool:
    name, _, tag = base.partition(":")
    return name.rsplit("/", 1)[-1] == "python" and not re.search(r"slim|alpine", tag)


RULES: tuple[Callable[[Dockerfile], list[Finding]], ...] = (
    copy_before_install,
    no_proxy_or_cache,
    lockfile_install,
    no_cache_dir,
    pip_not_uv,
    build_tools_in_final_stage,
)


def diagnose(df: Dockerfile) -> list[Finding]:
    findings = [
        finding
        for rule in RULES
        for finding in rule(df)
        if not any(finding.rule in df.ignored_at(line) for line in finding.lines)
    ]
    return sorted(findings, key=lambda f: (f.lines, f.rule))
