"""Which of cacheproxy's functions and modules one real request goes through.

Starts the tests' fake upstream and a proxy in this process, then traces a cold page request
and a cold file request (worker threads included) and prints, for each, the functions,
modules and package switches in the order they were first entered:

    python benchmarks/call_trace.py [--lookahead] [--show]

A reader following a request reads the modules listed; the fewer, the easier the walk.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402

from cacheproxy.config import Config  # noqa: E402
from cacheproxy.http.app import create_app  # noqa: E402
from tests.fakes.upstream import UpstreamIndex, make_app  # noqa: E402
from tests.fakes.wheels import build_wheel  # noqa: E402

_recording = False
_calls: list[tuple[str, str]] = []
_edges: set[tuple[str, str]] = set()


def _profile(frame, event, arg):
    if event != "call" or not _recording:
        return
    module = frame.f_globals.get("__name__", "")
    if module.startswith("cacheproxy"):
        _calls.append((module, frame.f_code.co_qualname))
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        if caller.startswith("cacheproxy") and caller != module:
            _edges.add((caller, module))


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else module


def summary(name: str, calls: list[tuple[str, str]], show: bool) -> dict:
    functions = list(dict.fromkeys(calls))
    modules = list(dict.fromkeys(module for module, _ in calls))
    pairs = zip(calls, calls[1:], strict=False)
    switches = sum(1 for a, b in pairs if _package(a[0]) != _package(b[0]))
    # The modules a reader walks through: those that hand the request on to another module
    # of ours. The others are looked up on the way (a name check, an encoder), not walked.
    walked = [module for module in modules if any(a == module for a, _ in _edges)]
    print(
        f"\n## {name}: {len(functions)} functions, {len(modules)} modules "
        f"({len(walked)} handing on), {switches} package switches"
    )
    print("walked:", ", ".join(walked))
    for module in modules:
        names = [qual for mod, qual in functions if mod == module]
        print(f"- {module} ({len(names)}): {', '.join(names) if show else ''}".rstrip(": "))
    return {
        "functions": len(functions),
        "modules": len(modules),
        "walked": len(walked),
        "switches": switches,
    }


async def main(lookahead: bool, show: bool) -> None:
    global _recording
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        wheel = build_wheel(root, "tinyalpha", "1.0", payload_size=256 * 1024)
        index = UpstreamIndex()
        index.add_wheel(wheel)
        upstream = TestServer(make_app(index), host="127.0.0.1")
        await upstream.start_server()
        config = Config(
            cache_dir=root / "cache",
            upstream=str(upstream.make_url("/simple/")),
            lookahead=lookahead,
        )
        proxy = TestServer(create_app(config), host="127.0.0.1")
        await proxy.start_server()
        base = str(proxy.make_url("/simple/"))
        async with ClientSession() as session:
            async with session.get(base) as response:  # warm the app: the root list only
                await response.read()
            results = {}
            for name, url, headers in [
                (
                    "cold page GET /simple/tinyalpha/",
                    base + "tinyalpha/",
                    {"Accept": "application/vnd.pypi.simple.v1+json"},
                ),
                (
                    f"cold file GET /simple/tinyalpha/{wheel.name}",
                    base + f"tinyalpha/{wheel.name}",
                    {},
                ),
                (
                    "warm page GET /simple/tinyalpha/",
                    base + "tinyalpha/",
                    {"Accept": "application/vnd.pypi.simple.v1+json"},
                ),
                (
                    "hot page GET /simple/tinyalpha/",
                    base + "tinyalpha/",
                    {"Accept": "application/vnd.pypi.simple.v1+json"},
                ),
            ]:
                _calls.clear()
                _edges.clear()
                _recording = True
                async with session.get(url, headers=headers) as response:
                    assert response.status == 200, response.status
                    await response.read()
                await asyncio.sleep(0.2)  # what finishes behind the answer (the commit)
                _recording = False
                results[name] = summary(name, list(_calls), show)
        await proxy.close()
        await upstream.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookahead", action="store_true", help="keep the lookahead on")
    parser.add_argument("--show", action="store_true", help="name each module's functions")
    args = parser.parse_args()
    sys.setprofile(_profile)
    threading.setprofile(_profile)
    asyncio.run(main(args.lookahead, args.show))
