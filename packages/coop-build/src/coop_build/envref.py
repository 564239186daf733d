"""The one rule for ``[env]`` values taken from the invoking user's environment (SPEC 2):
a value that is exactly ``$NAME`` or ``${NAME}``.

Pure and light (``re`` only): the daemon's Coopfile, the CLI (which sends the variables a
Coopfile names, and nothing else) and the trust check of ``coop_run.trust`` all read
values by it without importing pydantic.
"""

from __future__ import annotations

import re

_ENV_REF = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})", re.ASCII)


def env_reference(value: object) -> str | None:
    """The variable name when ``value`` is a string exactly ``$NAME`` or ``${NAME}``,
    else ``None``."""
    if not isinstance(value, str):
        return None
    match = _ENV_REF.fullmatch(value)
    if match is None:
        return None
    return match.group(1) or match.group(2)
