"""Docker builds of a small Django app, the blog post's experiment with real `docker build`:

    .venv/bin/python benchmarks/docker_builds.py [--latency-ms 40] [--mbps 100] [--json PATH]

Variants (Dockerfiles generated into a temp dir, BuildKit, `--network=host`):

  naive             COPY . then `pip install -r requirements.txt`
  layers            COPY requirements.txt, pip install, then COPY .
  cache mount       layers + `RUN --mount=type=cache,target=/root/.cache` for pip
  cache mount + uv  the same with `uv pip install --system` (the blog's best)
  cacheproxy        layers, pip from a cacheproxy (no cache mount)
  cacheproxy + uv   layers, uv from a cacheproxy (no cache mount; uv's scratch on a tmpfs)
  cacheproxy + uv --no-cache   the same, uv's scratch in the layer (`--no-cache`)
  cacheproxy + uv + cache mount   both (not in the blog post)

Each is measured as: fresh (builder cache and image removed; the proxy's cache empty),
rebuild (an app source file changed), add dependency (django-debug-toolbar added to
requirements.txt), and new CI runner (builder cache and image removed again, while the proxy,
a long-lived service, keeps its cache: the cache mount dies with the builder cache).

Every build reaches the index only through benchmarks/relay.py, a throttled link
(--latency-ms per request, one shared --mbps line) in front of --upstream (the default
upstream unless given); the relay's body bytes per build are the "upstream MB". The
requirements (../shared/workloads/django-app.txt without django-debug-toolbar) are pinned once
through the relay for Python 3.11 on manylinux, and django-debug-toolbar pinned against them,
so all variants install the same files. Before the measured builds, one untimed pass fills the
relay's page memory and file store, so no measured build waits on the real upstream.

The builds run on a private engine (../shared/docker/start-dockerd with --docker-work), since
`docker builder prune -af` would empty any other user's build cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.suite import (  # noqa: E402
    WORKLOADS,
    Proxy,
    RelayProcess,
    client_env,
    log,
    uv_bin,
    versions,
)
from cacheproxy.config import default_upstream  # noqa: E402

DOCKER_SCRIPTS = REPO.parent / "shared" / "docker"
DOCKER = "/usr/bin/docker"  # the CLI that matches the engine and does BuildKit
BASE_IMAGE = "local/python:bookworm"
ADDED = "django-debug-toolbar"
STEPS = ["fresh", "rebuild", "add dependency", "new CI runner"]

HEAD = f"""\
ARG BASE={BASE_IMAGE}
FROM $BASE
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore UV_LINK_MODE=copy
RUN mkdir -p /code
WORKDIR /code
"""
TAIL = 'RUN python -c "import django"\n'
PIP = "ARG PIP_INDEX_URL\n"
UV = "ARG UV_DEFAULT_INDEX\n"
MOUNT = "--mount=type=cache,target=/root/.cache,id=pip"
TMPFS = "--mount=type=tmpfs,target=/root/.cache"
REQS = "COPY requirements.txt /code/requirements.txt\n"
ALL = "COPY . /code/\n"

# name -> (Dockerfile body, index: "relay" or "proxy")
VARIANTS: dict[str, tuple[str, str]] = {
    "naive": (PIP + ALL + "RUN pip install -r requirements.txt\n", "relay"),
    "layers": (PIP + REQS + "RUN pip install -r requirements.txt\n" + ALL, "relay"),
    "cache mount": (PIP + REQS + f"RUN {MOUNT} pip install -r requirements.txt\n" + ALL, "relay"),
    "cache mount + uv": (
        UV + REQS + f"RUN {MOUNT} uv pip install --system -r requirements.txt\n" + ALL,
        "relay",
    ),
    "cacheproxy": (
        PIP + REQS + "RUN pip install --no-cache-dir -r requirements.txt\n" + ALL,
        "proxy",
    ),
    # uv unpacks each wheel into its cache before copying it into site-packages: a tmpfs there
    # keeps that scratch out of the image layer and dies with the step (nothing is cached).
    "cacheproxy + uv": (
        UV + REQS + f"RUN {TMPFS} uv pip install --system -r requirements.txt\n" + ALL,
        "proxy",
    ),
    # the same with the scratch on the layer's filesystem
    "cacheproxy + uv --no-cache": (
        UV + REQS + "RUN uv pip install --system --no-cache -r requirements.txt\n" + ALL,
        "proxy",
    ),
    # Not in the blog: both caches, to see what each one saves.
    "cacheproxy + uv + cache mount": (
        UV + REQS + f"RUN {MOUNT} uv pip install --system -r requirements.txt\n" + ALL,
        "proxy",
    ),
}

APP = {
    "manage.py": """\
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
""",
    "app/__init__.py": "",
    "app/settings.py": """\
