"""A Dockerfile as stages of instructions, read with dockerfile-parse.

dockerfile-parse joins continuation lines, drops comments (also those inside a continued RUN),
resolves ARGs in FROM and tracks which ARG and ENV names are in scope at each instruction. It
does not know heredocs (`RUN <<EOF`): it reads their body lines as instructions, so they are
folded back into the instruction that opened them here.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockerfile_parse import DockerfileParser

EXTRA = "doctor"


class DoctorExtraMissing(Exception):
    """dockerfile-parse, the doctor extra, is not installed; the message is one line."""

    def __init__(self) -> None:
        super().__init__(
            f"doctor needs the {EXTRA} extra: pip install 'cacheproxy-server[{EXTRA}]'"
        )


_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    flags: tuple[str, ...]  # leading --name=value options (--mount=..., --from=...)
    body: str  # the rest: the shell command, or the arguments; a heredoc's script included
    start: int  # 1-based first line
    end: int  # 1-based last line
    args: frozenset[str] = frozenset()  # ARG names declared in this stage so far
    # ENV names set so far in this stage or in the earlier stage it builds on (FROM that-stage).
    envs: frozenset[str] = frozenset()
    # Rules the comments right above it switch off: `# doctor: ignore=pip-not-uv,no-cache-dir`.
    ignored: frozenset[str] = frozenset()

    def words(self) -> list[str]:
        """The body split as a shell would (exec form: the JSON list)."""
        if self.body.startswith("["):
            try:
                return [str(word) for word in json.loads(self.body)]
            except ValueError:
                pass
        try:
            return shlex.split(self.body, comments=False)
        except ValueError:  # an unbalanced quote: still worth reading word by word
            return self.body.split()


@dataclass(frozen=True)
class Stage:
    index: int
    base: str  # the FROM image, ARGs resolved, or the name of an earlier stage
    name: str | None
    line: int
    instructions: tuple[Instruction, ...] = field(default=())
    ignored: frozenset[str] = frozenset()  # from the comments above its FROM line


@dataclass(frozen=True)
class Dockerfile:
    stages: tuple[Stage, ...]
    global_args: frozenset[str]  # ARGs before the first FROM: seen by FROM lines only

    def ignored_at(self, line: int) -> frozenset[str]:
        """The rules switched off for the instruction or FROM that starts at this line."""
        for stage in self.stages:
            if stage.line == line:
                return stage.ignored
            for instruction in stage.instructions:
                if instruction.start == line:
                    return instruction.ignored
        return frozenset()

    @property
    def final(self) -> Stage | None:
        return self.stages[-1] if self.stages else None


def _split_flags(value: str) -> tuple[tuple[str, ...], str]:
    flags = []
    rest = value.strip()
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        flags.append(word)
        rest = rest.strip()
    return tuple(flags), rest


def _heredoc_end(lines: list[str], after: int, value: str) -> int:
    """The 0-based index of the last line of the heredocs opened on the instruction ending at
    line `after`, or `after` when it opens none."""
    end = after
    for dash, _, word in _HEREDOC.findall(value):
        end += 1
        while end < len(lines):
            text = lines[end].rstrip("\n")
            if (text.lstrip("\t") if dash else text) == word:
                break
            end += 1
    return min(end, len(lines) - 1)


# The rule names may be followed by the reason: `# doctor: ignore=pip-not-uv: built once`.
_IGNORE = re.compile(r"^doctor:\s*ignore=([\w-]+(?:\s*,\s*[\w-]+)*)")


def _ignored_rules(comment: str) -> set[str]:
    match = _IGNORE.match(comment.strip())
    return {rule.strip() for rule in match[1].split(",")} if match else set()


def parse_dockerfile(text: str) -> Dockerfile:
    """Raises DoctorExtraMissing without dockerfile-parse (an optional extra)."""
    try:
        from dockerfile_parse import DockerfileParser
    except ImportError:
        raise DoctorExtraMissing from None
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    lines = text.splitlines(keepends=True)
    stages: list[dict] = []
    global_args: set[str] = set()
    stage_env: dict[str, frozenset[str]] = {}  # stage name -> ENV names it leaves behind
    skip_until = -1
    ignored: set[str] = set()
    for item, context in zip(parser.structure, parser.context_structure, strict=True):
        keyword = item["instruction"].upper()
        if item["startline"] <= skip_until:
            continue
        if keyword == "COMMENT":
            ignored.update(_ignored_rules(item["value"]))
            continue
        for_this, ignored = frozenset(ignored), set()
        flags, body = _split_flags(item["value"])
        end = _heredoc_end(lines, item["endline"], item["value"])
        if end > item["endline"]:
            skip_until = end
            body += "\n" + "".join(lines[item["endline"] + 1 : end])
        if keyword == "FROM":
            words = body.split()
            base = words[0] if words else ""
            name = words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else None
            inherited = stage_env.get(base.lower(), frozenset())
            stages.append(
                {
                    "base": base,
                    "name": name,
                    "line": item["startline"] + 1,
                    "env": inherited,
                    "ignored": for_this,
                }
            )
            stages[-1]["instructions"] = []
            continue
        if not stages:
            if keyword == "ARG":
                global_args.update(context.line_args)
            continue
        stage = stages[-1]
        envs = stage["env"] | set(context.envs)
        stage["instructions"].append(
            Instruction(
                keyword,
                flags,
                body,
                item["startline"] + 1,
                end + 1,
                frozenset(context.args),
                envs,
                for_this,
            )
        )
        if stage["name"]:
            stage_env[stage["name"]] = stage["env"] | set(context.envs)
    resolved = _resolved_bases(parser, len(stages))
    return Dockerfile(
        stages=tuple(
            Stage(
                index=i,
                base=resolved[i] or s["base"],
                name=s["name"],
                line=s["line"],
                instructions=tuple(s["instructions"]),
                ignored=s["ignored"],
            )
            for i, s in enumerate(stages)
        ),
        global_args=frozenset(global_args),
    )


def _resolved_bases(parser: DockerfileParser, count: int) -> list[str | None]:
    """The FROM images with the global ARGs' defaults filled in, as dockerfile-parse does."""
    try:
        images = list(parser.parent_images)
    except Exception:  # a FROM it cannot make sense of: keep the text as written
        return [None] * count
    return images + [None] * (count - len(images)) if len(images) <= count else [None] * count


