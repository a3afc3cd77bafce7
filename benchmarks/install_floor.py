"""Where a cold `uv pip install` spends its time, direct and through a cold proxy, on the
metadata-less relay of benchmarks/metadata.py (issue 16): how close the proxy comes to the
fastest that a proxy fetching only what it is asked for could be. Run by hand, never as a
timed test:

    .venv/bin/python benchmarks/install_floor.py --workload ../shared/workloads/django-app.txt

uv reports its three phases (resolved, prepared, installed); the relay's byte count is read the
moment uv reports that it has resolved, so the bytes of the resolution and of the downloads
are told apart. The rest of a run (uv starting, planning, exiting) and the installed phase
(linking into --target, after the last byte) ask nothing of the upstream. So a proxy that
fetches only what it is asked for cannot finish before

    floor = rest + installed + all bytes / link rate

and that only with the link busy whenever uv waits on it, which a resolution alone does not
do: it waits a round trip for each page and each metadata read. Under the floor, the link
would have to carry wheels before they are asked for.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.metadata import add_link_arguments, client_args, run_and_report  # noqa: E402
from benchmarks.suite import TARGET_ROOT, RelayProcess, client_env, log  # noqa: E402
from tests.fakes.process import ProxyProcess  # noqa: E402

PHASE = re.compile(r"^(Resolved|Prepared|Installed) \d+ packages? in ([\d.]+)(ms|s)$")


def phase_seconds(line: str) -> tuple[str, float] | None:
    """("resolved", 2.62) from uv's "Resolved 40 packages in 2.62s"; None for other lines."""
    match = PHASE.match(line.strip())
    if match is None:
        return None
    name, amount, unit = match.groups()
    return name.lower(), float(amount) / (1000 if unit == "ms" else 1)


def one_install(relay: RelayProcess, requirements: Path, index: str) -> dict:
    """One uv pip install into a fresh --target with an empty cache: its phases, and the
    relay's bytes when it had resolved and when it was done."""
    with tempfile.TemporaryDirectory(prefix="bench-floor-", dir=TARGET_ROOT) as tmp:
        work = Path(tmp)
        env = {**client_env(), "UV_CACHE_DIR": str(work / "uv-cache"), "HOME": str(work)}
        args = client_args("uv pip install", requirements, work, index)
        args.remove("--quiet")  # uv then reports its phases
        relay.reset()
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
        phases: dict[str, float] = {}
        resolved_bytes = None
        tail: list[str] = []
        for line in proc.stderr:
            tail = [*tail[-20:], line]
            found = phase_seconds(line)
            if found is None:
                continue
            phases[found[0]] = found[1]
            if found[0] == "resolved":
                resolved_bytes = relay.stats()["body_bytes"]
        if proc.wait() != 0 or len(phases) != 3 or resolved_bytes is None:
            failure = "uv pip install failed or did not report its phases"
            raise SystemExit(f"{failure}:\n{''.join(tail)}")
        total = time.perf_counter() - started
    body_bytes = relay.stats()["body_bytes"]
    return {
        "total s": total,
        **{f"{name} s": seconds for name, seconds in phases.items()},
        "rest s": total - sum(phases.values()),
        "resolution MB": resolved_bytes / 1e6,
        "MB": body_bytes / 1e6,
    }


def with_floor(run: dict, bytes_per_second: float) -> dict:
    link = run["MB"] * 1e6 / bytes_per_second
    idle_in_resolution = run["resolved s"] - run["resolution MB"] * 1e6 / bytes_per_second
    return {
        **run,
        "link s": link,
        "link idle while resolving s": idle_in_resolution,
        "floor s": run["rest s"] + run["installed s"] + link,
    }


def medians(runs: list[dict]) -> dict:
    return {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}


def run(args: argparse.Namespace) -> dict:
    args.workdir.mkdir(parents=True, exist_ok=True)
    relay = RelayProcess(
        args.upstream, args.latency_ms, args.mbps, args.workdir / "relay-store", "--strip-metadata"
    )
    bytes_per_second = args.mbps * 1e6 / 8
    runs: dict[str, list[dict]] = {"direct": [], "cold proxy": []}
    try:
        log("priming the relay")
        one_install(relay, args.workload, relay.url)
        for number in range(args.rounds):
            for way in list(runs) if number % 2 == 0 else list(runs)[::-1]:
                log(f"{way}, run {number + 1}/{args.rounds}")
                if way == "direct":
                    done = one_install(relay, args.workload, relay.url)
                else:
                    with tempfile.TemporaryDirectory(dir=args.workdir) as cache:
                        proxy = ProxyProcess(Path(cache), relay.url)
                        try:
                            done = one_install(relay, args.workload, proxy.url)
                        finally:
                            proxy.stop()
                runs[way].append(with_floor(done, bytes_per_second))
    finally:
        relay.stop()
    results = {way: medians(done) for way, done in runs.items()}
    results["0.9 × direct s"] = round(0.9 * results["direct"]["total s"], 2)
    results["link"] = f"{args.latency_ms:g} ms, {args.mbps:g} Mbit/s"
    results["runs"] = runs
    return results


def table(results: dict) -> str:
    keys = [k for k in results["direct"] if k != "total s"]
    lines = [
        f"link: {results['link']}, upstream serving no metadata; medians",
        "| | total s | " + " | ".join(keys) + " |",
        "| --- | ---: |" + " ---: |" * len(keys),
    ]
    for way in ("direct", "cold proxy"):
        row = results[way]
        cells = " | ".join(str(row[k]) for k in keys)
        lines.append(f"| {way} | {row['total s']} | {cells} |")
    lines.append(f"0.9 × direct: {results['0.9 × direct s']} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_link_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way (default: 3)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench-floor")
    parser.add_argument("--json", type=Path, help="write the results here")
    run_and_report(parser.parse_args(), run, table)


if __name__ == "__main__":
    main()
