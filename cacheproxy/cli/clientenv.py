"""What each Python packaging tool needs to be told to install through the proxy.

`cacheproxy env` prints this as shell lines, a dotenv file or JSON. The URLs are built here,
from the proxy's address, for this host and for `docker build`.

Two faces, two sets of lines. The index face (`cacheproxy env`): each tool's index URL
variable, for installs that resolve against an index. The transparent face (`cacheproxy env
--transparent`): `HTTPS_PROXY` and a CA bundle, for installs from a lockfile, which fetch the
URLs the lock names and read no index variable (uv sync, pylock.toml, poetry install, pdm with
static URLs); docs/lockfiles.md.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from cacheproxy.cli.doctor.fixes import DOCKER_CA_SECRET, DOCKER_CA_TARGET
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
        ToolSettings("pip", pip, note="pip install -r pylock.toml ignores it: use --transparent"),
        ToolSettings(
            "uv",
            uv,
            note="UV_INDEX_URL is the older name, for uv before 0.4.23; uv sync and uv pip "
            "install -r pylock.toml fetch the lock's URLs and ignore both: use --transparent",
        ),
        ToolSettings(
            "poetry",
            {},
            commands=(
                'eval "$(cacheproxy env --transparent)" && poetry install',
                f"{poetry_source}  (and poetry lock: the lock then names the proxy)",
            ),
            note="installs read no index variable (POETRY_REPOSITORIES_*_URL names a repository "
            "to publish to): install poetry.lock through the transparent face, or make the "
            "proxy the primary source",
        ),
        ToolSettings(
            "pdm", {"PDM_PYPI_URL": url}, note="a lock with static URLs ignores it: --transparent"
        ),
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


def _docker_build_lines(builds: Iterable[DockerBuild]) -> list[str]:
    """Each way to build, as shell comments: what it is, then the command."""
    lines = []
    for build in builds:
        lines.append(f"# {build.how}" + (f": {build.note}" if build.note else ""))
        lines.append("#   docker build " + " ".join(shlex.quote(f) for f in build.flags) + " .")
    return lines


def _docker_build_json(builds: Iterable[DockerBuild]) -> dict[str, dict]:
    return {build.how: {"flags": list(build.flags), "note": build.note} for build in builds}


def render_shell(env: ClientEnv) -> str:
    lines = [f"# cacheproxy: {env.index_url}"]
    for tool in env.tools:
        lines.append(f"# {tool.tool}" + (f": {tool.note}" if tool.note else ""))
        lines += [f"export {name}={shlex.quote(value)}" for name, value in tool.env.items()]
        lines += [f"#   {command}" for command in tool.commands]
    lines.append("# docker build (declare ARG PIP_INDEX_URL / ARG UV_DEFAULT_INDEX in the stage)")
    lines += _docker_build_lines(env.docker)
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
        "docker_build": _docker_build_json(env.docker),
    }
    return json.dumps(document, indent=2) + "\n"


RENDERERS = {"shell": render_shell, "dotenv": render_dotenv, "json": render_json}


# The transparent face. Every client sends its package traffic through HTTPS_PROXY (uv and
# pdm read the upper-case name, pip, poetry and pipenv through requests/urllib either; both
# are set since some tools read only one). Trust: uv reads SSL_CERT_FILE; poetry, pdm and
# pipenv REQUESTS_CA_BUNDLE; pip PIP_CERT (and before 24, REQUESTS_CA_BUNDLE wins over it):
# all three name the same bundle, the system's CAs plus the proxy's.
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")
TRUST_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT")
# Always reached directly: the proxy refuses CONNECTs to hosts that are not package hosts, and
# a client talking HTTPS to a service on this machine (the proxy itself with --tls-cert, a
# local index) must not be sent to it.
_DIRECT = ("localhost", "127.0.0.1", "::1")
TOKEN_USER = "cacheproxy"


def with_token(url: str, token: str | None) -> str:
    """The URL with the client token as its password (Basic auth: the proxy takes it from
    Authorization or Proxy-Authorization); unchanged without a token or when it has one."""
    parsed = URL(url)
    if token is None or parsed.user is not None:
        return url
    return str(parsed.with_user(TOKEN_USER).with_password(token))


def proxy_url(host: str, port: int, url: str | None = None, scheme: str = "http") -> str:
    """The proxy's address as HTTPS_PROXY names it, http://[USER:TOKEN@]HOST:PORT: from `url`
    (any URL of the proxy: its path is dropped) or the address it listens on."""
    root = URL(index_url(host, port, url=url, scheme=scheme))
    return str(root.with_path("")).rstrip("/")


def no_proxy(proxy: str, package_hosts: Iterable[str]) -> str:
    """The hosts clients reach directly: this machine's names and the proxy's own host, never a
    package host (those the proxy answers for)."""
    hosts = dict.fromkeys((*_DIRECT, URL(proxy).host or ""))
    for host in package_hosts:
        hosts.pop(host, None)
    return ",".join(host for host in hosts if host)


@dataclass(frozen=True)
class TransparentEnv:
    proxy_url: str
    bundle: Path
    fingerprint: str
    package_hosts: tuple[str, ...]
    env: dict[str, str]
    docker: tuple[DockerBuild, ...] = field(default=())


def transparent_env(
    proxy: str, bundle: Path, fingerprint: str, package_hosts: Iterable[str]
) -> TransparentEnv:
    hosts = tuple(package_hosts)
    env = dict.fromkeys(PROXY_VARIABLES, proxy)
    env.update(dict.fromkeys(NO_PROXY_VARIABLES, no_proxy(proxy, hosts)))
    env.update(dict.fromkeys(TRUST_VARIABLES, str(bundle)))
    return TransparentEnv(proxy, bundle, fingerprint, hosts, env, transparent_builds(proxy, bundle))


def transparent_builds(proxy: str, bundle: Path) -> tuple[DockerBuild, ...]:
    """`docker build` flags for a Dockerfile whose lock install mounts the CA secret:
    HTTPS_PROXY is one of Docker's predefined build arguments (no ARG, not kept in the
    image's history) and a secret leaves nothing in the image."""
    secret = ("--secret", f"id={DOCKER_CA_SECRET},src={bundle}")
    parsed = URL(proxy)
    if parsed.host not in _LOOPBACK:
        return (DockerBuild("direct", ("--build-arg", f"HTTPS_PROXY={proxy}", *secret)),)
    via_gateway = str(parsed.with_host(DOCKER_HOST_NAME)).rstrip("/")
    return (
        DockerBuild("network-host", ("--network=host", "--build-arg", f"HTTPS_PROXY={proxy}",
                                     *secret)),
        DockerBuild(
            "host-gateway",
            (f"--add-host={DOCKER_HOST_NAME}:host-gateway", "--build-arg",
             f"HTTPS_PROXY={via_gateway}", *secret),
            note="the proxy must listen where containers reach it: serve --host 0.0.0.0",
        ),
    )  # fmt: skip


