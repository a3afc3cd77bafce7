"""The Simple Repository API as data: pure, no I/O."""
