"""The benchmark suite (issue 7): installs, concurrent cold clients, raw file serving and page
latency, with the proxy's peak RSS in each. Run by hand, never as a timed test:

    .venv/bin/python benchmarks/suite.py installs    [--workloads django-app,data-science]
    .venv/bin/python benchmarks/suite.py concurrency [--clients 1,8,32]
    .venv/bin/python benchmarks/suite.py serving     [--parallel 16,200]
    .venv/bin/python benchmarks/suite.py pages       [--connections 200]
    .venv/bin/python benchmarks/suite.py all
    .venv/bin/python benchmarks/suite.py report --json PATH   (the tables of earlier runs)

Installs and concurrency go through benchmarks/relay.py (a throttled link: --latency-ms per
request, one shared --mbps line) in front of --upstream, the default upstream unless given.
The relay keeps what it fetched in WORKDIR/relay-store, so repeated runs cost only the simulated
link. Each workload (../shared/workloads/) is pinned once through the relay with
`uv pip compile` (WORKDIR/<name>.pinned.txt, reused until --repin), so every variant installs
the same files; the floor's wheel directory is that pinned set, downloaded once.

installs     for pip and uv, in one process, median of --runs (variants interleaved per run):
             floor (offline, from a local wheel directory), direct (from the relay), cold
             (a fresh proxy, empty cache), warm (a fresh proxy process on that cache); each into
             a fresh --target with the client's cache empty. Ratios warm/floor, cold/direct.
concurrency  N uv clients at once against a cold proxy: wall time, upstream bytes over the
             set's size, the most times one file crossed the link.
serving      synthetic large wheels from a local upstream, warm in the cache; many parallel
             downloads on loopback (GB/s), by benchmarks/loadgen.py in its own process.
pages        the workload's project pages warm in a fresh proxy; 200 connections asking for
             them with the PEP 691 JSON Accept and gzip: back to back (closed loop) and paced.

Every proxy scenario starts a fresh `cacheproxy serve` process; its peak RSS is VmHWM.
--trees before=PATH,after=PATH compares checkouts in one run: every proxy of `installs` and
`pages` is started once per tree, interleaved (before, after, before, after...), each through
the CLI with PYTHONPATH=PATH (so two package layouts can be compared), each with its own cache;
variants and rows are named "cold[before]", ..., with ratios of each tree to the first.
Without --trees the proxies run whatever `python -m cacheproxy` imports, as before.
--json PATH merges this run's results into that file. --profile DIR records each measured
proxy with py-spy (raw collapsed stacks; slows the proxy, so not for the reported numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import Request, urlopen

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cacheproxy.config import default_upstream  # noqa: E402
from tests.fakes.process import ProxyProcess  # noqa: E402

WORKLOADS = REPO.parent / "shared" / "workloads"
# Install targets and the client's (empty) cache: on tmpfs when there is one, so the disk's
# noise on a shared machine does not swamp the differences between variants.
TARGET_ROOT = "/dev/shm" if os.path.isdir("/dev/shm") else None
JSON_ACCEPT = "Accept: application/vnd.pypi.simple.v1+json"
TARGETS = {
    "warm/floor": 1.05,
    "cold/direct": 1.05,
    "8 clients / 1 client": 1.5,
    "upstream bytes / set size": 1.0,
    "serving GB/s": 1.0,
    "page p99 ms": 20.0,
    "RSS MiB at 200 downloads": 100.0,
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def client_env() -> dict[str, str]:
    """The machine's own PIP_*/UV_* settings (PIP_FIND_LINKS, ...) would change what the
    clients do; measure the plain clients."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1")
    return env


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


# -- the relay -------------------------------------------------------------------------------


class RelayProcess:
    """benchmarks/relay.py as its own process, so its event loop shares nothing with ours."""

    def __init__(
        self, upstream: str, latency_ms: float, mbps: float, store: Path, *extra: str
    ) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable, str(REPO / "benchmarks" / "relay.py"), "--upstream", upstream,
                "--latency-ms", str(latency_ms), "--mbps", str(mbps), "--store", str(store),
                *extra,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline()
        if not line.startswith("relay: "):
            self.proc.kill()
            raise SystemExit(f"relay did not start: {line}")
        self.url = line.split()[1]
        self.base = self.url.removesuffix("/simple/")
        self.primed: set[str] = set()

    def stats(self) -> dict:
        with urlopen(self.base + "/_relay/stats") as resp:
            return json.load(resp)

    def reset(self) -> None:
        urlopen(Request(self.base + "/_relay/reset", method="POST")).close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the proxy -------------------------------------------------------------------------------

