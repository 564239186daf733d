"""The daemon: the process (``main``: arguments, logging, rediscovery, serve), the asyncio
server on ``COOP_HOME/sock`` (``server``: accept, handshake, dispatch, idle exit), the
session table (``registry``) and the session commands served on it (``commands``: create,
attach, shell, kill, restart, ls), rediscovery of running sessions at start
(``discovery``), the daemon's side of one supervisor (``supervisors``: ``Session``, one
command on its socket, waiting on its pidfd) and of the zygote (``zygote_client``), and
the CLI's auto-spawn of a daemon (``autospawn``).

Runs in the daemon process, except ``autospawn``, which runs in the ``coop`` command (on
the path of ``coop ls``: synchronous, no asyncio, only ``ipc.client`` and the leaves). It
may import ``ipc``, ``coop_build``, the leaf modules and, of ``sandbox`` and ``session``,
only the pure modules that cross a process line (the configurations and the launch
request; ``scripts/check-layers`` lists them), never the sandbox or the supervisor code:
a cold command waits for the daemon's imports. ``web`` and ``tunnel`` will sit beside it
and import only ``daemon``, ``ipc``, ``coop_build`` and the leaves.
"""