SECRET_KEY = "benchmark"
DEBUG = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.staticfiles", "app"]
ROOT_URLCONF = "app.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/db.sqlite3"}}
STATIC_URL = "/static/"
""",
    "app/urls.py": """\
from django.urls import path

from app.views import index

urlpatterns = [path("", index)]
""",
    "app/views.py": """\
from django.http import HttpResponse


def index(request):
    return HttpResponse("hello")
""",
}


# -- docker ----------------------------------------------------------------------------------


class Engine:
    """A private dockerd (its own work dir), so pruning its builder cache touches nobody else's."""

    def __init__(self, work: str) -> None:
        env = dict(os.environ, DOCKER_WORK=work)
        out = subprocess.run(
            [DOCKER_SCRIPTS / "start-dockerd"], env=env, capture_output=True, text=True
        )
        if out.returncode != 0:
            raise SystemExit(f"start-dockerd failed:\n{out.stderr}")
        host = out.stdout.strip().split("=", 1)[1]
        self.env = {**client_env(), "DOCKER_HOST": host, "DOCKER_BUILDKIT": "1"}
        made = subprocess.run(
            [DOCKER_SCRIPTS / "make-base-image", BASE_IMAGE], env=self.env, capture_output=True
        )
        if made.returncode != 0:
            raise SystemExit(f"make-base-image failed:\n{made.stderr.decode()[-3000:]}")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise SystemExit(f"docker {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result

    def forget(self, tag: str) -> None:
        """A new CI runner: no image, no build cache (cache mounts included)."""
        self.run("image", "rm", "-f", tag, check=False)
        self.run("builder", "prune", "-af")

    def build(self, context: Path, tag: str, index_arg: str, index: str, logfile: Path) -> float:
        started = time.perf_counter()
        result = self.run(
            "build", "--network=host", "--progress=plain", "--build-arg",
            f"{index_arg}={index}", "-t", tag, str(context), check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        self.last_log = result.stderr
        with logfile.open("a") as fh:
            fh.write(f"\n=== docker build ({elapsed:.1f}s) rc={result.returncode}\n")
            fh.write(result.stderr)
        if result.returncode != 0:
            raise SystemExit(f"docker build failed, see {logfile}:\n{result.stderr[-3000:]}")
        return elapsed

    def info(self) -> dict:
        def inside(cmd: str) -> str:
            out = self.run("run", "--rm", "--network=host", BASE_IMAGE, "sh", "-c", cmd)
            return out.stdout.strip()

        return {
            "docker engine": self.run("version", "-f", "{{.Server.Version}}").stdout.strip(),
            "image python": inside("python --version"),
            "image pip": inside("pip --version").split(" from ")[0],
            "image uv": inside("uv --version"),
        }


# -- the requirements ------------------------------------------------------------------------


def compile_pins(source: Path, out: Path, relay: RelayProcess, *extra: str) -> Path:
    result = subprocess.run(
        [
            uv_bin(), "pip", "compile", str(source), "--python-version", "3.11",
            "--python-platform", "x86_64-manylinux_2_36", "--index-url", relay.url,
            "--no-cache", "--no-header", "--no-annotate", "--quiet", "-o", str(out), *extra,
        ],
        env=client_env(), capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"uv pip compile failed:\n{result.stderr}")
    return out


def pin(relay: RelayProcess, workdir: Path, repin: bool) -> tuple[Path, Path]:
    """(base pins, base pins + django-debug-toolbar), the rest unchanged by the addition."""
    base, added = workdir / "docker-base.pinned.txt", workdir / "docker-added.pinned.txt"
    if base.exists() and added.exists() and not repin:
        return base, added
    log("pinning the requirements through the relay")
    names = (WORKLOADS / "django-app.txt").read_text().split()
    source = workdir / "docker-base.in"
    source.write_text("\n".join(n for n in names if n != ADDED) + "\n")
    compile_pins(source, base, relay)
    more = workdir / "docker-added.in"
    more.write_text(f"-r {base}\n{ADDED}\n")
    compile_pins(more, added, relay, "-c", str(base))
    return base, added


def write_app(context: Path, dockerfile: str, requirements: Path) -> None:
    for name, text in APP.items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(text)
    (context / "Dockerfile").write_text(HEAD + dockerfile + TAIL)
    (context / ".dockerignore").write_text("Dockerfile\n")
    shutil.copy(requirements, context / "requirements.txt")


def prime(engine: Engine, relay: RelayProcess, added: Path, workdir: Path) -> None:
    """Fill the relay's page memory (one per Accept header: pip, uv, the proxy) and file store."""
    log("priming the relay (untimed): pip, uv and a proxy, inside the base image")
    mount = ["-v", f"{added}:/r.txt:ro"]
    pip = "pip download -q --no-deps -d /tmp/d -r /r.txt"
    uv = "uv pip install --system --no-cache -q -r /r.txt"
    env = ["-e", f"PIP_INDEX_URL={relay.url}", "-e", f"UV_DEFAULT_INDEX={relay.url}"]
    engine.run(
        "run", "--rm", "--network=host", *mount, *env, BASE_IMAGE, "sh", "-c", f"{pip} && {uv}"
    )
    with tempfile.TemporaryDirectory(prefix="docker-bench-prime-", dir=workdir) as cache:
        proxy = Proxy(Path(cache), relay.url)
        try:
            env = ["-e", f"PIP_INDEX_URL={proxy.url}", "-e", f"UV_DEFAULT_INDEX={proxy.url}"]
            engine.run(
                "run",
                "--rm",
                "--network=host",
                *mount,
                *env,
                BASE_IMAGE,
                "sh",
                "-c",
                f"{uv} && {pip}",
            )
        finally:
            proxy.stop()


# -- the experiment --------------------------------------------------------------------------


def measure_variant(name, engine, relay, base, added, args) -> dict:
    dockerfile, via = VARIANTS[name]
    index_arg = "UV_DEFAULT_INDEX" if "UV_DEFAULT_INDEX" in dockerfile else "PIP_INDEX_URL"
    tag = "bench/" + name.replace(" + ", "-").replace(" --", "-").replace(" ", "-")
    slug = tag.split("/")[1]
    logfile = args.workdir / "logs" / f"{slug}.build.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.write_text("")
    rows: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        context = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="docker-app-")))
        write_app(context, dockerfile, base)
        proxy = None
        index = relay.url
        if via == "proxy":
            cache = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="docker-bench-cache-", dir=args.workdir)
            )
            proxy = Proxy(Path(cache), relay.url)  # one long-lived proxy: a service
            stack.callback(
                lambda: save_proxy_log(proxy, args.workdir / "logs" / f"{slug}.proxy.log")
            )
            stack.callback(proxy.stop)
            index = proxy.url
        for step in STEPS:
            if step in ("fresh", "new CI runner"):
                engine.forget(tag)
            elif step == "rebuild":
                views = context / "app" / "views.py"
                views.write_text(views.read_text() + "\n# a change to the app's source\n")
            elif step == "add dependency":
                shutil.copy(added, context / "requirements.txt")
            relay.reset()
            seen = len(proxy.process.log) if proxy else 0
            log(f"{name}: {step}")
            seconds = engine.build(context, tag, index_arg, index, logfile)
            stats = relay.stats()
            row = {
                "seconds": round(seconds, 2),
                "upstream_bytes": stats["body_bytes"],
                "upstream_file_bytes": stats["file_bytes"],
                "upstream_requests": stats["requests"],
            }
            row.update(install_step(engine.last_log))
            if proxy is not None:
                row["proxy_outcomes"] = outcomes(proxy.process.log[seen:])
            log(f"  {row}")
            rows[step] = row
        engine.forget(tag)
    return rows