# The proxy's command line run under a tree: `-P` keeps the working directory off sys.path, so
# PYTHONPATH decides which `cacheproxy` is imported; the process says which before it serves.
# Equivalent to `python -m cacheproxy serve ...` (the launcher's arguments are that command).
TREE_MAIN = """\
import runpy, sys
import cacheproxy
print("cacheproxy imported from", cacheproxy.__file__, file=sys.stderr, flush=True)
command = sys.argv[1:]
if command[1:3] != ["-m", "cacheproxy"]:
    raise SystemExit(f"not a cacheproxy command line: {command}")
sys.argv[:] = ["cacheproxy", *command[3:]]
runpy.run_module("cacheproxy", run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class Tree:
    """A checkout whose `cacheproxy` a proxy runs: --trees before=/work/base,after=."""

    label: str
    path: Path

    def launcher(self) -> tuple[str, ...]:
        return ("env", f"PYTHONPATH={self.path}", sys.executable, "-P", "-c", TREE_MAIN)


def parse_trees(text: str | None) -> list[Tree] | None:
    if not text:
        return None
    trees = []
    for item in text.split(","):
        label, sep, path = item.partition("=")
        root = Path(path).expanduser().resolve()
        if not sep or not label or not (root / "cacheproxy" / "__init__.py").is_file():
            raise SystemExit(f"--trees: {item!r} is not NAME=PATH of a cacheproxy checkout")
        trees.append(Tree(label, root))
    if len({t.label for t in trees}) != len(trees):
        raise SystemExit(f"--trees: names repeat in {text!r}")
    return trees


def tree_key(name: str, tree: Tree | None) -> str:
    """A variant's name in the results: 'cold', or 'cold[before]' when trees are compared."""
    return name if tree is None else f"{name}[{tree.label}]"


def tree_note(tree: Tree | None) -> str:
    return "" if tree is None else f"-{tree.label}"


def tree_meta(trees: list[Tree]) -> dict:
    """Each tree's path, commit and the `cacheproxy` its proxies imported."""

    def commit(path: Path) -> str:
        result = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return result.stdout.strip() or "?"

    return {
        t.label: {"path": str(t.path), "commit": commit(t.path), "cacheproxy": IMPORTED.get(t)}
        for t in trees
    }


IMPORTED: dict[Tree, str] = {}  # tree -> the cacheproxy/__init__.py its first proxy imported


def check_import(tree: Tree, log_lines: list[str]) -> None:
    """The proxy must have imported that tree's package; said once per tree."""
    found = next(
        (ln.split(" from ", 1)[1].strip() for ln in log_lines if "imported from" in ln), ""
    )
    if not found or not Path(found).resolve().is_relative_to(tree.path):
        raise SystemExit(f"tree {tree.label}: the proxy imported {found or '?'}, not {tree.path}")
    if tree not in IMPORTED:
        IMPORTED[tree] = found
        log(f"tree {tree.label}: cacheproxy imported from {found}")


class Proxy:
    """A fresh `cacheproxy serve`, optionally recorded by py-spy; under a tree's code when given."""

    def __init__(
        self,
        cache_dir: Path,
        upstream: str,
        *args: str,
        profile: Path | None = None,
        tree: Tree | None = None,
        env: dict[str, str] | None = None,
    ):
        launcher = tree.launcher() if tree else ()
        self.process = ProxyProcess(cache_dir, upstream, *args, launcher=launcher, env=env)
        if tree is not None:
            check_import(tree, self.process.log)
        self.url = self.process.url
        self.base = self.url.removesuffix("/simple/")
        self.spy = None
        if profile is not None:
            profile.parent.mkdir(parents=True, exist_ok=True)
            self.spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                    str(self.process.proc.pid), "--rate", "200", "--format", "raw",
                    "--output", str(profile), "--nonblocking", "--threads",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)

    def peak_rss_mib(self) -> float:
        return round(self.process.peak_rss_mib(), 1)

    def cpu_seconds(self) -> float:
        """User and system CPU the proxy has used so far: the noise of a shared machine
        moves it less than it moves a rate."""
        fields = Path(f"/proc/{self.process.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def outcomes(self) -> dict[str, int]:
        """How the proxy answered, from its access log: 'GET hit', 'GET miss-range', ..."""
        import re

        counts: dict[str, int] = {}
        for line in self.process.log:
            match = re.search(r"access: (\w+) \S+ \d+ (\S+) ", line)
            if match:
                key = f"{match[1]} {match[2]}"
                counts[key] = counts.get(key, 0) + 1
        return counts

    def stop(self) -> None:
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)
            self.spy.wait(30)
        self.process.stop()


# -- workloads -------------------------------------------------------------------------------


