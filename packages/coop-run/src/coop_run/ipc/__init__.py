"""The wire every coop process speaks: length-prefixed JSON frames (``framing``), typed
messages declared once with one checker for every wire (``schema``), the messages of
every command, reply, control and event (``protocol``), unix-socket helpers with their
ownership and peer checks (``sockets``), the CLI's synchronous client (``client``) and
the one asyncio framed connection that the daemon, the supervisors and the daemon's
supervisor client share (``connection``).

Imported by every process, so it imports nothing of coop but ``coop_run.errors``: no
sandbox, session or daemon code, and no asyncio or ``dataclasses`` in the modules the
CLI's ``coop ls`` loads (``framing``, ``schema``, ``protocol``, ``sockets``, ``client``).
"""
