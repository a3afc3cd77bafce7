"""The transparent face against the index face (issue 30), in one run. By hand:

    .venv/bin/python benchmarks/transparent.py [--runs 9] [--clients 8] [--json PATH]

The upstream is the workload's pinned set (../shared/workloads/, pinned and downloaded once
as benchmarks/suite.py does, in --workdir) served as a static PEP 503 index with PEP 658
metadata over HTTPS on 127.0.0.2 (a trustme certificate; clients skip a proxy for localhost,
not for 127.0.0.2), by a small aiohttp file server in its own process. The same set is locked
twice by `uv lock` for this Python on Linux x86_64:

  transparent  the lock made directly against that upstream (it names the upstream's URLs),
               installed with the lines of `cacheproxy env --transparent` (HTTPS_PROXY and
               the CA bundle): the proxy's transparent face answers the CONNECTs;
  index        the same project locked against the proxy's index URL (the lock names the
               proxy), installed without any proxy variable: the index face.

Both install the same files (checked: the two locks name the same files and hashes).

warm   one `cacheproxy serve` whose cache already holds the set; --runs rounds of `uv sync
       --frozen` through each face, interleaved (the order alternates per round), each into
       a fresh venv with uv's cache empty. Medians, the ratio transparent/index (target
       <= 1.05) and the median of the per-round ratios.
cold   a fresh proxy with an empty cache; --clients `uv sync --frozen` at once through the
       transparent face (target: the proxy's peak RSS, VmHWM, <= 110 MiB), then the same
       through the index face for comparison: RSS, wall time, the upstream's bytes over the
       set's size.

Every proxy listens on one port (--port, default a free one), so the index face's lock,
which names the proxy, holds for all of them.

Prints a table; writes JSON to --json (default: WORKDIR/transparent.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.request import Request, urlopen

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.suite import (  # noqa: E402
    TARGET_ROOT,
    RelayProcess,
    client_env,
    log,
    pin,
    static_index,
    uv_bin,
    versions,
    wheel_dir,
)
from benchmarks.suite import Proxy as SuiteProxy  # noqa: E402
from cacheproxy.config import default_upstream  # noqa: E402

HOST = "127.0.0.2"
TARGETS = {"warm transparent/index": 1.05, "cold RSS MiB": 110.0}


# -- the upstream: a static index over HTTPS, in its own process ------------------------------


def serve_static(root: Path, host: str, chain: Path) -> None:
    """The static index under root at https://HOST:<free port>/simple/ (pages are each
    project's index.html; files with Range support), until killed; /_stats and /_reset count
    what it sent. Prints its URL first."""
    from aiohttp import web

    stats = {"requests": 0, "file_requests": 0, "file_bytes": 0, "body_bytes": 0}
    top = root.resolve()

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/simple/"):
            size = int(response.headers.get("Content-Length", 0) or 0)
            stats["requests"] += 1
            stats["body_bytes"] += size
            if not request.path.endswith("/"):
                stats["file_requests"] += 1
                stats["file_bytes"] += size

    async def simple(request: web.Request) -> web.StreamResponse:
        path = (top / request.path.lstrip("/")).resolve()
        if not path.is_relative_to(top):
            raise web.HTTPNotFound()
        if path.is_dir():
            if not request.path.endswith("/"):
                raise web.HTTPMovedPermanently(request.path + "/")
            path = path / "index.html"
        if not path.is_file():
            raise web.HTTPNotFound()
        response = web.FileResponse(path)
        if path.name == "index.html":
            response.content_type = "text/html"
        return response

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def reset(request: web.Request) -> web.Response:
        stats.update(dict.fromkeys(stats, 0))
        return web.json_response(stats)

    async def main() -> None:
        app = web.Application()
        app.on_response_prepare.append(on_prepare)
        app.router.add_get("/_stats", get_stats)
        app.router.add_post("/_reset", reset)
        app.router.add_get("/simple/{path:.*}", simple)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(chain)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        print(f"static: https://{host}:{port}/simple/", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class StaticUpstream:
    """serve_static as a process, and its counters."""

    def __init__(self, root: Path, tls: Path) -> None:
        import trustme

        tls.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        self.ca_file = tls / "upstream-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        chain = tls / "upstream-chain.pem"
        ca.issue_cert(HOST).private_key_and_cert_chain_pem.write_to_path(str(chain))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-static", str(root), "--chain", str(chain)],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("static: "):
            self.proc.kill()
            raise SystemExit(f"the static upstream did not start: {line!r}")
        self.url = line.split()[1]
        self.base = self.url.removesuffix("/simple/")
        self.context = ssl.create_default_context(cafile=str(self.ca_file))

    def stats(self) -> dict[str, int]:
        with urlopen(self.base + "/_stats", context=self.context) as resp:
            return json.load(resp)

    def reset(self) -> None:
        urlopen(Request(self.base + "/_reset", method="POST"), context=self.context).close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the project and its two locks ------------------------------------------------------------


def uv_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """uv isolated from this machine's settings, reading the project's own [tool.uv] (so no
    UV_NO_CONFIG: user and system uv.toml are under a private XDG directory instead)."""
    env = client_env()
    env.pop("UV_NO_CONFIG", None)
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                 "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy", "NO_PROXY", "no_proxy", "VIRTUAL_ENV"):  # fmt: skip
        env.pop(name, None)
    env.update(
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CONFIG_DIRS=str(home / "config-system"),
        UV_PYTHON_DOWNLOADS="never",
    )
    env.update(extra or {})
    return env


def write_project(project: Path, pinned: Path, index_url: str) -> None:
    """A project (no package of its own) that depends on exactly the pinned set, resolved for
    this interpreter's Python on Linux x86_64 only: the set was pinned (and its wheels chosen)
    for that, and the static index holds nothing else."""
    requirements = [
        line.strip() for line in pinned.read_text().splitlines() if line.strip()[:1].isalnum()
    ]
    major, minor, micro = sys.version_info[:3]
    python = f">={major}.{minor}.{micro},<{major}.{minor + 1}"
    project.mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "bench-app"\nversion = "0.1.0"\n'
        f'requires-python = "{python}"\n'
        "dependencies = [\n" + "".join(f'  "{r}",\n' for r in requirements) + "]\n\n"
        "[tool.uv]\nenvironments = [\"sys_platform == 'linux' and platform_machine == 'x86_64'\"]\n"
        f'\n[[tool.uv.index]]\nname = "bench"\nurl = "{index_url}"\ndefault = true\n'
    )


def lock(project: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [uv_bin(), "lock", "--python", sys.executable, "--project", str(project)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"uv lock failed in {project}:\n{result.stderr[-3000:]}")


def locked_files(project: Path) -> set[tuple[str, str]]:
    """(file name, hash) of every file the lock names."""
    text = (project / "uv.lock").read_text()
    found = re.findall(r'url = "([^"]+)", hash = "([^"]+)"', text)
    return {(url.rsplit("/", 1)[1], digest) for url, digest in found}


# -- installs -----------------------------------------------------------------------------------


async def sync(project: Path, env: dict[str, str], where: Path) -> float:
    """`uv sync --frozen` of the project into a new venv in `where`, uv's cache empty there:
    seconds."""
    run_env = dict(
        env, UV_CACHE_DIR=str(where / "uv-cache"), UV_PROJECT_ENVIRONMENT=str(where / "venv")
    )
    args = [uv_bin(), "sync", "--frozen", "--no-install-project", "--python", sys.executable,
            "--project", str(project)]  # fmt: skip
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *args, env=run_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"uv sync --frozen failed in {project}:\n{stderr.decode()[-3000:]}")
    if "Installed" not in stderr.decode():
        raise SystemExit(f"uv sync installed nothing in {project}:\n{stderr.decode()}")
    return elapsed


def sync_fresh(project: Path, env: dict[str, str]) -> float:
    """sync into a scratch directory (on tmpfs when there is one), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-sync-", dir=TARGET_ROOT) as tmp:
        return asyncio.run(sync(project, env, Path(tmp)))


