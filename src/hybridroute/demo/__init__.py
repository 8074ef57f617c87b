"""The demo: the embedded default configuration, the runner and synthetic traffic."""