def pin(workload: str, relay: RelayProcess, workdir: Path, repin: bool) -> Path:
    pinned = workdir / f"{workload}.pinned.txt"
    if pinned.exists() and not repin:
        return pinned
    log(f"pinning {workload} through the relay")
    result = subprocess.run(
        [
            uv_bin(), "pip", "compile", str(WORKLOADS / f"{workload}.txt"), "--python",
            sys.executable, "--index-url", relay.url, "--no-cache", "--no-header",
            "--no-annotate", "--quiet", "-o", str(pinned),
        ],
        env=client_env(), capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"uv pip compile failed:\n{result.stderr}")
    return pinned


def wheel_dir(pinned: Path, relay: RelayProcess, workdir: Path) -> Path:
    """The pinned set's files, downloaded once: the floor installs from here."""
    directory = workdir / f"{pinned.name.removesuffix('.pinned.txt')}.wheels"
    done = directory / ".complete"
    if done.exists() and done.stat().st_mtime >= pinned.stat().st_mtime:
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    log(f"downloading {pinned.name} into {directory}")
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--no-deps", "-r", str(pinned), "-d",
            str(directory), "--index-url", relay.url, "-q",
        ],
        env=client_env(), capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"pip download failed:\n{result.stderr}")
    done.touch()
    return directory


def prepare(workload: str, relay: RelayProcess, args: argparse.Namespace) -> tuple[Path, Path, int]:
    """The pinned requirements, their wheel directory and the set's size in bytes."""
    pinned = pin(workload, relay, args.workdir, args.repin)
    wheels = wheel_dir(pinned, relay, args.workdir)
    size = sum(p.stat().st_size for p in wheels.iterdir() if not p.name.startswith("."))
    if workload not in relay.primed:
        # The relay keeps pages in memory per Accept header: one untimed install straight from
        # it and one through a proxy, so no timed run waits on the real upstream for a page.
        log(f"priming the relay for {workload}")
        asyncio.run(install("uv", pinned, relay.url))
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
            proxy = Proxy(Path(cache), relay.url)
            try:
                asyncio.run(install("uv", pinned, proxy.url))
            finally:
                proxy.stop()
        relay.primed.add(workload)
    return pinned, wheels, size


def static_index(wheels: Path) -> Path:
    """The wheel directory as a static PEP 503 index with PEP 658 metadata files, for a plain
    file server: what any HTTP index costs the client, without the proxy."""
    import hashlib
    import html
    import zipfile

    from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

    root = wheels.with_suffix(".static")
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    projects: dict[str, list[str]] = {}
    for path in sorted(wheels.iterdir()):
        if path.name.startswith("."):
            continue
        is_wheel = path.suffix == ".whl"
        parse = parse_wheel_filename if is_wheel else parse_sdist_filename
        project = canonicalize_name(parse(path.name)[0])
        folder = root / "simple" / project
        folder.mkdir(parents=True, exist_ok=True)
        os.link(path, folder / path.name)
        attrs = ""
        if is_wheel:
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
                metadata = archive.read(name)
            (folder / f"{path.name}.metadata").write_bytes(metadata)
            attrs = f' data-core-metadata="sha256={hashlib.sha256(metadata).hexdigest()}"'
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        link = html.escape(path.name)
        projects.setdefault(project, []).append(
            f'<a href="{link}#sha256={digest}"{attrs}>{link}</a><br />'
        )
    for project, links in projects.items():
        page = "<!DOCTYPE html>\n<html><body>\n" + "\n".join(links) + "\n</body></html>\n"
        (root / "simple" / project / "index.html").write_text(page)
    (root / ".complete").touch()
    return root


@contextlib.contextmanager
def file_server(root: Path):
    """`python -m http.server` on loopback serving root; yields its /simple/ URL."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/simple/"
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urlopen(url).close()
                break
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def install_args(installer: str, pinned: Path, target: Path, index: str | Path) -> list[str]:
    """index: an index URL, or a wheel directory for the offline floor."""
    if installer == "uv":
        args = [uv_bin(), "pip", "install", "--no-cache", "--python", sys.executable]
    else:
        args = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "-q"]
    args += ["--target", str(target), "-r", str(pinned)]
    if isinstance(index, Path):
        args += ["--no-index", "--find-links", str(index)]
        if installer == "uv":
            args.append("--offline")
    else:
        args += ["--index-url", index]
    return args


async def install(installer: str, pinned: Path, index: str | Path) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-target-", dir=TARGET_ROOT) as tmp:
        env = {**client_env(), "UV_CACHE_DIR": str(Path(tmp) / "uv-cache")}
        args = install_args(installer, pinned, Path(tmp) / "target", index)
        return await timed_run(args, env, f"{installer} failed from {index}")


async def timed_run(args: list[str], env: dict[str, str], failure: str) -> float:
    """Seconds the command took; a failure stops the benchmark with its stderr's end."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{failure}:\n{stderr.decode()[-3000:]}")
    return elapsed