class Proxy(SuiteProxy):
    """A fresh `cacheproxy serve` in front of the static upstream, trusting its CA, and the
    lines `cacheproxy env --transparent` prints for it."""

    def __init__(self, cache: Path, upstream: StaticUpstream, port: int) -> None:
        """port: the same for every proxy of a run, so the index face's lock stays valid."""
        super().__init__(
            cache, upstream.url, "--port", str(port), env={"SSL_CERT_FILE": str(upstream.ca_file)}
        )
        port = self.url.split(":")[2].split("/")[0]
        settings = dict(
            client_env(),
            CACHEPROXY_CACHE_DIR=str(cache),
            CACHEPROXY_UPSTREAM=upstream.url,
            CACHEPROXY_PORT=port,
        )
        printed = subprocess.run(
            [sys.executable, "-m", "cacheproxy", "env", "--transparent", "--format", "json"],
            env=settings, capture_output=True, text=True,
        )  # fmt: skip
        if printed.returncode != 0:
            self.stop()
            raise SystemExit(f"cacheproxy env --transparent failed:\n{printed.stderr}")
        self.transparent_env: dict[str, str] = json.loads(printed.stdout)["env"]


# -- scenarios ----------------------------------------------------------------------------------


def scenario_warm(args, upstream, projects, homes) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        proxy = Proxy(Path(cache), upstream, args.port)
        try:
            envs = faces_env(proxy, homes)
            log("warm: filling the cache (one untimed install through each face)")
            sync_fresh(projects["transparent"], envs["transparent"])
            sync_fresh(projects["index"], envs["index"])
            upstream.reset()
            runs: list[dict[str, float]] = []
            for number in range(args.runs):
                order = ["transparent", "index"] if number % 2 == 0 else ["index", "transparent"]
                run: dict[str, float] = {}
                for face in order:
                    cpu = proxy.cpu_seconds()
                    run[face] = sync_fresh(projects[face], envs[face])
                    run[f"{face} proxy CPU s"] = proxy.cpu_seconds() - cpu
                runs.append(run)
                log(f"  round {number + 1}/{args.runs}: " + ", ".join(
                    f"{face} {run[face]:.2f}s (proxy CPU {run[f'{face} proxy CPU s']:.2f}s)"
                    for face in ("transparent", "index")))  # fmt: skip
            stats = upstream.stats()
            rss = proxy.peak_rss_mib()
            outcomes = proxy.outcomes()
        finally:
            proxy.stop()
    medians = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
    return {
        "runs": args.runs,
        "transparent s": medians["transparent"],
        "index s": medians["index"],
        "transparent proxy CPU s": medians["transparent proxy CPU s"],
        "index proxy CPU s": medians["index proxy CPU s"],
        "transparent/index": round(medians["transparent"] / medians["index"], 3),
        "transparent/index paired": round(
            statistics.median(r["transparent"] / r["index"] for r in runs), 3
        ),
        "upstream file bytes during the timed runs": stats["file_bytes"],
        "proxy RSS MiB": rss,
        "proxy outcomes": outcomes,
        "raw": runs,
    }


