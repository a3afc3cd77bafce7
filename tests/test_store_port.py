"""The local store satisfies the port the services are written against, member for member."""

from __future__ import annotations

import inspect
from pathlib import Path

from cacheproxy.storage import port
from cacheproxy.storage.local import Store

PARTS = (
    port.PageStore,
    port.PageVersions,
    port.ApiDocumentStore,
    port.FileStore,
    port.FileFactStore,
    port.Takedowns,
    port.StoreMaintenance,
    port.StoreStats,
)


def _members(protocol: type) -> set[str]:
    """What a protocol names: its methods and attributes, its parts' included."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls in (*PARTS, port.StorePort):
            names.update(name for name in vars(cls) if not name.startswith("_"))
            names.update(vars(cls).get("__annotations__", {}))
    return names


def _parameters(function: object) -> list[tuple[str, object, object]]:
    """Names, kinds and defaults (the types are the type checker's to compare)."""
    parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in parameters]


def test_the_store_is_each_part_of_its_port(tmp_path: Path) -> None:
    store: port.StorePort = Store(tmp_path, size_limit=2**20)  # checked by mypy as well
    assert isinstance(store, port.StorePort)
    for part in (*PARTS, port.FilesWithFacts):
        assert isinstance(store, part), part.__name__
    assert _members(port.StorePort) == set().union(*map(_members, PARTS))


def test_the_store_s_methods_take_what_the_port_names() -> None:
    for name in sorted(_members(port.StorePort)):
        wanted = getattr(port.StorePort, name, None)
        if wanted is None:  # an attribute (evictions)
            assert "evictions" in Store(Path("unused"), 0).__dict__
            continue
        ours = getattr(Store, name)
        assert _parameters(ours) == _parameters(wanted), name
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(wanted), name
