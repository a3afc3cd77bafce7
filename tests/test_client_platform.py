"""The client's platform read from its User-Agent, and the wheel and dependencies it implies."""

from __future__ import annotations

from packaging.specifiers import SpecifierSet

from cacheproxy.protocol.client_platform import UNKNOWN, client_platform
from cacheproxy.protocol.requirements import ANY_VERSION, dependencies, likely_wheel
from tests.fakes.wheels import metadata_text
from tests.test_lookahead import LINUX_PIP, WINDOWS_UV

MUSL_UV = (
    'uv/0.5.0 {"python":"3.12.0","implementation":{"name":"CPython","version":"3.12.0"},'
    '"distro":{"name":"Alpine","libc":{"lib":"musl","version":"1.2"}},'
    '"system":{"name":"Linux","release":"6.1"},"cpu":"aarch64"}'
)
MAC_PIP = (
    'pip/25.0 {"python":"3.13.1","implementation":{"name":"CPython","version":"3.13.1"},'
    '"distro":{"name":"macOS","version":"14.2.1"},"system":{"name":"Darwin","release":"23.2"},'
    '"cpu":"arm64"}'
)
NUMPY = [
    "numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "numpy-2.1.0-cp311-cp311-musllinux_1_1_x86_64.whl",
    "numpy-2.1.0-cp311-cp311-win_amd64.whl",
    "numpy-2.1.0-cp312-cp312-win_amd64.whl",
    "numpy-2.1.0-cp312-cp312-musllinux_1_2_aarch64.whl",
    "numpy-2.1.0-cp313-cp313-macosx_14_0_arm64.whl",
    "numpy-2.1.0-cp313-cp313-macosx_10_13_x86_64.whl",
]


def test_each_platform_picks_its_own_wheel():
    picks = [client_platform(ua).best_wheel(NUMPY) for ua in (LINUX_PIP, WINDOWS_UV, MUSL_UV)]
    assert picks == [NUMPY[0], NUMPY[3], NUMPY[4]]
    assert client_platform(MAC_PIP).best_wheel(NUMPY) == NUMPY[5]


def test_a_client_that_says_nothing_gets_pure_wheels_only():
    for user_agent in (None, "curl/8.0", "pip/25.0 {not json", 'pip/25.0 {"python": 3}'):
        assert client_platform(user_agent) == UNKNOWN
    assert UNKNOWN.best_wheel(NUMPY) is None
    assert UNKNOWN.best_wheel([*NUMPY, "six-1.0-py2.py3-none-any.whl"]).startswith("six")


def test_the_newest_final_release_the_specifier_and_python_admit():
    files = [
        {"filename": "a-1.0-py3-none-any.whl"},
        {"filename": "a-2.0-py3-none-any.whl", "requires-python": ">=3.12"},
        {"filename": "a-1.5-py3-none-any.whl", "yanked": "broken"},
        {"filename": "a-1.2-py3-none-any.whl"},
        {"filename": "a-3.0rc1-py3-none-any.whl"},
        {"filename": "a-1.3.tar.gz"},
    ]
    files = {entry["filename"]: entry for entry in files}
    linux = client_platform(LINUX_PIP)  # Python 3.11
    assert likely_wheel(files, ANY_VERSION, linux) == "a-1.2-py3-none-any.whl"
    assert likely_wheel(files, SpecifierSet("<1.2"), linux) == "a-1.0-py3-none-any.whl"
    assert likely_wheel(files, ANY_VERSION, client_platform(WINDOWS_UV)).startswith("a-2.0")
    assert likely_wheel(files, SpecifierSet(">5"), linux) is None


def test_dependencies_with_markers_for_the_platform_and_no_extras():
    metadata = metadata_text(
        "app",
        "1.0",
        [
            "Requests[socks]>=2",
            "colorama; sys_platform == 'win32'",
            "uvloop; sys_platform != 'win32' and python_version >= '3.8'",
            "sphinx; extra == 'docs'",
            "local @ file:///somewhere",
            "not a requirement !!",
        ],
    )
    names = lambda ua: [d.project for d in dependencies(metadata, client_platform(ua))]  # noqa: E731
    assert names(LINUX_PIP) == ["requests", "uvloop"]
    assert names(WINDOWS_UV) == ["requests", "colorama"]
    assert names(None) == ["requests"]
    assert str(dependencies(metadata, UNKNOWN)[0].specifier) == ">=2"


def test_one_release_under_two_spellings_and_names_that_are_not_versions():
    files = [
        {"filename": "b-0.9-py3-none-any.whl"},
        {"filename": "b-2.0-cp311-cp311-win_amd64.whl"},
        {"filename": "b-2.0.0-1-cp311-cp311-manylinux_2_17_x86_64.whl"},  # a build tag
        {"filename": "b-notaversion-py3-none-any.whl"},
        {"filename": "b-2-x.whl"},  # too few parts for a wheel
    ]
    by_name = {entry["filename"]: entry for entry in files}
    linux = client_platform(LINUX_PIP)
    assert likely_wheel(by_name, ANY_VERSION, linux) == files[2]["filename"]
    assert likely_wheel(by_name, SpecifierSet("!=2"), linux) == "b-0.9-py3-none-any.whl"
    assert likely_wheel({}, ANY_VERSION, linux) is None