def scenario_cold(args, face: str, upstream, projects, homes, set_bytes: int) -> dict:
    """args.clients installs at once through `face` against a fresh proxy's empty cache."""
    os.sync()  # earlier runs' writes out of the way (no cache dropping: the machine is shared)
    with contextlib.ExitStack() as stack:
        cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cache-")))
        # The clients' venvs: on disk, not in memory beside the proxy being measured; removed
        # after the measurement (a removal would hold up the event loop timing the others).
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cold-")))
        proxy = Proxy(cache, upstream, args.port)
        try:
            env = faces_env(proxy, homes)[face]
            upstream.reset()
            log(f"cold: {args.clients} clients at once through the {face} face, empty cache")

            async def together() -> tuple[float, list[float]]:
                started = time.perf_counter()
                wheres = [Path(tempfile.mkdtemp(dir=scratch)) for _ in range(args.clients)]
                each = await asyncio.gather(*(sync(projects[face], env, w) for w in wheres))
                return time.perf_counter() - started, list(each)

            wall, each = asyncio.run(together())
            rss = proxy.peak_rss_mib()
            stats = upstream.stats()
            outcomes = proxy.outcomes()
        finally:
            proxy.stop()
    return {
        "clients": args.clients,
        "RSS MiB": rss,
        "wall s": round(wall, 2),
        "slowest client s": round(max(each), 2),
        "upstream file bytes": stats["file_bytes"],
        "upstream requests": stats["requests"],
        "upstream bytes / set": round(stats["file_bytes"] / set_bytes, 3),
        "proxy outcomes": outcomes,
    }


def lock_through_the_index_face(args, upstream, project: Path, home: Path) -> None:
    """The project locked against the index URL of a proxy on args.port (a throwaway one: the
    lock names only its address, which every proxy of the run has)."""
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        proxy = Proxy(Path(cache), upstream, args.port)
        try:
            write_project(project, args.pinned, proxy.url)
            lock(project, uv_env(home))
        finally:
            proxy.stop()


def faces_env(proxy: Proxy, homes: dict[str, Path]) -> dict[str, dict[str, str]]:
    return {
        "transparent": uv_env(homes["transparent"], proxy.transparent_env),
        "index": uv_env(homes["index"]),
    }


# -- the run --------------------------------------------------------------------------------------


