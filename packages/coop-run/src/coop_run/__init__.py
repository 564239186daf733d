"""coop_run: the coop CLI, and the sandbox, daemon, PTYs, web UI and tunnel behind it."""

__version__ = "0.1.0"
