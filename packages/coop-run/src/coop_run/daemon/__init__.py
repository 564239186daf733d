"""The daemon: the asyncio server on ``COOP_HOME/sock`` (``server``), the session registry
and its commands (``registry``), the daemon's side of the zygote (``zygote_client``), and
the CLI's auto-spawn of a daemon (``autospawn``, synchronous, no asyncio).

Runs in the daemon process (``autospawn`` in the CLI). It may import ``ipc``,
``coop_build``, the leaf modules and only the pure modules that cross a process line
(``sandbox.config``, ``session.config``, ``session.launch``), never the sandbox or the
supervisor code: a cold command waits for the daemon's imports. ``web`` and ``tunnel``
will sit beside it and import only ``daemon`` and ``ipc``.
"""