def profile_path(args: argparse.Namespace, name: str) -> Path | None:
    return args.profile / f"{name}.txt" if args.profile else None


# -- scenarios -------------------------------------------------------------------------------


def scenario_installs(args: argparse.Namespace, relay: RelayProcess) -> dict:
    results = {}
    for workload in args.workloads.split(","):
        pinned, wheels, size = prepare(workload, relay, args)
        per_installer = {}
        for installer in args.installers.split(","):
            runs = []
            for number in range(args.runs):
                log(f"installs: {workload} {installer} run {number + 1}/{args.runs}")
                runs.append(one_install_run(args, relay, installer, pinned, wheels, workload))
            per_installer[installer] = summarize_runs(runs, args.tree_list)
        results[workload] = {
            "files": sum(1 for p in wheels.iterdir() if not p.name.startswith(".")),
            "set_bytes": size,
            "installers": per_installer,
        }
        if args.tree_list:
            results[workload]["trees"] = [t.label for t in args.tree_list]
    return results


def one_install_run(args, relay, installer, pinned, wheels, workload) -> dict:
    run: dict[str, float] = {}
    run["floor"] = asyncio.run(install(installer, pinned, wheels))
    with file_server(static_index(wheels)) as static:
        run["static"] = asyncio.run(install(installer, pinned, static))
    relay.reset()
    run["direct"] = asyncio.run(install(installer, pinned, relay.url))
    run["direct upstream bytes"] = relay.stats()["body_bytes"]
    trees = args.tree_list or [None]
    with contextlib.ExitStack() as stack:
        caches = {  # one cache per tree: their formats may differ
            tree: Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cache-")))
            for tree in trees
        }
        for variant in ("cold", "warm"):  # warm: a fresh proxy process on the cold run's cache
            for tree in trees:  # interleaved: cold[before], cold[after], warm[before], ...
                key = tree_key(variant, tree)
                relay.reset()
                name = f"{workload}-{installer}-{variant}{tree_note(tree)}"
                proxy = Proxy(caches[tree], relay.url, profile=profile_path(args, name), tree=tree)
                try:
                    run[key] = asyncio.run(install(installer, pinned, proxy.url))
                    run[f"{key} RSS MiB"] = proxy.peak_rss_mib()
                finally:
                    proxy.stop()
                stats = relay.stats()
                run[f"{key} upstream bytes"] = stats["body_bytes"]
                run[f"{key} upstream requests"] = stats["requests"]
    log("  " + ", ".join(f"{k} {v:.1f}" for k, v in run.items()))
    return run


def summarize_runs(runs: list[dict], trees: list[Tree] | None = None) -> dict:
    summary = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
    summary["runs"] = len(runs)
    summary["raw"] = runs
    for tree in trees or [None]:
        cold, warm = tree_key("cold", tree), tree_key("warm", tree)
        summary[f"{warm}/floor"] = round(summary[warm] / summary["floor"], 3)
        summary[f"{cold}/direct"] = round(summary[cold] / summary["direct"], 3)
        summary[f"{warm}/static"] = round(summary[warm] / summary["static"], 3)
        # Ratios within each run, then their median: steadier when the machine's speed drifts.
        for a, b in ((warm, "floor"), (cold, "direct")):
            summary[f"{a}/{b} paired"] = round(statistics.median(r[a] / r[b] for r in runs), 3)
    for tree in (trees or [])[1:]:  # each tree against the first, e.g. "cold after/before"
        base = trees[0]
        for measure in ("cold", "warm", "cold RSS MiB", "warm RSS MiB"):
            new, old = tree_key(measure.split()[0], tree), tree_key(measure.split()[0], base)
            unit = measure.removeprefix(measure.split()[0])  # "" or " RSS MiB"
            name = f"{measure} {tree.label}/{base.label}"
            summary[name] = round(summary[new + unit] / summary[old + unit], 3)
            summary[f"{name} paired"] = round(
                statistics.median(r[new + unit] / r[old + unit] for r in runs), 3
            )
    return summary


