"""Fixtures of the session tests; helpers live in ``session_support`` (importable by name)."""

from session_support import coop, host_workspace, stop_everything

__all__ = ["coop", "host_workspace", "stop_everything"]
