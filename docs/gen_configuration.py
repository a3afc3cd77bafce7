"""Writes docs/configuration.md from the CLI's own options and the Config defaults, so the
reference cannot drift from the code (tests/test_docs.py fails when it is out of date).

    .venv/bin/python docs/gen_configuration.py
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from cacheproxy.cli.main import serve
from cacheproxy.config import SETTINGS, Config, env_name, flag_name

OUTPUT = Path(__file__).with_name("configuration.md")
# Defaults that depend on the machine or a library are described, not printed.
DESCRIBED_DEFAULTS = {
    "cache_dir": "the user cache dir (`~/.cache/cacheproxy` on Linux)",
    "upstream": "the public Python package index",
    "public_url": "the request's Host header",
    "file_hosts": "any host the upstream's pages name",
}
HEADER = """\
# Configuration reference

Generated from the code by `docs/gen_configuration.py`; do not edit by hand.

Every setting can be given as a flag of `cacheproxy serve`, an environment variable, or a key in
a TOML file (`--config FILE` or `CACHEPROXY_CONFIG=FILE`; keys are spelled like the flag without
its dashes, `page-ttl` or `page_ttl`). A flag beats the environment, which beats the file, which
beats the default. A bad value stops the proxy with one line that names where it came from, and
exit code 2.

Sizes take units (`500MB`, `20GiB`), durations too (`30s`, `10m`, `1h`, `2d`; a bare number is
seconds).

| flag | environment | TOML key | default | meaning |
| --- | --- | --- | --- | --- |
"""
FOOTER = """
## Named indexes in the file

`indexes` is a table in the TOML file; each entry is a URL or a table of its own:

```toml
[indexes]
cpu = "https://wheels.example.org/whl/cpu/"

[indexes.internal]
url = "https://pkgs.example.com/simple/"
page_ttl = "1m"
negative_ttl = "30s"
max_size = "5GiB"
username = "ci"
password_env = "INTERNAL_INDEX_TOKEN"
```

See [indexes.md](indexes.md). A named index may have its own `shared_cache` too.
Every install rule (`min_release_age`, `release_age_exempt`, `exclude_newer`, `deny`,
`allow`, `unknown_upload_time`) may be set per named index too; a rule not set for the index
is the main index's. See [policy.md](policy.md).

## The shared cache's endpoint, region and keys

`shared_cache` names the bucket; where it is and how to sign in come from the standard AWS
variables: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (an `http://` endpoint works as it is),
`AWS_REGION` or `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
`AWS_SESSION_TOKEN`. Without keys, the SDK's own chain is used (profile, instance role, web
identity). The file may give them as `shared-cache-endpoint`, `shared-cache-region`,
`shared-cache-access-key-id` and `shared-cache-secret-access-key`; the variables beat the file.
Keys are never logged or shown.

## Example file

```toml
host = "0.0.0.0"
port = 3145
cache-dir = "/var/cache/cacheproxy"
max-size = "50GiB"
page-ttl = "10m"
log-format = "json"
auth-tokens-file = "/etc/cacheproxy/tokens"
```
"""


def _default(name: str) -> str:
    if name in DESCRIBED_DEFAULTS:
        return DESCRIBED_DEFAULTS[name]
    field = next(f for f in dataclasses.fields(Config) if f.name == name)
    value = field.default
    if value in (None, ()):
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if name == "max_size":
        return f"`{value // 1024**3}GiB`"
    if name == "memory_budget":
        return f"`{value // 1024**2}MiB`"
    if isinstance(value, float):
        for unit, seconds in (("h", 3600), ("m", 60)):
            if value >= seconds and value % seconds == 0:
                return f"`{value / seconds:g}{unit}`"
        return f"`{value:g}s`"
    return f"`{value}`"


def _meaning(name: str) -> str:
    option = next(p for p in serve.params if p.name == name)
    text = re.sub(r"\s*\[env: [A-Z_]+\]$", "", option.help or "")
    return text.replace("|", "\\|")


def _flags(name: str) -> str:
    option = next(p for p in serve.params if p.name == name)
    return "/".join([*option.opts, *option.secondary_opts]) or flag_name(name)


def render() -> str:
    rows = [
        f"| `{_flags(name)}` | `{env_name(name)}` | `{name.replace('_', '-')}` "
        f"| {_default(name)} | {_meaning(name)} |"
        for name in SETTINGS
    ]
    config_row = "| `--config` | `CACHEPROXY_CONFIG` | | none | the TOML file to read |"
    return HEADER + "\n".join([*rows, config_row]) + "\n" + FOOTER


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
