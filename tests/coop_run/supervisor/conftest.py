"""Fixtures of the supervisor tests; helpers live in ``sup_helpers`` (importable by name)."""

from sup_helpers import make_config, start

__all__ = ["make_config", "start"]
