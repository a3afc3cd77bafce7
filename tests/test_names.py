import pytest
from hypothesis import given
from hypothesis import strategies as st

from cacheproxy.errors import InvalidName
from cacheproxy.protocol.names import check_filename, normalize_project


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Django", "django"),
        ("Beta_Helper", "beta-helper"),
        ("zope.interface", "zope-interface"),
        ("a__b--c..d", "a-b-c-d"),
        ("x", "x"),
    ],
)
def test_normalize(raw, normal):
    assert normalize_project(raw) == normal


@pytest.mark.parametrize(
    "raw", ["", "..", "-lead", "trail-", "a/b", "a b", "%2e%2e", "é", "a" * 300, "a\x00b"]
)
def test_invalid_project_names(raw):
    with pytest.raises(InvalidName):
        normalize_project(raw)


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "a/b", "a\\b", "x\x00", "x\n", "a" * 256]
)
def test_invalid_filenames(name):
    with pytest.raises(InvalidName):
        check_filename(name)


@given(st.text(max_size=300))
def test_accepted_names_never_escape_a_directory(text):
    try:
        normal = normalize_project(text)
    except InvalidName:
        return
    assert "/" not in normal and "\\" not in normal and ".." not in normal
    assert normal == normal.lower()


@pytest.mark.parametrize("control", ["\n", "\r", "\x00", "\r\n"])
def test_control_characters_at_the_end_are_refused(control):
    with pytest.raises(InvalidName):
        normalize_project("alpha" + control)
    with pytest.raises(InvalidName):
        check_filename("alpha-1.0.tar.gz" + control)
