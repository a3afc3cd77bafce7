"""Everything HTTP: the app, its views, the responses they send, the ops pages."""
