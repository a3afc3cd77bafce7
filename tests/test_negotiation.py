import pytest

from cacheproxy.protocol.negotiation import HTML_LEGACY, HTML_V1, JSON_V1, choose_content_type

UV_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, {HTML_LEGACY};q=0.01"
PIP_ACCEPT = f"{JSON_V1}, {HTML_V1}; q=0.1, {HTML_LEGACY}; q=0.01"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (UV_ACCEPT, JSON_V1),
        (PIP_ACCEPT, JSON_V1),
        (f"{JSON_V1};q=0.1, {HTML_V1}", HTML_V1),
        (f"{HTML_LEGACY}", HTML_LEGACY),
        (f"{JSON_V1};q=0, {HTML_LEGACY}", HTML_LEGACY),
        ("*/*", HTML_LEGACY),
        (None, HTML_LEGACY),
        ("", HTML_LEGACY),
        ("application/*", JSON_V1),
        (f"{JSON_V1}, {HTML_V1}", JSON_V1),
        ("text/*;q=0.5, application/vnd.pypi.simple.v1+json;q=0.4", HTML_LEGACY),
        ("image/png", None),
        (f"{JSON_V1};q=0", None),
        ("application/json", None),
        (f"{JSON_V1};q=abc, {HTML_V1};q=0.5", HTML_V1),
    ],
)
def test_choose_content_type(accept, expected):
    assert choose_content_type(accept) == expected


def test_format_query_parameter_overrides_accept():
    assert choose_content_type(HTML_LEGACY, JSON_V1) == JSON_V1
    assert choose_content_type(UV_ACCEPT, "application/xml") is None
