"""The web server inside the daemon (SPEC 8, ``coop serve``): aiohttp, loaded by the
daemon only when a server starts (``daemon.extensions``).

``control`` serves the ``serve`` command (start, report, stop; the detached server's
record and keeper), ``server`` binds and stops the aiohttp application that ``app``
builds: ``auth`` (pure: tokens, Host and Origin checks) in its middleware, ``rest`` (the
REST API and the session event stream, through the daemon's one dispatch), ``terminal``
(a PTY's WebSocket, relayed to a supervisor stream), ``clients`` (the web clients and
what each may do), ``addresses`` (this machine's addresses and the links to print).
"""
