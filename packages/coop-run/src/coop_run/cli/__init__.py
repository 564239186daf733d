"""The ``coop`` command: the entry point (``main``), the state every command shares
(``app``: global options, environment, the terminal) and the options themselves
(``options``), the click group that imports each command's module on first use
(``group``: ``build``, ``session``, ``attach``, ``ls``, ``status``, ``daemon``), ``coop
ls`` without click (``fast``), tables (``formatting``), build progress (``progress``),
``coop init --example`` (``examples``) and error codes to exit codes, in one place
(``errors``).

Runs in the ``coop`` process, one per command; it owns the terminal. It may import
``ipc`` (the synchronous client), ``daemon.autospawn`` (no other daemon module),
``coop_build`` and the leaf modules, never ``session`` or ``sandbox``. Never asyncio on
the path of ``coop ls`` (``main``, ``app``, ``fast`` and what they load), nor click,
pydantic or ``dataclasses``: ``tests/coop_run/test_cli_lazy.py`` pins that.
"""
