"""Fixtures of the web tests; helpers live in ``web_support`` (importable by name)."""

from web_support import coop, served

__all__ = ["coop", "served"]
