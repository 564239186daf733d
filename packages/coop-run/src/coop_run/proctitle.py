"""Process titles for ``ps`` and ``top``: ``coop daemon``, ``coop zygote``,
``coop keeper`` (the watch over a daemon that serves a detached web server) and
``coop supervisor NAME``, where a supervisor would otherwise show as the zygote's
``python -m coop_run.session.zygote``.

``setproctitle`` rewrites the memory that holds the command line (``/proc/PID/cmdline``)
and sets the kernel's 15-byte ``comm``. By default it also takes the environment's block
for a longer title, which blanks ``/proc/PID/environ``, where coop finds its own processes
(rediscovery by ``COOP_SESSION``, tests by ``COOP_HOME``): ``SPT_NOENV`` keeps the
environment, and a title is cut to the length of the command line it replaces.
"""

from __future__ import annotations

import os

DAEMON = "coop daemon"
ZYGOTE = "coop zygote"
KEEPER = "coop keeper"


def supervisor(name: str) -> str:
    """A session's supervisor: ``coop supervisor NAME``."""
    return f"coop supervisor {name}"


def set_title(title: str) -> None:
    """Show this process as ``title``; its environment stays readable in ``/proc``."""
    import setproctitle  # here: only the processes above load it

    previous = os.environ.get("SPT_NOENV")
    os.environ["SPT_NOENV"] = "1"  # read at the first call in a process, then kept
    try:
        setproctitle.setproctitle(title)
    finally:
        if previous is None:
            del os.environ["SPT_NOENV"]
        else:
            os.environ["SPT_NOENV"] = previous