def prepare(args) -> tuple[Path, Path]:
    """The pinned set and its static index (made through the suite's relay the first time)."""
    pinned = args.workdir / f"{args.workload}.pinned.txt"
    wheels = args.workdir / f"{args.workload}.wheels"
    if not pinned.exists() or not (wheels / ".complete").exists():
        relay = RelayProcess(default_upstream(), 0, 10_000, args.workdir / "relay-store")
        try:
            pinned = pin(args.workload, relay, args.workdir, repin=False)
            wheels = wheel_dir(pinned, relay, args.workdir)
        finally:
            relay.stop()
    return pinned, static_index(wheels)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running(upstream: StaticUpstream) -> Iterator[StaticUpstream]:
    try:
        yield upstream
    finally:
        upstream.stop()


def print_table(results: dict) -> None:
    ok = lambda passed: "met" if passed else "NOT met"  # noqa: E731
    size = results["set_bytes"] / 2**20
    print(
        f"\ntransparent face vs index face, uv sync --frozen: {results['workload']} "
        f"({results['files']} files, {size:.0f} MiB), load {results['meta']['load'][0]:.1f}"
    )
    rows = [("", "transparent", "index", "")]
    warm = results.get("warm")
    if warm:
        ratio = warm["transparent/index"]
        rows += [
            ("warm, median s", f"{warm['transparent s']:.2f}", f"{warm['index s']:.2f}",
             f"{warm['runs']} rounds, interleaved"),
            ("warm, proxy CPU s", f"{warm['transparent proxy CPU s']:.2f}",
             f"{warm['index proxy CPU s']:.2f}", "median"),
            ("warm transparent/index", f"{ratio:.3f}", "",
             f"paired {warm['transparent/index paired']:.3f}; target <= 1.05: "
             f"{ok(ratio <= 1.05)}"),
        ]  # fmt: skip
    cold, cold_index = results.get("cold transparent"), results.get("cold index")
    if cold and cold_index:
        rss = cold["RSS MiB"]
        rows += [
            (f"cold, {cold['clients']} clients: peak RSS MiB", f"{rss:.1f}",
             f"{cold_index['RSS MiB']:.1f}", f"transparent target <= 110: {ok(rss <= 110)}"),
            ("cold: wall s", f"{cold['wall s']:.2f}", f"{cold_index['wall s']:.2f}", ""),
            ("cold: upstream bytes / set", f"{cold['upstream bytes / set']:.3f}",
             f"{cold_index['upstream bytes / set']:.3f}", ""),
        ]  # fmt: skip
    for name, transparent, index, note in rows:
        print(f"  {name:<32} {transparent:>12} {index:>10}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cacheproxy-bench"))
    parser.add_argument("--workload", default="django-app")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--scenarios", default="warm,cold", help="warm, cold or both")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--port", type=int, default=0, help="every proxy's (default: a free one)")
    parser.add_argument("--serve-static", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--chain", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_static:
        serve_static(args.serve_static, HOST, args.chain)
        return
    started = time.perf_counter()
    args.port = args.port or free_port()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.pinned, static = prepare(args)
    wheels = [p for p in static.joinpath("simple").glob("*/*") if p.suffix in (".whl", ".gz")]
    set_bytes = sum(p.stat().st_size for p in wheels)
    results: dict = {
        "meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "load": os.getloadavg(), **versions()},
        "workload": args.workload,
        "files": len(wheels),
        "set_bytes": set_bytes,
    }
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tp-")))
        upstream = stack.enter_context(running(StaticUpstream(static, scratch / "tls")))
        homes = {face: scratch / f"home-{face}" for face in ("transparent", "index")}
        projects = {face: scratch / f"project-{face}" for face in ("transparent", "index")}
        log(f"locking {args.workload} directly against {upstream.url}")
        write_project(projects["transparent"], args.pinned, upstream.url)
        lock(
            projects["transparent"],
            uv_env(homes["transparent"], {"SSL_CERT_FILE": str(upstream.ca_file)}),
        )
        log("locking the same set against the index face (a proxy on --port)")
        lock_through_the_index_face(args, upstream, projects["index"], homes["index"])
        if locked_files(projects["index"]) != locked_files(projects["transparent"]):
            raise SystemExit("the two locks name different files: not a fair comparison")
        if "warm" in args.scenarios:
            results["warm"] = scenario_warm(args, upstream, projects, homes)
        if "cold" in args.scenarios:
            for face in ("transparent", "index"):
                results[f"cold {face}"] = scenario_cold(
                    args, face, upstream, projects, homes, set_bytes
                )
    results["meta"]["seconds"] = round(time.perf_counter() - started)
    print_table(results)
    path = args.json or args.workdir / "transparent.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {path} ({results['meta']['seconds']} s)")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
