"""coop_build: build rootfs environments from a declarative ``coop.toml``.

A pure library: it knows nothing of sessions or daemons. CI systems import it directly
to prebuild environments and push them to an OCI registry.

Public API (stable)::

    from coop_build import load_coopfile, Builder, BuildOptions, Store

See ``coop_build.api`` for the documented entry points.
"""

__version__ = "0.1.0"
