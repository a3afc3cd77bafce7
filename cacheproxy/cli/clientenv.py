"""What each Python packaging tool needs to be told to install through the proxy.

`cacheproxy env` prints this as shell lines, a dotenv file or JSON. The URLs are built here,
from the proxy's address, for this host and for `docker build`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from yarl import URL

from cacheproxy.errors import ClientEnvError
from cacheproxy.http.server import root_url

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The name a container reaches its host by, once `--add-host=...:host-gateway` maps it.
DOCKER_HOST_NAME = "host.docker.internal"
_POETRY_SOURCE = "cacheproxy"


@dataclass(frozen=True)
class ToolSettings:
    tool: str
    env: dict[str, str]
    commands: tuple[str, ...] = ()  # to run once, where a variable is not enough
    note: str = ""


@dataclass(frozen=True)
class DockerBuild:
    how: str  # network-host or host-gateway
    flags: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class ClientEnv:
    index_url: str
    tools: tuple[ToolSettings, ...]
    docker: tuple[DockerBuild, ...] = field(default=())


def index_url(
    host: str, port: int, url: str | None = None, index: str | None = None, scheme: str = "http"
) -> str:
    """The proxy's simple index (or named index) URL: `url` if given (its root, or ending in
    /simple/), else from the address it listens on, with 0.0.0.0 shown as 127.0.0.1."""
    if url is None:
        root = root_url(host, port, scheme)
    else:
        root = URL(url)
        if root.scheme not in ("http", "https") or not root.host:
            raise ClientEnvError(f"{url!r} is not an http:// or https:// URL")
        path = root.path.rstrip("/")
        path = path[: -len("/simple")] if path.endswith("/simple") else path
        root = root.with_path(path + "/").with_query(None).with_fragment(None)
    suffix = f"index/{index}/simple/" if index else "simple/"
    return str(root.with_path(root.path + suffix))


def _trusted_host(url: str) -> str | None:
    """The host pip and uv must be told to trust: plain HTTP to anything but loopback."""
    parsed = URL(url)
    return parsed.host if parsed.scheme == "http" and parsed.host not in _LOOPBACK else None


def tool_settings(url: str) -> tuple[ToolSettings, ...]:
    trusted = _trusted_host(url)
    pip = {"PIP_INDEX_URL": url}
    uv = {"UV_DEFAULT_INDEX": url, "UV_INDEX_URL": url}
    if trusted:
        pip["PIP_TRUSTED_HOST"] = trusted
        uv["UV_INSECURE_HOST"] = trusted
    poetry_source = f"poetry source add --priority=primary {_POETRY_SOURCE} {url}"
    return (
        ToolSettings("pip", pip),
        ToolSettings("uv", uv, note="UV_INDEX_URL is the older name, for uv before 0.4.23"),
        ToolSettings(
            "poetry",
            {f"POETRY_REPOSITORIES_{_POETRY_SOURCE.upper()}_URL": url},
            commands=(poetry_source,),
            note="it installs from the sources in pyproject.toml: add the proxy as primary once",
        ),
        ToolSettings("pdm", {"PDM_PYPI_URL": url}),
        ToolSettings("pipenv", {"PIPENV_PYPI_MIRROR": url}),
        ToolSettings("hatch", {}, note="it installs with pip or uv: their lines above apply"),
    )


def docker_builds(url: str) -> tuple[DockerBuild, ...]:
    """`docker build` flags that reach this proxy from a build container."""
    parsed = URL(url)
    if parsed.host not in _LOOPBACK:
        return (DockerBuild("direct", _build_args(url)),)
    via_gateway = str(parsed.with_host(DOCKER_HOST_NAME))
    return (
        DockerBuild("network-host", ("--network=host", *_build_args(url))),
        DockerBuild(
            "host-gateway",
            (f"--add-host={DOCKER_HOST_NAME}:host-gateway", *_build_args(via_gateway)),
            note="the proxy must listen where containers reach it: serve --host 0.0.0.0",
        ),
    )


def _build_args(url: str) -> tuple[str, ...]:
    """Build arguments for a Dockerfile that declares `ARG PIP_INDEX_URL` (and the others)."""
    names = {}
    for tool in tool_settings(url):
        if tool.tool in ("pip", "uv"):
            names.update(tool.env)
    return tuple(word for item in names.items() for word in ("--build-arg", "=".join(item)))


def client_env(url: str) -> ClientEnv:
    return ClientEnv(url, tool_settings(url), docker_builds(url))


def render_shell(env: ClientEnv) -> str:
    lines = [f"# cacheproxy: {env.index_url}"]
    for tool in env.tools:
        lines.append(f"# {tool.tool}" + (f": {tool.note}" if tool.note else ""))
        lines += [f"export {name}={shlex.quote(value)}" for name, value in tool.env.items()]
        lines += [f"#   {command}" for command in tool.commands]
    lines.append("# docker build (declare ARG PIP_INDEX_URL / ARG UV_DEFAULT_INDEX in the stage)")
    for build in env.docker:
        lines.append(f"# {build.how}" + (f": {build.note}" if build.note else ""))
        lines.append("#   docker build " + " ".join(shlex.quote(f) for f in build.flags) + " .")
    return "\n".join(lines) + "\n"


def render_dotenv(env: ClientEnv) -> str:
    """KEY=VALUE lines, no quoting: index URLs hold no spaces, quotes or `#`."""
    lines = [f"# cacheproxy: {env.index_url}"]
    for tool in env.tools:
        lines += [f"{name}={value}" for name, value in tool.env.items()]
    return "\n".join(lines) + "\n"


def render_json(env: ClientEnv) -> str:
    document = {
        "index_url": env.index_url,
        "tools": {
            tool.tool: {"env": tool.env, "commands": list(tool.commands), "note": tool.note}
            for tool in env.tools
        },
        "docker_build": {
            build.how: {"flags": list(build.flags), "note": build.note} for build in env.docker
        },
    }
    return json.dumps(document, indent=2) + "\n"


RENDERERS = {"shell": render_shell, "dotenv": render_dotenv, "json": render_json}
