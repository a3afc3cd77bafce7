"""Install times through cacheproxy next to a direct install, measured in one run.

For each installer (uv, pip) and a requirement set, with the installer's own cache disabled:
  direct        straight from the upstream index
  cold          through a freshly started proxy with an empty cache
  warm          through the same proxy again
  warm-offline  the proxy restarted with an unreachable upstream and --page-ttl 0: the cache alone
Prints seconds (median of --runs) and the ratios cold/direct and warm/direct. Run by hand:

    .venv/bin/python benchmarks/install_times.py [--requirements FILE] [--runs N]

On a machine whose index is close and fast, cold and warm look alike; the Docker and throttled
benchmarks are where the difference shows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cacheproxy.config import default_upstream  # noqa: E402
from tests.fakes.process import ProxyProcess  # noqa: E402

DEFAULT_REQUIREMENTS = REPO.parent / "shared" / "workloads" / "django-app.txt"


def client_env() -> dict[str, str]:
    # The machine's own index settings would bypass the proxy; measure the plain clients.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1")
    return env


def install(installer: str, index_url: str, requirements: Path) -> float:
    with tempfile.TemporaryDirectory() as target, tempfile.TemporaryDirectory() as cache:
        if installer == "uv":
            from uv import find_uv_bin

            args = [find_uv_bin(), "pip", "install", "--no-cache", "--python", sys.executable]
        else:
            args = [sys.executable, "-m", "pip", "install", "--no-cache-dir"]
        args += ["--target", target, "--index-url", index_url, "-r", str(requirements), "-q"]
        env = {**client_env(), "UV_CACHE_DIR": cache}
        started = time.perf_counter()
        result = subprocess.run(args, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"{installer} failed through {index_url}:\n{result.stderr}")
        return elapsed


def measure(installer: str, upstream: str, requirements: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cache_dir:
        times = {"direct": install(installer, upstream, requirements)}
        proxy = ProxyProcess(Path(cache_dir), upstream)
        try:
            times["cold"] = install(installer, proxy.url, requirements)
            times["warm"] = install(installer, proxy.url, requirements)
            times["proxy peak RSS MiB"] = proxy.peak_rss_mib()
        finally:
            proxy.stop()
        offline = ProxyProcess(Path(cache_dir), "http://127.0.0.1:9/simple/", "--page-ttl", "0")
        try:
            times["warm-offline"] = install(installer, offline.url, requirements)
        finally:
            offline.stop()
        times["cache MiB"] = (
            sum(p.stat().st_size for p in Path(cache_dir).rglob("*") if p.is_file()) / 2**20
        )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--installers", default="uv,pip")
    parser.add_argument("--upstream", default=default_upstream())
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results = {}
    for installer in args.installers.split(","):
        runs = [measure(installer, args.upstream, args.requirements) for _ in range(args.runs)]
        results[installer] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    print(f"requirements: {args.requirements.name}, median of {args.runs} run(s)")
    header = f"{'installer':<10}{'direct':>9}{'cold':>9}{'warm':>9}{'offline':>9}"
    print(header + f"{'cold/dir':>10}{'warm/dir':>10}{'RSS MiB':>9}{'cache MiB':>10}")
    for installer, r in results.items():
        print(
            f"{installer:<10}{r['direct']:>8.1f}s{r['cold']:>8.1f}s{r['warm']:>8.1f}s"
            f"{r['warm-offline']:>8.1f}s{r['cold'] / r['direct']:>10.2f}"
            f"{r['warm'] / r['direct']:>10.2f}{r['proxy peak RSS MiB']:>9.0f}"
            f"{r['cache MiB']:>10.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
