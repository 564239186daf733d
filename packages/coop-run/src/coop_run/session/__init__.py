"""One session's processes: the supervisor (``supervisor``) that owns the sandbox, its
PTYs (``ptys``), their fan-out to clients (``fanout``) and scrollback (``scrollback``);
the supervisor as a process (``process``), the zygote that forks supervisors from a spare
(``zygote``), and the launch protocol between the daemon and them (``launch``).

Runs in the zygote and the supervisors, never in the daemon. It may import ``sandbox``,
``ipc``, ``coop_build`` and the leaf modules. What crosses to the daemon is pure and
imports no sandbox host code: ``config``, ``launch``, ``fanout`` and ``scrollback``.
"""