def scenario_concurrency(args: argparse.Namespace, relay: RelayProcess) -> dict:
    results = {}
    for workload in args.concurrency_workloads.split(","):
        pinned, wheels, size = prepare(workload, relay, args)
        rows = {}
        for clients in (int(n) for n in args.clients.split(",")):
            log(f"concurrency: {workload}, {clients} uv clients against a cold proxy")
            flush_disk_caches()
            with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
                relay.reset()
                proxy = Proxy(
                    Path(cache), relay.url, profile=profile_path(args, f"{workload}-c{clients}")
                )
                try:
                    total, each = asyncio.run(together(clients, pinned, proxy.url))
                    rss = proxy.peak_rss_mib()
                finally:
                    proxy.stop()
                outcomes = proxy.outcomes()
                stats = relay.stats()
            rows[str(clients)] = {
                "total_s": round(total, 2),
                "slowest_client_s": round(max(each), 2),
                "median_client_s": round(statistics.median(each), 2),
                "upstream_file_bytes": stats["file_bytes"],
                "upstream_body_bytes": stats["body_bytes"],
                "upstream_requests": stats["requests"],
                "bytes/set": round(stats["file_bytes"] / size, 4),
                "max_downloads_of_one_file": stats["max_downloads_of_one_file"],
                "RSS MiB": rss,
                "proxy_outcomes": outcomes,
            }
            if "floor" in args.baselines.split(","):
                # The same number of offline installs from the wheel directory: what this
                # machine's cores allow that many clients, whatever serves them.
                rows[str(clients)]["floor_total_s"] = round(
                    asyncio.run(together(clients, pinned, wheels))[0], 2
                )
            log(f"  {rows[str(clients)]}")
        if "1" in rows:
            for row in rows.values():
                row["total/1 client"] = round(row["total_s"] / rows["1"]["total_s"], 3)
        results[workload] = {"set_bytes": size, "files": len(list(wheels.glob("*.whl"))), **rows}
    return results


def flush_disk_caches() -> None:
    """Each uv client writes its own --target: 8 of them leave about 1.5 GB of dirty pages,
    and a run that starts before they are written waits on them (the same build took 46 to
    73 s, one run after another). Written out and dropped first, where the user may."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


async def together(clients: int, pinned: Path, url: str | Path) -> tuple[float, list[float]]:
    """That many uv installs at once: the wall time and each one's time."""
    started = time.perf_counter()
    each = await asyncio.gather(*(install("uv", pinned, url) for _ in range(clients)))
    return time.perf_counter() - started, list(each)


