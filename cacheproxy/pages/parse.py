"""An upstream page's body parsed into the compact form the store keeps: pure CPU work, run in
a worker thread by PageService."""

from __future__ import annotations

from cacheproxy.errors import BadUpstreamPage, PageError
from cacheproxy.protocol.compact import CompactPage
from cacheproxy.protocol.filehosts import FileHosts
from cacheproxy.protocol.negotiation import JSON_V1
from cacheproxy.protocol.parse import parse_html, parse_json_served
from cacheproxy.upstream import PageResponse


def parse_upstream_page(
    project: str, response: PageResponse, hosts: FileHosts
) -> tuple[CompactPage, bytes | None]:
    """The page in the compact form it is kept in (dropped entries still told), and for a
    JSON page its JSON as served while nothing is known of its files."""
    try:
        if response.content_type == JSON_V1 or response.content_type.endswith("+json"):
            return parse_json_served(response.body, response.url, hosts)
        if "html" in response.content_type:
            return parse_html(response.body, response.url, project, hosts), None
    except PageError as exc:
        raise BadUpstreamPage(str(exc)) from None
    raise BadUpstreamPage(f"upstream sent a page of type {response.content_type!r}")