def install_step(buildkit_log: str) -> dict:
    """The install RUN step's own seconds (None when it came from the build cache) and uv's
    Resolved/Prepared/Installed lines: where the time went."""
    step = re.search(r"^#(\d+) \[[^\]]*\] RUN .*pip install", buildkit_log, re.M)
    if not step:
        return {"install_step_s": None}
    done = re.search(rf"^#{step[1]} DONE ([\d.]+)s", buildkit_log, re.M)
    phases = re.findall(
        rf"^#{step[1]} [\d.]+ ((?:Resolved|Prepared|Installed) .*)$", buildkit_log, re.M
    )
    return {"install_step_s": float(done[1]) if done else None, "installer": phases}


def outcomes(lines: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines:
        match = re.search(r"access: (\w+) \S+ \d+ (\S+) ", line)
        if match:
            counts[f"{match[1]} {match[2]}"] = counts.get(f"{match[1]} {match[2]}", 0) + 1
    return counts


def save_proxy_log(proxy: Proxy, path: Path) -> None:
    path.write_text("".join(proxy.process.log))


def summarize(runs: list[dict]) -> dict:
    """Median seconds (whole build and install step) over runs per variant and step; bytes,
    outcomes and the installer's lines from the first run."""
    out: dict = {}
    for variant in runs[0]:
        out[variant] = {}
        for step in STEPS:
            row = dict(runs[0][variant][step])
            row["seconds"] = round(statistics.median(r[variant][step]["seconds"] for r in runs), 2)
            row["raw_seconds"] = [r[variant][step]["seconds"] for r in runs]
            steps = [r[variant][step].get("install_step_s") for r in runs]
            if None not in steps:
                row["install_step_s"] = round(statistics.median(steps), 2)
            out[variant][step] = row
    return out


def print_table(results: dict) -> None:
    meta, table = results["meta"], results["variants"]
    throttle = meta["throttle"]
    print(
        f"\nDocker builds, django-app ({meta['packages']} pinned packages, "
        f"{meta['set_mib']:.0f} MiB of files; + {ADDED}); relay {throttle['latency_ms']:g} ms "
        f"per request, {throttle['mbps']:g} Mbit/s; {meta['runs']} run(s), median\n"
    )
    naive = table.get("naive")
    head = "| variant | " + " | ".join(STEPS) + " |"
    print(head)
    print("| --- " * (len(STEPS) + 1) + "|")
    for variant, steps in table.items():
        cells = []
        for step in STEPS:
            seconds = steps[step]["seconds"]
            cell = f"{seconds:.1f} s"
            if naive and variant != "naive":
                cell += f" ({naive[step]['seconds'] / seconds:.1f}x)"
            cells.append(cell)
        print(f"| {variant} | " + " | ".join(cells) + " |")
    print("\nupstream MB per build (through the relay)\n")
    print(head)
    print("| --- " * (len(STEPS) + 1) + "|")
    for variant, steps in table.items():
        cells = [
            f"{steps[s]['upstream_bytes'] / 1e6:.1f} ({steps[s]['upstream_requests']} req)"
            for s in STEPS
        ]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    print("\nthe install step's own seconds (BuildKit's timing; - : from the build cache)\n")
    print(head)
    print("| --- " * (len(STEPS) + 1) + "|")
    for variant, steps in table.items():
        cells = [
            "-" if steps[s].get("install_step_s") is None else f"{steps[s]['install_step_s']:.1f}"
            for s in STEPS
        ]
        print(f"| {variant} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", default=None, help="index behind the relay")
    parser.add_argument("--latency-ms", type=float, default=40)
    parser.add_argument("--mbps", type=float, default=100)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cacheproxy-docker-bench"))
    parser.add_argument("--docker-work", default="/tmp/dw-dbuilds", help="the private engine")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--runs", type=int, default=1, help="passes over all variants")
    parser.add_argument("--repin", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--report", action="store_true", help="print the table of --json")
    args = parser.parse_args()
    if args.report:
        print_table(json.loads(args.json.read_text()))
        return
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    chosen = [v.strip() for v in args.variants.split(",")]
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants: {', '.join(sorted(unknown))}")

    engine = Engine(args.docker_work)
    relay = RelayProcess(
        args.upstream or default_upstream(), args.latency_ms, args.mbps,
        args.workdir / "relay-store",
    )  # fmt: skip
    try:
        base, added = pin(relay, args.workdir, args.repin)
        prime(engine, relay, added, args.workdir)
        relay.reset()
        runs = []
        for number in range(args.runs):
            log(f"run {number + 1}/{args.runs}")
            runs.append({v: measure_variant(v, engine, relay, base, added, args) for v in chosen})
    finally:
        relay.stop()
    pinned = [line for line in added.read_text().splitlines() if "==" in line]
    # the set's files, each fetched once (the least any fresh build took)
    fresh_bytes = [runs[0][v]["fresh"]["upstream_file_bytes"] for v in chosen]
    results = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "throttle": {"latency_ms": args.latency_ms, "mbps": args.mbps},
            "runs": args.runs,
            "packages": len(pinned),
            "set_mib": min(fresh_bytes) / 2**20,
            "requirements": pinned,
            **versions(),
            **engine.info(),
        },
        "variants": summarize(runs),
    }
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
