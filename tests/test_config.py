from pathlib import Path

import pytest

from cacheproxy.config import Config, load_config, parse_duration, parse_size
from cacheproxy.errors import ConfigError


def test_defaults_name_no_host_but_come_from_constants(tmp_path):
    config = load_config({}, {})
    assert config.host == "127.0.0.1"
    assert config.upstream.startswith("https://") and config.upstream.endswith("/simple/")
    assert config.page_ttl == 600
    assert "cacheproxy" in str(config.cache_dir)


def test_precedence_flag_over_env_over_file(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('port = 1111\npage-ttl = "1h"\nmax_size = "1GiB"\nhost = "0.0.0.0"\n')
    env = {"CACHEPROXY_PORT": "2222", "CACHEPROXY_PAGE_TTL": "30s"}
    config = load_config({"port": "3333"}, env, file)
    assert config.port == 3333
    assert config.page_ttl == 30
    assert config.max_size == 1024**3
    assert config.host == "0.0.0.0"


def test_config_file_from_environment(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text("offline = true\n")
    assert load_config({}, {"CACHEPROXY_CONFIG": str(file)}).offline is True


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"port": "abc"}, {}, "--port"),
        ({}, {"CACHEPROXY_PORT": "70000"}, "CACHEPROXY_PORT"),
        ({"upstream": "ftp://x/"}, {}, "--upstream"),
        ({"max_size": "lots"}, {}, "--max-size"),
        ({"page_ttl": "-1"}, {}, "--page-ttl"),
        ({"offline": "maybe"}, {}, "--offline"),
        ({"log_level": "loud"}, {}, "--log-level"),
    ],
)
def test_bad_values_name_their_source(flags, env, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(flags, env)
    assert "\n" not in str(info.value)


def test_unknown_key_in_file_is_named(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="'prot'"):
        load_config({}, {}, file)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, {}, tmp_path / "nope.toml")
    broken = tmp_path / "b.toml"
    broken.write_text("port = [\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config({}, {}, broken)


def test_upstream_credentials_are_split_off():
    config = load_config({"upstream": "https://user:s3cret@example.test/simple"}, {})
    assert config.upstream_credentials == ("user", "s3cret")
    assert config.public_upstream == "https://example.test/simple/"
    assert "s3cret" not in str(config.upstream_url)


@pytest.mark.parametrize(
    ("text", "size"), [("20GiB", 20 * 1024**3), ("500MB", 500 * 1000**2), ("1024", 1024), (7, 7)]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600), ("30", 30), ("1h", 3600), (2.5, 2.5)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_cache_dir_expands_user():
    assert load_config({"cache_dir": "~/x"}, {}).cache_dir == Path("~/x").expanduser()


def test_public_url_and_file_hosts_from_every_source(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('public-url = "https://cache.example.org/pypi"\nfile-hosts = ["a.example"]\n')
    config = load_config({}, {}, file)
    assert config.public_url == "https://cache.example.org/pypi/"
    assert config.file_hosts == ("a.example",)
    env = {"CACHEPROXY_FILE_HOSTS": "files.example.org, *.CDN.example.org"}
    assert load_config({}, env, file).file_hosts == ("files.example.org", "*.cdn.example.org")
    flags = {"file_hosts": ["x.example,y.example", "z.example"]}
    assert load_config(flags, env, file).file_hosts == ("x.example", "y.example", "z.example")
    assert load_config({}, {}).public_url is None and load_config({}, {}).file_hosts == ()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"public_url": "ftp://cache.example.org/"}, "--public-url"),
        ({"public_url": "https:///nohost"}, "--public-url"),
        ({"public_url": "https://cache.example.org/?a=b"}, "--public-url"),
        ({"file_hosts": ["https://files.example/"]}, "--file-hosts"),
        ({"file_hosts": ["files.example:8443"]}, "--file-hosts"),
        ({"file_hosts": ["two words"]}, "--file-hosts"),
    ],
)
def test_bad_public_url_and_file_hosts(flags, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(flags, {})
    assert "\n" not in str(info.value)


def test_package_hosts_are_the_upstreams_the_file_hosts_and_the_additions():
    config = load_config(
        {
            "upstream": "https://user:pw@127.0.0.2:8443/simple/",
            "indexes": "vendor=https://vendor.test/simple/",
            "file_hosts": "files.test,*.cdn.test,files-*.odd",
            "intercept_host": "extra.test:4443, [::1]:9443",
        },
        {},
    )
    shown = [str(host) for host in config.package_hosts()]
    assert shown == [
        "127.0.0.2:8443",
        "vendor.test",
        "files.test",
        "*.cdn.test",
        "files-*.odd",
        "extra.test:4443",
        "[::1]:9443",
    ]
    wildcard = config.package_hosts()[3]
    assert wildcard.matches("a.cdn.test", 443) and wildcard.matches("A.B.CDN.TEST.", 443)
    assert not wildcard.matches("cdn.test", 443) and not wildcard.matches("a.cdn.test", 8443)


@pytest.mark.parametrize("bad", ["host:0", "host:70000", "a/b", "https://host/", "[::1"])
def test_a_host_that_is_not_host_or_host_port_is_one_line(bad):
    with pytest.raises(ConfigError, match="intercept-host"):
        load_config({"intercept_host": bad}, {})


def test_the_transparent_face_is_on_unless_turned_off():
    assert Config().transparent is True
    assert load_config({}, {"CACHEPROXY_TRANSPARENT": "false"}).transparent is False
    assert load_config({"tunnel": "git.test"}, {}).tunnel[0].host == "git.test"
