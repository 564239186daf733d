"""Fixtures of the daemon tests; helpers live in ``daemon_support`` (importable by name)."""

from daemon_support import coop, daemon, stop_daemons

__all__ = ["coop", "daemon", "stop_daemons"]
