"""The install rules' settings from flags, environment and TOML (per named index too), and
bad values as one line with exit code 2."""

import re
from pathlib import Path

import pytest

from cacheproxy.config import load_config, parse_timestamp
from cacheproxy.errors import ConfigError
from cacheproxy.pages.rules import Rules
from tests.test_cli import run_cli


def test_every_source_gives_the_same_rules(tmp_path):
    config_file = tmp_path / "cacheproxy.toml"
    config_file.write_text(
        'min-release-age = "7d"\n'
        'release-age-exempt = ["Urgent_Fix"]\n'
        "exclude-newer = 2025-03-01\n"
        'deny = ["evilpkg", "requests>=2.99"]\n'
        "[indexes.internal]\n"
        'url = "https://pkgs.example.com/simple/"\n'
        'min-release-age = "0"\n'
        'allow = ["ourlib"]\n'
    )
    config = load_config({}, {"CACHEPROXY_UNKNOWN_UPLOAD_TIME": "show"}, config_file)
    assert config.min_release_age == 7 * 86400
    assert config.release_age_exempt == ("urgent-fix",)
    assert config.exclude_newer == parse_timestamp("2025-03-01T00:00:00Z") + 86400
    assert config.deny == ("evilpkg", "requests>=2.99")
    assert config.unknown_upload_time == "show"
    internal = config.for_index(config.indexes[0])
    assert internal.min_release_age == 0 and internal.allow == ("ourlib",)
    assert internal.deny == config.deny  # not set for the index: the main index's rule
    flags = {"deny": ["foo==1.2.3", "bar"], "min_release_age": "36h"}
    environ = {"CACHEPROXY_DENY": "baz; qux<2", "CACHEPROXY_EXCLUDE_NEWER": "2025-01-01T10:00Z"}
    config = load_config(flags, environ)
    assert config.deny == ("foo==1.2.3", "bar") and config.min_release_age == 36 * 3600
    assert config.exclude_newer == parse_timestamp("2025-01-01T10:00:00+00:00")
    assert load_config({}, environ).deny == ("baz", "qux<2")
    assert Rules.from_settings(config).active


def test_bad_index_rule_names_the_index(tmp_path):
    config_file = tmp_path / "cacheproxy.toml"
    config_file.write_text(
        '[indexes.internal]\nurl = "https://x.example/simple/"\ndeny = ["a b"]\n'
    )
    with pytest.raises(ConfigError, match="index 'internal' deny"):
        load_config({}, {}, config_file)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--min-release-age", "a week"], {}, "--min-release-age"),
        (["--exclude-newer", "last tuesday"], {}, "--exclude-newer"),
        (["--deny", "requests>>2"], {}, "--deny"),
        (["--allow", "ok", "--allow", "foo[extra]"], {}, "--allow"),
        (["--release-age-exempt", "no/such"], {}, "--release-age-exempt"),
        (["--unknown-upload-time", "maybe"], {}, "--unknown-upload-time"),
        ([], {"CACHEPROXY_DENY": "x; ==1"}, "CACHEPROXY_DENY"),
    ],
)
def test_bad_rule_values_exit_2_with_one_line(args, env, needle, tmp_path):
    result = run_cli("serve", "--cache-dir", str(tmp_path), *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_every_recipe_in_the_policy_page_loads(tmp_path):
    text = (Path(__file__).resolve().parent.parent / "docs" / "policy.md").read_text()
    examples = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(examples) == 3
    for number, example in enumerate(examples):
        file = tmp_path / f"recipe{number}.toml"
        file.write_text(example)
        config = load_config({}, {}, file)
        assert Rules.from_settings(config).active or all(
            Rules.from_settings(config.for_index(index)).active for index in config.indexes
        )
