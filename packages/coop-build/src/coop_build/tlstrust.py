"""The TLS trust settings build steps and sessions inherit from the invoking environment
(SPEC 13).

Behind a proxy that re-signs TLS (most company networks) https works only for programs
that trust the proxy's CA, and the user's environment says where that CA is:
``SSL_CERT_FILE`` and its relatives, or npm's ``cafile``. A build step gets those
variables, and every file or directory they name is bound read-only into the step, under
``/run/coop-build/trust/`` (the image may not have the path, and where it has, its own
trust store must stay its own: a step installing ``ca-certificates`` rewrites
``/etc/ssl/certs``, which the host's variables very often name); the variables the step
gets name those places. None of it is part of a step's key or of the build fingerprint:
the same Coopfile builds the same layers on any network.

apt reads none of these variables, so when ``SSL_CERT_FILE`` reaches a step the step
also gets ``APT_CONFIG``: an apt configuration file (``Acquire::https::CaInfo``) that
trusts that file. apt has no option for a directory of certificates.

Sessions (``[network] inherit`` naming ``"tls"``) get the same variables and binds, under
their own place (``SESSION_TRUST_DIR``); they get no ``APT_CONFIG``.

Everything here but ``inherit_trust`` is pure: which variables, which paths, npmrc
parsing and the refusals; ``inherit_trust`` reads the npm configuration and looks at the
named paths.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from coop_build.errors import InheritedPathError
from coop_build.paths import display_path

logger = logging.getLogger(__name__)

TLS_FILE_VARS = (
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "GIT_SSL_CAINFO",
)
"""Variables naming one certificate file, passed to build steps as they are."""
TLS_DIR_VAR = "SSL_CERT_DIR"
"""OpenSSL's certificate directories, ``:``-separated."""
NPM_CAFILE_VAR = "npm_config_cafile"
"""How npm's ``cafile`` reaches a step, wherever the user's configuration set it."""
TLS_VARS = (*TLS_FILE_VARS, TLS_DIR_VAR, NPM_CAFILE_VAR)
APT_CONFIG_PATH = "/run/coop-build/apt-tls.conf"
"""Where a step finds the apt configuration that trusts ``SSL_CERT_FILE``."""
TRUST_DIR = "/run/coop-build/trust"
"""Where a step finds the files and directories the trust variables name: ``N/NAME``."""
SESSION_TRUST_DIR = "/run/coop/trust"
"""Where a session finds them."""
BUILD_STEPS, SESSIONS = "build steps", "sessions"
"""Who gets the trust, as messages name it."""
_ONE = {BUILD_STEPS: "a build step", SESSIONS: "a session"}

# Never bound into a step, at or below: the kernel's interfaces. The host's root and its
# whole /etc or /boot are refused too, only what is below them is not (/etc/ssl/...).
_KERNEL_DIRS = ("/proc", "/sys", "/dev")
_WHOLE_DIRS = ("/", "/etc", "/boot")
_UNUSABLE = re.compile(r'["\x00-\x1f\x7f]')  # apt's config syntax cannot quote these
_ENV_REF = re.compile(r"(\\*)\$\{([^${}?]+)(\??)\}")


@dataclass(frozen=True)
class TrustRequest:
    """One trust variable the invoking environment sets, before any path is looked at."""

    variable: str  # the name the step gets
    origin: str  # where it was set, for messages: "SSL_CERT_FILE", "~/.npmrc: cafile"
    paths: tuple[str, ...]  # what it names (several only for SSL_CERT_DIR)
    directory: bool  # it names directories, not files


@dataclass(frozen=True)
class InheritedTrust:
    """What build steps get: variables, read-only binds and the apt configuration."""

    env: Mapping[str, str]
    binds: tuple[tuple[str, str], ...]  # (real path on the host, path inside), once each
    warnings: tuple[str, ...] = ()  # one line each: named paths that were left out
    apt_config: str | None = None  # APT_CONFIG's contents, when SSL_CERT_FILE is passed
    directories: frozenset[str] = frozenset()  # the real paths of ``binds`` that are dirs


# real path (or None when the path does not exist) and whether it is a directory
Lookup = Callable[[str], tuple[str, bool] | None]


# --- npm's configuration ---------------------------------------------------------------


