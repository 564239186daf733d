"""The host side of a sandbox (``host``): the clone into new namespaces (``clone``), the
channel to its PID 1 and that init's wire format (``initproto``) and executable
(``initexe``, from ``csrc/coop-init.c``), the mount plan (``mounts``), capabilities
(``caps``), session directories (``sessiondirs``) and the network modes (``network/``).

Runs in the session supervisor (and in the zygote, which prepares inits ahead). It may
import ``coop_build``, ``ipc`` and the leaf modules (``errors``, ``layout``, ``procs``,
``statefiles``), never ``session`` or ``daemon``. ``config`` and ``network.base`` are pure
and cross to the daemon, which builds the configuration.
"""
