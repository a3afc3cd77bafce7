"""The README agrees with the command line it describes, and no recipe installs an unrelated
project that happens to be called cacheproxy on the public index."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from cacheproxy.cli.main import main, serve

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_settings() -> dict[str, str]:
    """flag -> its default as the README's settings table gives it."""
    defaults = {}
    for line in README.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`--"):
            continue
        flags = re.findall(r"`(--[a-z-]+)`", cells[0])
        values = [cells[1]] * len(flags)
        if len(flags) > 1 and cells[1].count(",") == len(flags) - 1:
            values = [value.strip() for value in cells[1].split(",")]
        defaults.update(zip(flags, values, strict=True))
    return defaults


def option_for(flag: str) -> click.Option:
    return next(p for p in serve.params if flag in (*p.opts, *p.secondary_opts))


def help_default(option: click.Option) -> str | None:
    match = re.search(r"\(default:? ([^;)]+)", option.help or "")
    return match.group(1).strip() if match else None


def test_the_settings_table_gives_the_defaults_serve_help_gives():
    table = readme_settings()
    assert len(table) >= 15
    for flag, readme_default in table.items():
        stated = help_default(option_for(flag))
        if readme_default == "none":
            assert stated is None, f"{flag}: README says none, --help says {stated}"
        else:
            assert stated is not None, f"{flag}: --help gives no default (README: {readme_default})"
            assert stated in readme_default.replace("`", ""), (flag, stated, readme_default)


def test_the_command_list_names_every_command():
    listed = set(re.findall(r"^- `cacheproxy ([a-z]+)", README, re.M))
    assert listed == set(main.commands)


def test_no_recipe_installs_the_unrelated_cacheproxy_distribution():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] != "cacheproxy"
    assert project["scripts"]["cacheproxy"] == "cacheproxy.cli.main:main"
    places = [ROOT / "README.md", ROOT / "Dockerfile", *ROOT.glob("docs/*.md")]
    places += [*ROOT.glob("systemd/*"), *ROOT.glob("examples/**/Dockerfile")]
    for path in places:
        text = path.read_text()
        assert not re.search(r"pip install(?: -{1,2}\S+)* cacheproxy(?![-\w])", text), path


def test_the_build_arguments_are_named_as_the_installers_read_them():
    # One set of names across the README, the deployment guide, compose and the images.
    for path in ("README.md", "docs/deployment.md", "docker-compose.yml", "Dockerfile"):
        text = (ROOT / path).read_text()
        assert not re.search(r"(?<![A-Z_])INDEX_URL\b", text), path
