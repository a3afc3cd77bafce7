"""cacheproxy: an async, PyPI-compatible caching proxy for Python package installers."""

__version__ = "0.1.0"
