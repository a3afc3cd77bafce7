"""The install rules as pure code: a page, the clock and the rules give the visible page."""

import math

from cacheproxy.config import Config, parse_timestamp
from cacheproxy.pages.rules import Rules
from cacheproxy.protocol.page import ProjectPage

NOW = parse_timestamp("2025-06-01T12:00:00Z")


def page(files, versions):
    data = {
        "meta": {"api-version": "1.1"},
        "name": "demo",
        "versions": versions,
        "files": [
            {"filename": name, "url": name, "hashes": {}, **({"upload-time": when} if when else {})}
            for name, when in files
        ],
    }
    return ProjectPage(data, {name: f"https://files.example.org/{name}" for name, _ in files})


def rules(**settings):
    return Rules.from_settings(Config(**settings))


DEMO = page(
    [
        ("demo-1.0.tar.gz", "2024-01-01T00:00:00Z"),
        ("demo-1.0-py3-none-any.whl", "2024-01-01T00:00:00Z"),
        ("demo-2.0rc1-py3-none-any.whl", "2025-06-01T10:00:00.123456Z"),
        ("demo-2.0-py3-none-any.whl", None),
    ],
    ["0.9", "1.0", "2.0rc1", "2.0"],
)


def visible_names(result):
    return [f["filename"] for f in result.page.data["files"]]


def test_no_rules_is_the_page_itself():
    result = rules().visible(DEMO, NOW)
    assert result.page is DEMO and not result.hidden and result.changes_at == math.inf
    assert not rules().active


def test_cooldown_hides_young_and_undated_files_and_their_versions():
    result = rules(min_release_age=86400).visible(DEMO, NOW)
    assert visible_names(result) == ["demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl"]
    # 0.9 has no file at all: left as the index gave it.
    assert result.page.data["versions"] == ["0.9", "1.0"]
    young = result.hidden["demo-2.0rc1-py3-none-any.whl"]
    assert young.rule == "min-release-age"
    assert result.changes_at == young.visible_at == parse_timestamp("2025-06-02T10:00:00.123456Z")
    assert result.hidden["demo-2.0-py3-none-any.whl"].rule == "unknown-upload-time"
    assert DEMO.data["files"][3]["filename"] == "demo-2.0-py3-none-any.whl"  # not changed
    later = rules(min_release_age=86400).visible(DEMO, young.visible_at)
    assert "demo-2.0rc1-py3-none-any.whl" in visible_names(later)


def test_undated_files_shown_when_asked():
    result = rules(min_release_age=86400, unknown_upload_time="show").visible(DEMO, NOW)
    assert "demo-2.0-py3-none-any.whl" in visible_names(result)


def test_exempt_project_and_deny_specifier_with_prereleases():
    exempt = rules(min_release_age=86400, release_age_exempt=("demo",))
    assert len(visible_names(exempt.visible(DEMO, NOW))) == 4
    denied = rules(deny=("demo>=2.0rc1",)).visible(DEMO, NOW)
    assert visible_names(denied) == ["demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl"]
    assert {h.rule for h in denied.hidden.values()} == {"deny"}
    assert denied.changes_at == math.inf  # waiting never lifts a deny rule


def test_project_refusals():
    assert "denied" in rules(deny=("demo",)).refusal("demo")
    assert rules(deny=("demo<1",)).refusal("demo") is None
    allow = rules(allow=("other", "Demo==1.0"))
    assert allow.refusal("demo") is None and "allow list" in allow.refusal("third")
    assert visible_names(allow.visible(DEMO, NOW)) == [
        "demo-1.0.tar.gz",
        "demo-1.0-py3-none-any.whl",
    ]


def test_rules_in_force_are_described():
    lines = rules(min_release_age=7 * 86400, exclude_newer=NOW, deny=("x",)).describe()
    assert lines == [
        "min-release-age: files younger than 7d are hidden",
        "exclude-newer: files uploaded from 2025-06-01T12:00:00Z on are hidden",
        "deny: x",
        "unknown-upload-time: files of unknown upload time are hidden",
    ]