def npm_env(environ: Mapping[str, str], key: str) -> str | None:
    """npm's ``npm_config_KEY`` from the environment, in any case, as npm reads it."""
    exact = f"npm_config_{key}"
    if environ.get(exact):
        return environ[exact]
    for name, value in environ.items():
        if name.lower() == exact and value:
            return value
    return None


def npm_userconfig(environ: Mapping[str, str]) -> str | None:
    """The user's npmrc path: ``$NPM_CONFIG_USERCONFIG``, else ``~/.npmrc``."""
    named = npm_env(environ, "userconfig")
    if named is not None:
        return expand_home(named, environ)
    home = environ.get("HOME")
    return posixpath.join(home, ".npmrc") if home else None


def npmrc_cafile(text: str, environ: Mapping[str, str]) -> str | None:
    """The top-level ``cafile`` of an npmrc (ini: the last one wins, ``;``/``#``
    comments, quotes, ``${VAR}`` from the environment, ``~/`` for the home directory)."""
    found: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            break  # keys below a section header are that section's, not npm's
        key, sep, value = line.partition("=")
        if sep and key.strip() == "cafile":
            found = _ini_value(value.strip())
    if not found:
        return None
    return expand_home(_expand_env(found, environ), environ)


def _ini_value(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    out: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            out.append(ch if ch in ";#\\" else "\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ";#":
            break
        else:
            out.append(ch)
    return "".join(out).strip()


def _expand_env(text: str, environ: Mapping[str, str]) -> str:
    """npm's ``${NAME}`` in config values; an unset name stays as written."""

    def replace(match: re.Match[str]) -> str:
        slashes, name, optional = match.groups()
        if len(slashes) % 2:  # escaped: \${X} stays literal
            return slashes[1:] + match.group(0)[len(slashes):]
        value = environ.get(name)
        if value is None:
            return match.group(0) if not optional else slashes
        return slashes + value

    return _ENV_REF.sub(replace, text)


def expand_home(path: str, environ: Mapping[str, str]) -> str:
    """``~`` and ``~/...`` against ``$HOME`` (npm's path settings allow them)."""
    home = environ.get("HOME")
    if home and (path == "~" or path.startswith("~/")):
        return home + path[1:]
    return path


# --- which variables, which paths ------------------------------------------------------


def trust_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """What ``trust_requests`` and ``inherit_trust`` read of ``environ`` (``HOME`` aside):
    what a client sends for the trust of a session it starts elsewhere (the daemon)."""
    out = {name: environ[name] for name in (*TLS_FILE_VARS, TLS_DIR_VAR) if environ.get(name)}
    for name, value in environ.items():
        if name.lower() in ("npm_config_cafile", "npm_config_userconfig") and value:
            out[name] = value
    return out


def trust_requests(
    environ: Mapping[str, str], *, npmrc: tuple[str, str] | None = None
) -> list[TrustRequest]:
    """The trust variables ``environ`` sets, in ``TLS_VARS`` order.

    ``npmrc`` is the user's npm configuration as (label for messages, text); npm's
    ``cafile`` comes from the environment first, as npm reads it.
    """
    out: list[TrustRequest] = []
    for name in TLS_FILE_VARS:
        value = environ.get(name)
        if value:
            out.append(TrustRequest(name, name, (value,), directory=False))
    dirs = [part for part in environ.get(TLS_DIR_VAR, "").split(":") if part]
    if dirs:
        out.append(TrustRequest(TLS_DIR_VAR, TLS_DIR_VAR, tuple(dirs), directory=True))
    cafile = npm_env(environ, "cafile")
    origin = NPM_CAFILE_VAR
    if cafile is not None:
        cafile = expand_home(cafile, environ)
    elif npmrc is not None:
        label, text = npmrc
        cafile, origin = npmrc_cafile(text, environ), f"{label}: cafile"
    if cafile:
        out.append(TrustRequest(NPM_CAFILE_VAR, origin, (cafile,), directory=False))
    return out


def refusal(path: str, coop_home: str | None = None, *, into: str = "a build step"
            ) -> str | None:
    """Why ``path`` (absolute, normalised) is never bound ``into`` a build step (or a
    session), or None."""
    if path in _WHOLE_DIRS:
        return f"{path} as a whole is never bound into {into}"
    for kernel in _KERNEL_DIRS:
        if path == kernel or path.startswith(kernel + "/"):
            return f"{kernel} is the kernel's and is never bound into {into}"
    if coop_home and (path == coop_home or path.startswith(coop_home.rstrip("/") + "/")):
        return f"{coop_home} is coop's own directory and is never bound into {into}"
    return None


def plan_trust(
    requests: Sequence[TrustRequest], lookup: Lookup, *, coop_home: str | None = None,
    inside: str = TRUST_DIR, audience: str = BUILD_STEPS,
) -> InheritedTrust:
    """What build steps (or sessions: ``audience``) get for ``requests``, bound under
    ``inside``; ``lookup`` tells what a path is on the host.

    A path that is relative, unusable or refused raises InheritedPathError (one line); a
    path that does not exist, or is not the kind its variable names, is left out with a
    warning (the variable too, unless another of its directories remains).
    """
    into = _ONE.get(audience, audience)
    env: dict[str, str] = {}
    places: dict[str, str] = {}  # real path on the host -> its place inside
    dirs: set[str] = set()
    warnings: list[str] = []
    for req in requests:
        kept: list[str] = []
        for path in req.paths:
            named = _checked(req, path, coop_home, into)
            found = lookup(named)
            if found is None:
                warnings.append(f"{req.origin}={path} does not exist: {audience} do not get it")
                continue
            real, is_dir = found
            reason = refusal(real, coop_home, into=into)
            if reason is not None:
                raise InheritedPathError(f"{req.origin}={path} resolves to {real}: {reason}")
            if is_dir != req.directory:
                kind = "a directory" if is_dir else "not a directory"
                warnings.append(f"{req.origin}={path} is {kind}: {audience} do not get it")
                continue
            if real not in places:
                places[real] = f"{inside}/{len(places) + 1}/{posixpath.basename(real)}"
                if is_dir:
                    dirs.add(real)
            kept.append(places[real])
        if kept:
            env[req.variable] = ":".join(kept)
    cert_file = env.get("SSL_CERT_FILE")
    apt = apt_config(cert_file) if cert_file is not None else None
    binds = tuple(places.items())
    return InheritedTrust(env=env, binds=binds, warnings=tuple(warnings), apt_config=apt,
                          directories=frozenset(dirs))


def _checked(req: TrustRequest, path: str, coop_home: str | None, into: str) -> str:
    if not path.startswith("/"):
        raise InheritedPathError(f"{req.origin}={path} is not an absolute path")
    if _UNUSABLE.search(path):
        raise InheritedPathError(
            f"{req.origin}={path!r} holds a quote or control character: not a usable path")
    named = posixpath.normpath(path)
    if named.startswith("//"):
        named = "/" + named.lstrip("/")
    reason = refusal(named, coop_home, into=into)
    if reason is not None:
        raise InheritedPathError(f"{req.origin}={path}: {reason}")
    return named


def apt_config(cainfo: str) -> str:
    """apt configuration that trusts ``cainfo`` for https (the path inside the step)."""
    return (
        "// coop: build steps trust SSL_CERT_FILE for https, as the invoking user does\n"
        f'Acquire::https::CaInfo "{cainfo}";\n'
    )


# --- I/O -------------------------------------------------------------------------------


def inherit_trust(environ: Mapping[str, str], *, coop_home: Path | None = None,
                  inside: str = TRUST_DIR, audience: str = BUILD_STEPS) -> InheritedTrust:
    """The trust settings of ``environ`` for build steps (or ``audience``, bound under
    ``inside``), with the named paths looked at.

    Reads the user's npm configuration (never runs npm). Each warning is logged once
    here; a refused path raises InheritedPathError.
    """
    npmrc: tuple[str, str] | None = None
    rc_path = npm_userconfig(environ) if npm_env(environ, "cafile") is None else None
    if rc_path is not None:
        try:
            npmrc = (display_path(Path(rc_path), environ), Path(rc_path).read_text())
        except FileNotFoundError:
            npmrc = None
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("cannot read %s for npm's cafile: %s", rc_path, exc)
    home = str(coop_home.resolve()) if coop_home is not None else None
    trust = plan_trust(trust_requests(environ, npmrc=npmrc), _lookup, coop_home=home,
                       inside=inside, audience=audience)
    for warning in trust.warnings:
        logger.warning("%s", warning)
    if trust.env:
        logger.info("%s inherit %s", audience, ", ".join(sorted(trust.env)))
    return trust


def _lookup(path: str) -> tuple[str, bool] | None:
    real = Path(path).resolve()
    if not real.exists():
        return None
    return str(real), real.is_dir()