# Package managers whose install steps are worth a look, and the words that start one.
_SUBCOMMANDS = {
    "pip": {"install"},
    "poetry": {"install"},
    "pdm": {"install", "sync"},
    "pipenv": {"install", "sync"},
}


@dataclass(frozen=True)
class InstallCommand:
    """One package-manager call inside a RUN: `pip install ...`, `uv sync`, ..."""

    tool: str  # pip, uv, poetry, pdm or pipenv
    executable: str  # as written: pip, /opt/venv/bin/pip, python3 -m pip, uv, ...
    words: tuple[str, ...]  # the arguments after the subcommand
    subcommand: str = "install"  # as written: install, sync, pip install, pip sync

    @property
    def lock_file(self) -> str | None:
        """The lock file this command installs from, when it installs from one: such an
        install fetches what the lock names and no index variable or option changes that
        (uv sync, pylock.toml, poetry install; pdm and pipenv locks name their files by hash,
        but may name URLs too)."""
        pylock = [
            value
            for value in self.option_values("-r", "--requirement")
            if re.fullmatch(r"pylock(\.[^/]+)?\.toml", value.rsplit("/", 1)[-1])
        ]
        if self.tool == "uv" and self.subcommand == "pip sync":
            pylock += [p for p in self.packages if p.rsplit("/", 1)[-1].startswith("pylock.")]
        if pylock:
            return pylock[0]
        if self.tool == "uv" and self.subcommand == "sync":
            return "uv.lock"
        if self.tool == "poetry":
            return "poetry.lock"
        if self.tool == "pdm":
            return "pdm.lock"
        if self.tool == "pipenv" and (
            self.subcommand == "sync" or {"--deploy", "--ignore-pipfile"} & set(self.words)
        ):
            return "Pipfile.lock"
        return None

    @property
    def packages(self) -> tuple[str, ...]:
        """Positional arguments: requirement names, `.`, paths (option values skipped)."""
        found, skip = [], False
        for word in self.words:
            if skip:
                skip = False
            elif word.startswith("-"):
                skip = "=" not in word and word in _OPTIONS_WITH_VALUE
            else:
                found.append(word)
        return tuple(found)

    def option_values(self, *names: str) -> list[str]:
        values = []
        for i, word in enumerate(self.words):
            for name in names:
                if word == name and i + 1 < len(self.words):
                    values.append(self.words[i + 1])
                elif word.startswith(name + "=") and name.startswith("--"):
                    values.append(word.split("=", 1)[1])
        return values


_OPTIONS_WITH_VALUE = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
    "--default-index", "--index", "-f", "--find-links", "--target", "-t", "--prefix", "--root",
    "--python", "-p", "--trusted-host", "--progress-bar", "--root-user-action", "--cache-dir",
    "--group", "--extra", "--only-group", "--with", "--without", "--only", "--pypi-mirror",
}  # fmt: skip


def _segments(body: str) -> list[list[str]]:
    """The simple commands of a shell script: split at && || ; | and newlines."""
    found = []
    for line in body.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = ""
        current: list[str] = []
        try:
            for token in lexer:
                if token.startswith("#"):  # a shell comment runs to the end of the line
                    break
                if token and set(token) <= set(";&|"):
                    found.append(current)
                    current = []
                else:
                    current.append(token)
        except ValueError:  # an unbalanced quote: read the rest word by word
            current += line.split()
        found.append(current)
    return [words for words in found if words]


def install_commands(instruction: Instruction) -> list[InstallCommand]:
    if instruction.keyword != "RUN":
        return []
    body = " ".join(instruction.words()) if instruction.body.startswith("[") else instruction.body
    found = []
    for words in _segments(body):
        for i, word in enumerate(words):
            command = _install_at(words, i, word.rsplit("/", 1)[-1])
            if command is not None:
                found.append(command)
                break
    return found


def _install_at(words: list[str], i: int, name: str) -> InstallCommand | None:
    def after(n: int) -> tuple[str, ...]:
        return tuple(words[i + n :])

    nxt = words[i + 1 : i + 4]
    if re.fullmatch(r"pip[\d.]*", name) and nxt[:1] == ["install"]:
        return InstallCommand("pip", words[i], after(2))
    if re.fullmatch(r"python[\d.]*", name) and nxt[:3] == ["-m", "pip", "install"]:
        return InstallCommand("pip", " ".join(words[i : i + 3]), after(4))
    if name == "uv" and nxt[:2] in (["pip", "install"], ["pip", "sync"]):
        return InstallCommand("uv", words[i], after(3), " ".join(nxt[:2]))
    if name == "uv" and nxt[:1] == ["sync"]:
        return InstallCommand("uv", words[i], after(2), "sync")
    if name in _SUBCOMMANDS and name != "pip" and nxt[:1] and nxt[0] in _SUBCOMMANDS[name]:
        return InstallCommand(name, words[i], after(2), nxt[0])
    return None
