"""Network modes for the sandbox (SPEC 4.3): ``none``, ``host`` and ``veth``; one module
per mode, ``modes`` chooses one by name and reaps what dead sessions left.

``veth`` is a real veth pair with NAT when we are root (veth_root) and pasta user-mode
networking otherwise (veth_user); both refuse the host's LAN, link-local and loopback.
Part of the sandbox package: runs in the supervisor. ``base`` (the mode protocol) is pure
and crosses to the daemon with the sandbox's configuration.
"""
