"""Resolving against an index that serves no PEP 658 metadata (issue 16), direct and through a
cold proxy, on a throttled link (benchmarks/relay.py --strip-metadata: 50 ms per request,
4 MB/s shared). Run by hand, never as a timed test:

    .venv/bin/python benchmarks/metadata.py --workload ../shared/workloads/django-app.txt

For `uv pip compile`, `pip install --dry-run`, `uv lock` and `uv pip install` (into a fresh
--target) of the workload: seconds and the bytes that crossed the link, straight from the relay
and through a fresh proxy with an empty cache (each client with an empty cache of its own),
with the resolution lookahead on (the default) and off: --rounds runs of each, in turn, and
their medians (each run's CPU time stolen by the host is kept beside it in the JSON). Then a
cold `.metadata` of the largest wheel the proxy saw (--big-project, default numpy): seconds
and bytes. pip is the newest release, installed through the relay into a throwaway venv under
--workdir (--pip names another Python whose pip to measure instead). The relay keeps the
files it fetched (WORKDIR/relay-store), and one untimed run of each client primes it, so the
measured runs cost the simulated link, not the real upstream's variance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import Request, urlopen

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.suite import TARGET_ROOT, RelayProcess, client_env, log, timed_run, uv_bin  # noqa: E402
from cacheproxy.config import default_upstream  # noqa: E402
from tests.fakes.process import ProxyProcess  # noqa: E402

JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
CLIENTS = ("uv pip compile", "pip install --dry-run", "uv lock", "uv pip install")


def client_args(
    client: str, requirements: Path, work: Path, index: str, pip: str = sys.executable
) -> list[str]:
    if client == "uv pip compile":
        return [uv_bin(), "pip", "compile", "--no-cache", "--quiet", "--python", sys.executable,
                "--index-url", index, str(requirements)]  # fmt: skip
    if client == "uv pip install":
        return [uv_bin(), "pip", "install", "--no-cache", "--quiet", "--python", sys.executable,
                "--target", str(work / "target"), "--index-url", index,
                "-r", str(requirements)]  # fmt: skip
    if client == "pip install --dry-run":
        return [pip, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                "--no-cache-dir", "-q", "--index-url", index, "-r", str(requirements)]  # fmt: skip
    project = work / "app"
    project.mkdir()
    wanted = [line.strip() for line in requirements.read_text().splitlines()]
    dependencies = ", ".join(json.dumps(w) for w in wanted if w and not w.startswith("#"))
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "app"\nversion = "0"\nrequires-python = ">=3.11"\n'
        f"dependencies = [{dependencies}]\n"
    )
    return [uv_bin(), "lock", "--no-cache", "--quiet", "--directory", str(project),
            "--default-index", index]  # fmt: skip


async def resolve(client: str, requirements: Path, index: str, pip: str = sys.executable) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-meta-", dir=TARGET_ROOT) as tmp:
        work = Path(tmp)
        env = {**client_env(), "UV_CACHE_DIR": str(work / "uv-cache"), "HOME": str(work)}
        args = client_args(client, requirements, work, index, pip)
        return await timed_run(args, env, f"{client} failed")


def megabytes(count: int) -> float:
    return round(count / 1e6, 2)


def largest_wheel(proxy_url: str, project: str) -> str:
    request = Request(proxy_url + f"{project}/", headers={"Accept": JSON_ACCEPT})
    with urlopen(request) as resp:
        files = json.load(resp)["files"]
    wheels = [f for f in files if f["filename"].endswith(".whl") and f.get("size")]
    return max(wheels, key=lambda f: f["size"])["filename"]


def cold_metadata(relay: RelayProcess, work: Path, project: str, name: str = "cache-big") -> dict:
    proxy = ProxyProcess(work / name, relay.url)
    try:
        wheel = largest_wheel(proxy.url, project)
        relay.reset()
        started = time.perf_counter()
        with urlopen(proxy.url + f"{project}/{wheel}.metadata") as resp:
            body = resp.read()
        elapsed = time.perf_counter() - started
        return {"wheel": wheel, "seconds": round(elapsed, 3), "metadata bytes": len(body),
                "upstream MB": megabytes(relay.stats()["body_bytes"])}  # fmt: skip
    finally:
        proxy.stop()


def timed_cold_metadata(relay: RelayProcess, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        # The first read puts the wheel in the relay's store; the second is the one timed.
        cold_metadata(relay, Path(work), args.big_project, "priming")
        return cold_metadata(relay, Path(work), args.big_project)


def through_proxy(
    relay: RelayProcess, args: argparse.Namespace, client: str, *proxy_args: str
) -> tuple:
    """Seconds and upstream MB of one resolution through a fresh proxy with an empty cache."""
    with tempfile.TemporaryDirectory(dir=args.workdir) as cache:
        proxy = ProxyProcess(Path(cache), relay.url, *proxy_args)
        try:
            relay.reset()
            seconds = asyncio.run(resolve(client, args.workload, proxy.url, args.pip))
            return round(seconds, 2), megabytes(relay.stats()["body_bytes"])
        finally:
            proxy.stop()


def directly(relay: RelayProcess, args: argparse.Namespace, client: str) -> tuple:
    relay.reset()
    seconds = asyncio.run(resolve(client, args.workload, relay.url, args.pip))
    return round(seconds, 2), megabytes(relay.stats()["body_bytes"])


def side_by_side(relay: RelayProcess, args: argparse.Namespace, client: str) -> dict:
    """Direct, through a cold proxy and through one without lookahead, --rounds times in
    turn (each round in the other order than the last): the medians, and every run."""
    ways = {
        "direct": lambda: directly(relay, args, client),
        "proxy": lambda: through_proxy(relay, args, client),
        "no lookahead": lambda: through_proxy(relay, args, client, "--no-lookahead"),
    }
    runs: dict[str, list[tuple]] = {name: [] for name in ways}
    for number in range(args.rounds):
        for name in list(ways) if number % 2 == 0 else list(ways)[::-1]:
            stolen = stolen_seconds()
            seconds, upstream = ways[name]()
            runs[name].append((seconds, upstream, round(stolen_seconds() - stolen, 2)))
    row: dict = {}
    for name, done in runs.items():
        row[f"{name} s"] = statistics.median(seconds for seconds, _, _ in done)
        row[f"{name} MB"] = statistics.median(upstream for _, upstream, _ in done)
    row["runs (s, MB, CPU s stolen)"] = runs
    return row


def stolen_seconds() -> float:
    """CPU time the host took from this virtual machine so far (0 where it is not told): a
    run that lost much of it is slow for reasons of its own."""
    try:
        with open("/proc/stat") as stat:
            ticks = int(stat.readline().split()[8])
    except (OSError, IndexError, ValueError):
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


def current_pip(relay: RelayProcess, workdir: Path) -> str:
    """A throwaway venv with the newest pip, installed through the relay: the pip a user
    installs today, not whichever one this venv happens to carry."""
    venv = workdir / "current-pip"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-cache-dir", "--upgrade", "pip",
         "--index-url", relay.url],
        check=True, env=client_env(),
    )  # fmt: skip
    return python


def pip_version(python: str) -> str:
    done = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True)
    return done.stdout.split(" from ")[0]


def run(args: argparse.Namespace) -> dict:
    args.workdir.mkdir(parents=True, exist_ok=True)
    relay = RelayProcess(
        args.upstream, args.latency_ms, args.mbps, args.workdir / "relay-store", "--strip-metadata"
    )
    results: dict = {"resolutions": {}, "link": f"{args.latency_ms:g} ms, {args.mbps:g} Mbit/s"}
    # Other work on the machine skews wall times: say how much there was.
    results["load average"] = {"start": round(os.getloadavg()[0], 1)}
    try:
        if "pip install --dry-run" in args.clients:
            args.pip = args.pip or current_pip(relay, args.workdir)
            results["pip"] = pip_version(args.pip)
        for client in args.clients:
            log(f"{client}: priming the relay")
            asyncio.run(resolve(client, args.workload, relay.url, args.pip))
            # Through a proxy too: the relay then holds every file the proxy reads ranges of.
            through_proxy(relay, args, client)
            row = side_by_side(relay, args, client)
            row["proxy/direct s"] = round(row["proxy s"] / row["direct s"], 2)
            row["no lookahead/direct s"] = round(row["no lookahead s"] / row["direct s"], 2)
            log(f"{client}: {row}")
            results["resolutions"][client] = row
        if args.big_project:
            results["cold .metadata"] = timed_cold_metadata(relay, args)
    finally:
        relay.stop()
    results["load average"]["end"] = round(os.getloadavg()[0], 1)
    return results


def table(results: dict) -> str:
    lines = [
        f"link: {results['link']}, upstream serving no metadata; {results.get('pip', '')}; "
        f"load average {results['load average']['start']} at the start, "
        f"{results['load average']['end']} at the end",
        "| client | direct s | direct MB | cold proxy s | cold proxy MB | proxy/direct "
        "| no lookahead s | no lookahead MB | no lookahead/direct |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for client, row in results["resolutions"].items():
        lines.append(
            f"| {client} | {row['direct s']} | {row['direct MB']} | {row['proxy s']} | "
            f"{row['proxy MB']} | {row['proxy/direct s']} | {row['no lookahead s']} | "
            f"{row['no lookahead MB']} | {row['no lookahead/direct s']} |"
        )
    big = results.get("cold .metadata")
    if big:
        lines.append(
            f"cold .metadata of {big['wheel']}: {big['seconds']} s, {big['upstream MB']} MB "
            "upstream"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_link_arguments(parser)
    parser.add_argument(
        "--big-project",
        default="numpy",
        help="whose largest wheel's cold .metadata is timed ('' for none)",
    )
    parser.add_argument(
        "--clients",
        type=lambda text: [client.strip() for client in text.split(",")],
        default=list(CLIENTS),
        help=f"comma-separated, of: {', '.join(CLIENTS)} (default: all)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of each way, in turn, whose medians are reported (default: 3)",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench-meta")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--pip",
        default=None,
        help="the Python whose pip is measured (default: the newest pip in a throwaway venv; "
        "pip before the fix for its issue 12603 downloads the wheels it picked even with "
        "--dry-run)",
    )
    run_and_report(parser.parse_args(), run, table)


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload, the upstream and the relay's simulated link, as every benchmark on the
    metadata-less relay takes them."""
    parser.add_argument("--workload", type=Path, required=True, help="a requirements file")
    parser.add_argument("--upstream", default=None, help="index URL (default: the default one)")
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--mbps", type=float, default=32, help="32 Mbit/s is 4 MB/s")


def run_and_report(args: argparse.Namespace, run, table) -> None:
    """Runs the benchmark, writes its results to --json if given, prints its table."""
    args.upstream = args.upstream or default_upstream()
    args.workload = args.workload.resolve()
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
