"""Decisions and coordination: what to serve, when to ask the upstream, one download per file."""