def dockerfile_run(command: str, variable: str = "SSL_CERT_FILE") -> str:
    """The one Dockerfile line a lock install needs: the CA mounted for this RUN only."""
    return (
        f"RUN --mount=type=secret,id={DOCKER_CA_SECRET},target={DOCKER_CA_TARGET} \\\n"
        f"    {variable}={DOCKER_CA_TARGET} {command}"
    )


def render_transparent_shell(env: TransparentEnv) -> str:
    lines = [
        f"# cacheproxy transparent face: {URL(env.proxy_url).with_password(None)}",
        f"# CA SHA-256 {env.fingerprint}",
        f"# package hosts answered from the cache: {', '.join(env.package_hosts)}",
        "# uv, pip, poetry, pdm and pipenv: lockfile installs (uv sync --locked, pip install -r",
        "# pylock.toml, poetry install, pdm install, pipenv sync) go through the proxy unchanged",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.env.items()]
    lines.append("# docker build (in the Dockerfile, only the lock install's RUN changes):")
    lines += [f"#   {line}" for line in dockerfile_run("uv sync --locked").splitlines()]
    lines += _docker_build_lines(env.docker)
    return "\n".join(lines) + "\n"


def render_transparent_dotenv(env: TransparentEnv) -> str:
    """KEY=VALUE lines; the bundle path is a file name of this cache's, without spaces."""
    lines = [f"# cacheproxy transparent face, CA SHA-256 {env.fingerprint}"]
    lines += [f"{name}={value}" for name, value in env.env.items()]
    return "\n".join(lines) + "\n"


def render_transparent_json(env: TransparentEnv) -> str:
    document = {
        "proxy_url": env.proxy_url,
        "ca_bundle": str(env.bundle),
        "ca_fingerprint": env.fingerprint,
        "package_hosts": list(env.package_hosts),
        "env": env.env,
        "docker_build": _docker_build_json(env.docker),
    }
    return json.dumps(document, indent=2) + "\n"


TRANSPARENT_RENDERERS = {
    "shell": render_transparent_shell,
    "dotenv": render_transparent_dotenv,
    "json": render_transparent_json,
}
