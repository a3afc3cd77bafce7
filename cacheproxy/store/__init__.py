"""Where cached pages and files live: the local store, and tiers beside it."""