def loadgen(base: str, paths: list[str], connections: int, duration: float, *extra: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as fh:
        fh.write("\n".join(paths))
    try:
        result = subprocess.run(
            [
                sys.executable, str(REPO / "benchmarks" / "loadgen.py"), "--base", base,
                "--paths", fh.name, "--connections", str(connections), "--duration",
                str(duration), *extra,
            ],
            capture_output=True, text=True,
        )  # fmt: skip
    finally:
        os.unlink(fh.name)
    if result.returncode != 0:
        raise SystemExit(f"loadgen failed:\n{result.stderr}")
    return json.loads(result.stdout)


def fetch_all(base: str, paths: list[str], *headers: str) -> None:
    for path in paths:
        request = Request(base + path, headers=dict(h.split(": ", 1) for h in headers))
        with urlopen(request, timeout=600) as resp:
            while resp.read(1 << 20):
                pass


def scenario_serving(args: argparse.Namespace) -> dict:
    from aiohttp import web

    from tests.fakes.upstream import UpstreamIndex, make_app
    from tests.fakes.wheels import build_wheel

    synthetic = args.workdir / "synthetic-wheels"
    wheels = []
    for number in range(args.files):
        name = f"bigwheel{number}"
        path = synthetic / f"{name}-1.0-py3-none-any.whl"
        if not path.exists() or path.stat().st_size < args.file_mib * 2**20:
            log(f"building {path.name} ({args.file_mib} MiB)")
            path = build_wheel(synthetic, name, "1.0", payload_size=args.file_mib * 2**20)
        wheels.append(path)
    index = UpstreamIndex()
    for path in wheels:
        index.add_wheel(path)
    paths = [f"/simple/bigwheel{n}/{p.name}" for n, p in enumerate(wheels)]

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(index), access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    import threading

    threading.Thread(target=loop.run_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{port}/simple/"
    results: dict = {"files": len(wheels), "file_mib": args.file_mib}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
            proxy = Proxy(Path(cache), upstream)
            try:
                log("serving: warming the cache")
                fetch_all(proxy.base, [f"/simple/bigwheel{n}/" for n in range(len(wheels))])
                fetch_all(proxy.base, paths)
            finally:
                proxy.stop()
            for parallel in (int(n) for n in args.parallel.split(",")):
                log(f"serving: {parallel} parallel downloads for {args.duration:g}s")
                proxy = Proxy(
                    Path(cache), upstream, profile=profile_path(args, f"serving-{parallel}")
                )
                try:
                    row = loadgen(proxy.base, paths, parallel, args.duration)
                    row["RSS MiB"] = proxy.peak_rss_mib()
                finally:
                    proxy.stop()
                log(f"  {row}")
                results[str(parallel)] = row
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
    return results


def scenario_pages(args: argparse.Namespace, relay: RelayProcess) -> dict:
    projects: list[str] = []
    for workload in args.page_workloads.split(","):
        pinned = pin(workload, relay, args.workdir, args.repin)
        for line in pinned.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name = line.split("==")[0].split("[")[0].strip().lower().replace("_", "-")
                projects.append(name.replace(".", "-"))
    projects = sorted(set(projects))
    paths = [f"/simple/{p}/" for p in projects]
    results: dict = {"projects": len(projects)}
    trees = args.tree_list or [None]
    # warm means fresh: no revalidation during the run
    ttl = ("--page-ttl", "1h", *shlex.split(args.proxy_args))
    with contextlib.ExitStack() as stack:
        caches = {  # one cache per tree: their formats may differ
            tree: Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cache-")))
            for tree in trees
        }
        for tree in trees:
            proxy = Proxy(caches[tree], relay.url, *ttl, tree=tree)
            try:
                log(f"pages: warming {len(paths)} project pages{tree_note(tree)}")
                fetch_all(proxy.base, paths, JSON_ACCEPT)
            finally:
                proxy.stop()
        sizes = {}
        modes = [("closed loop", 0.0)]
        modes += [
            (f"paced {ms:g} ms", ms)
            for ms in map(float, args.interval_ms.split(",") if args.interval_ms else [])
        ]
        for label, interval in modes:
            rows: dict = {tree: [] for tree in trees}
            for number in range(args.page_runs):
                if args.page_runs > 1:
                    log(f"pages: {label}, run {number + 1}/{args.page_runs}")
                for tree in trees:  # interleaved: before, after, before, after...
                    rows[tree].append(
                        one_pages_run(
                            args, relay, caches[tree], tree, paths, sizes, label, interval
                        )
                    )
            for tree in trees:
                results[tree_key(label, tree)] = median_row(rows[tree])
            for tree in trees[1:]:
                results[f"{label} {tree.label}/{trees[0].label}"] = pages_ratios(
                    rows[tree], rows[trees[0]]
                )
        results["json_page_bytes"] = sizes
    return results


def one_pages_run(args, relay, cache, tree, paths, sizes, label, interval) -> dict:
    """One load generator run against a fresh proxy on that tree's warm cache."""
    headers = [JSON_ACCEPT, "Accept-Encoding: gzip"]
    ttl = ("--page-ttl", "1h", *shlex.split(args.proxy_args))
    name = f"pages-{'paced' if interval else 'closed'}{tree_note(tree)}"
    proxy = Proxy(cache, relay.url, *ttl, profile=profile_path(args, name), tree=tree)
    try:
        if not sizes:
            for path in paths:
                with urlopen(Request(proxy.base + path, headers={"Accept": JSON_ACCEPT[8:]})) as r:
                    sizes[path] = len(r.read())
        fetch_all(proxy.base, paths, *headers)  # warm in this process too
        log(f"pages: {args.connections} connections, {tree_key(label, tree)}, {args.duration:g}s")
        extra = [f"--header={h}" for h in headers] + ["--per-path"]
        if interval:
            extra.append(f"--interval-ms={interval}")
        cpu_before = proxy.cpu_seconds()
        row = loadgen(proxy.base, paths, args.connections, args.duration, *extra)
        cpu = proxy.cpu_seconds() - cpu_before
        row["proxy CPU us/request"] = round(cpu / max(row["requests"], 1) * 1e6)
        row["RSS MiB"] = proxy.peak_rss_mib()
    finally:
        proxy.stop()
    log(f"  { {k: v for k, v in row.items() if k != 'p50_ms_by_path'} }")
    return row


PAGE_MEASURES = ("requests_per_second", "p50_ms", "p99_ms", "proxy CPU us/request", "RSS MiB")
PAGE_RATIO_NAMES = (
    ("req/s", "requests_per_second"),
    ("p50", "p50_ms"),
    ("p99", "p99_ms"),
    ("CPU/request", "proxy CPU us/request"),
    ("RSS", "RSS MiB"),
)


def ratio(new: float, old: float) -> float:
    return round(new / old, 3) if old else float("nan")


def median_row(rows: list[dict]) -> dict:
    """One run's row as it is; of several, the median of each measure and the runs' values."""
    if len(rows) == 1:
        return rows[0]
    row = dict(rows[0])
    for key, value in rows[0].items():
        values = [r[key] for r in rows]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and len(set(values)) > 1:
            row[key] = round(statistics.median(values), 2)  # settings such as connections stay
    row["runs"] = len(rows)
    row["raw"] = [{k: r[k] for k in PAGE_MEASURES if k in r} for r in rows]
    return row


def pages_ratios(new: list[dict], old: list[dict]) -> dict:
    """A tree against the first: the ratio of medians and the median of per-run ratios."""
    ratios = {}
    for key in PAGE_MEASURES:
        medians = [statistics.median(r[key] for r in rows) for rows in (new, old)]
        ratios[key] = ratio(*medians)
        ratios[f"{key} paired"] = statistics.median(
            ratio(a[key], b[key]) for a, b in zip(new, old, strict=True)
        )
    return ratios


# -- output ----------------------------------------------------------------------------------


def versions() -> dict:
    def out(*cmd: str) -> str:
        result = subprocess.run(cmd, capture_output=True, text=True, env=client_env())
        return result.stdout.strip().splitlines()[0] if result.stdout.strip() else "?"

    import aiohttp
    import diskcache

    return {
        "python": platform.python_version(),
        "uv": out(uv_bin(), "--version"),
        "pip": out(sys.executable, "-m", "pip", "--version").split(" from ")[0],
        "aiohttp": aiohttp.__version__,
        "diskcache": diskcache.__version__,
        "cacheproxy commit": out("git", "-C", str(REPO), "rev-parse", "--short", "HEAD"),
        "cpus": os.cpu_count(),
        "memory GiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "kernel": platform.release(),
    }


def print_tables(results: dict) -> None:
    ok = lambda passed: "met" if passed else "NOT met"  # noqa: E731
    for workload, data in results.get("installs", {}).items():
        print(
            f"\ninstalls: {workload} ({data['files']} files, {data['set_bytes'] / 2**20:.0f} MiB)"
        )
        labels = data.get("trees") or [None]
        width = 9 if labels == [None] else 10 + max(len(label) for label in labels)
        print(
            f"{'installer':<{width}}{'floor':>8}{'static':>8}{'direct':>8}{'cold':>8}{'warm':>8}"
            f"{'warm/floor':>12}{'warm/static':>12}{'cold/direct':>13}{'RSS cold':>10}"
            f"{'RSS warm':>10}"
        )
        for installer, r in data["installers"].items():
            static = r.get("static", float("nan"))
            for label in labels:
                cold, warm = (
                    name if label is None else f"{name}[{label}]" for name in ("cold", "warm")
                )
                print(
                    f"{installer if label is None else f'{installer}[{label}]':<{width}}"
                    f"{r['floor']:>7.1f}s{static:>7.1f}s{r['direct']:>7.1f}s"
                    f"{r[cold]:>7.1f}s{r[warm]:>7.1f}s{r[f'{warm}/floor']:>12.2f}"
                    f"{r[warm] / static:>12.2f}{r[f'{cold}/direct']:>13.2f}"
                    f"{r[f'{cold} RSS MiB']:>9.0f}M{r[f'{warm} RSS MiB']:>9.0f}M"
                    f"  warm/floor {ok(r[f'{warm}/floor'] <= 1.05)}, cold/direct "
                    f"{ok(r[f'{cold}/direct'] <= 1.05)}"
                )
            for label in labels[1:]:
                pair = f"{label}/{labels[0]}"
                print(
                    f"  {installer} {pair} (median of {r['runs']} runs; paired in brackets): "
                    + ", ".join(
                        f"{measure} {r[f'{measure} {pair}']:.3f}"
                        f" ({r[f'{measure} {pair} paired']:.3f})"
                        for measure in ("cold", "warm", "cold RSS MiB", "warm RSS MiB")
                    )
                )
    for workload, data in results.get("concurrency", {}).items():
        print(f"\nconcurrency: {workload} ({data['set_bytes'] / 2**20:.0f} MiB set), cold proxy")
        print(
            f"{'clients':<8}{'total':>8}{'vs 1':>7}{'N floors':>10}{'upstream MiB':>14}"
            f"{'bytes/set':>11}{'max dl/file':>13}{'RSS':>7}"
        )
        for n in filter(str.isdigit, data):
            row = data[n]
            print(
                f"{n:<8}{row['total_s']:>7.1f}s{row.get('total/1 client', 0):>7.2f}"
                f"{row.get('floor_total_s', float('nan')):>9.1f}s"
                f"{row['upstream_file_bytes'] / 2**20:>14.1f}{row['bytes/set']:>11.3f}"
                f"{row['max_downloads_of_one_file']:>13}{row['RSS MiB']:>6.0f}M"
            )
    serving = results.get("serving")
    if serving:
        print(f"\nserving: {serving['files']} cached files of {serving['file_mib']} MiB")
        for n, row in serving.items():
            if n.isdigit():
                print(
                    f"  {n:>4} parallel: {row['gb_per_second']:.2f} GB/s, "
                    f"{row['requests']} downloads done, RSS {row['RSS MiB']:.0f} MiB"
                    f"  (>= 1 GB/s {ok(row['gb_per_second'] >= 1.0)})"
                )
    pages = results.get("pages")
    if pages:
        print(f"\npages: {pages['projects']} warm project pages, JSON + gzip")
        width = max([16] + [len(k) for k, v in pages.items() if isinstance(v, dict)])
        for label, row in pages.items():
            if not isinstance(row, dict):
                continue
            if "requests_per_second paired" in row:  # a tree against the first
                print(
                    f"  {label:<{width}} "
                    + ", ".join(
                        f"{name} {row[key]:.3f} ({row[f'{key} paired']:.3f})"
                        for name, key in PAGE_RATIO_NAMES
                    )
                    + "  (ratio of medians; paired in brackets)"
                )
            elif "p99_ms" in row:
                runs = f" (median of {row['runs']})" if row.get("runs") else ""
                print(
                    f"  {label:<{width}} {row['connections']} conns: "
                    f"{row['requests_per_second']:.0f} req/s, p50 {row['p50_ms']:.1f} ms, "
                    f"p99 {row['p99_ms']:.1f} ms, "
                    f"{row.get('proxy CPU us/request', 0)} us CPU/request, "
                    f"RSS {row['RSS MiB']:.0f} MiB{runs}  (p99 <= 20 ms {ok(row['p99_ms'] <= 20)})"
                )


def deep_merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scenario", choices=["installs", "concurrency", "serving", "pages", "all", "report"]
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cacheproxy-bench"))
    parser.add_argument("--upstream", default=None, help="index behind the relay")
    parser.add_argument("--latency-ms", type=float, default=40)
    parser.add_argument("--mbps", type=float, default=100)
    parser.add_argument("--repin", action="store_true")
    parser.add_argument("--workloads", default="django-app,data-science")
    parser.add_argument("--installers", default="uv,pip")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency-workloads", default="django-app")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--baselines", default="floor", help="concurrency: also N floors")
    parser.add_argument("--files", type=int, default=4, help="serving: synthetic wheels")
    parser.add_argument("--file-mib", type=int, default=128)
    parser.add_argument("--parallel", default="16,200")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--page-workloads", default="django-app,data-science")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument(
        "--interval-ms",
        default="1000,200",
        help="pages: paced runs, one request per connection every N ms",
    )
    parser.add_argument(
        "--proxy-args",
        default="",
        help="pages: more settings for its proxies, e.g. '--min-release-age 7d --deny evilpkg'",
    )
    parser.add_argument(
        "--page-runs", type=int, default=1, help="pages: runs of each load, medians reported"
    )
    parser.add_argument(
        "--trees",
        default=None,
        help="installs, pages: NAME=PATH[,NAME=PATH...] checkouts to compare, interleaved "
        "(e.g. before=/work/base,after=.); ratios are each tree over the first",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    args.tree_list = parse_trees(args.trees)
    if args.scenario == "report":  # the tables of an earlier run's --json
        print_tables(json.loads(args.json.read_text()))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    upstream = args.upstream or default_upstream()

    results: dict = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "throttle": {"latency_ms": args.latency_ms, "mbps": args.mbps},
            **versions(),
        }
    }
    wanted = ["installs", "concurrency", "serving", "pages"]
    wanted = wanted if args.scenario == "all" else [args.scenario]
    relay = None
    if set(wanted) - {"serving"}:
        relay = RelayProcess(upstream, args.latency_ms, args.mbps, args.workdir / "relay-store")
    try:
        for scenario in wanted:
            started = time.perf_counter()
            if scenario == "installs":
                results["installs"] = scenario_installs(args, relay)
            elif scenario == "concurrency":
                results["concurrency"] = scenario_concurrency(args, relay)
            elif scenario == "serving":
                results["serving"] = scenario_serving(args)
            else:
                results["pages"] = scenario_pages(args, relay)
            log(f"{scenario} took {time.perf_counter() - started:.0f}s")
    finally:
        if relay is not None:
            relay.stop()
    if args.tree_list:
        results["meta"]["trees"] = tree_meta(args.tree_list)
        for label, meta in results["meta"]["trees"].items():
            print(f"tree {label}: {meta['path']} at {meta['commit']}, {meta['cacheproxy']}")
    print_tables(results)
    if args.json:
        merged = json.loads(args.json.read_text()) if args.json.exists() else {}
        merged.setdefault("meta", {}).update(results.pop("meta"))
        deep_merge(merged, results)  # so a scenario can be run in parts
        args.json.write_text(json.dumps(merged, indent=2) + "\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
