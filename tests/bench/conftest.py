"""tests/bench holds benchmark scripts (``just bench``), not tests: pytest collects none."""

collect_ignore_glob = ["*.py"]
