"""The messages of the daemon and supervisor sockets (SPEC 6): version, error codes, and
every request, reply, stream control and event, each declared once as a typed message
(``ipc.schema``); pure.

The daemon, the supervisors, the CLI and the tests share these declarations, and the
contract test (``tests/coop_run/daemon/test_ipc_protocol.py``) pins each one's fields.
``parse_command`` and ``parse_supervisor_command`` turn a decoded JSON object into its
message or raise ``ProtocolError`` with a one-line message the server sends back as it is.
PTYs are named by their integer id everywhere (``ls``, ``attach``, ``logs``, events).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, TypeVar

from coop_run.errors import (
    CoopError,
    ProtocolError,
    RemoteError,
    SessionNotFoundError,
    UntrustedCoopfileError,
)
from coop_run.ipc.schema import WireMessage, decode, encode, table

VERSION: Final = 1

# Error codes (SPEC 6 plus the ones the daemon needs).
SESSION_NOT_FOUND: Final = "SESSION_NOT_FOUND"
SESSION_EXISTS: Final = "SESSION_EXISTS"
PTY_NOT_FOUND: Final = "PTY_NOT_FOUND"
INVALID_COMMAND: Final = "INVALID_COMMAND"
VERSION_MISMATCH: Final = "VERSION_MISMATCH"
MESSAGE_TOO_LARGE: Final = "MESSAGE_TOO_LARGE"
MALFORMED_MESSAGE: Final = "MALFORMED_MESSAGE"
ROOTFS_NOT_BUILT: Final = "ROOTFS_NOT_BUILT"
INVALID_COOPFILE: Final = "INVALID_COOPFILE"
UNTRUSTED_COOPFILE: Final = "UNTRUSTED_COOPFILE"
NOT_SUPPORTED: Final = "NOT_SUPPORTED"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"
FORBIDDEN: Final = "FORBIDDEN"      # a web or tunnel client's token does not allow it
BIND_FAILED: Final = "BIND_FAILED"  # the web server cannot listen where it was asked to

ERROR_CODES: Final = frozenset({
    SESSION_NOT_FOUND, SESSION_EXISTS, PTY_NOT_FOUND, INVALID_COMMAND, VERSION_MISMATCH,
    MESSAGE_TOO_LARGE, MALFORMED_MESSAGE, ROOTFS_NOT_BUILT, INVALID_COOPFILE,
    UNTRUSTED_COOPFILE, NOT_SUPPORTED, INTERNAL_ERROR, FORBIDDEN, BIND_FAILED,
})


class Request(WireMessage):
    """A command to the daemon or a supervisor: ``{"cmd": NAME, ...}``."""

    TAG_KEY: ClassVar[str | None] = "cmd"
    OMIT_UNSET: ClassVar[bool] = True


class Reply(WireMessage):
    """A successful answer: ``{"ok": true, ...}``."""

    OK: ClassVar[bool | None] = True


class Event(WireMessage):
    """A stream-mode control frame from the server: ``{"event": NAME, ...}``."""

    TAG_KEY: ClassVar[str | None] = "event"


class Control(WireMessage):
    """A stream-mode control frame from a client: ``{"type": NAME, ...}``."""

    TAG_KEY: ClassVar[str | None] = "type"


# --- the daemon's commands --------------------------------------------------------------

class Create(Request):
    TAG = "create"
    workspace: str
    name: str | None = None
    overrides: dict[str, Any] | None = None
    detach: bool | None = None
    cols: int | None = None
    rows: int | None = None
    env: dict[str, str] | None = None
    config: str | None = None  # absolute path of the global Coopfile layer (--config)


class Attach(Request):
    TAG = "attach"
    session: str | None = None
    pty: int | None = None
    cols: int | None = None
    rows: int | None = None
    offset: int | None = None


class Shell(Request):
    """A new shell PTY, attached in stream mode; with ``detach`` only started, and the
    answer is ``PtyReply`` (the web's ``POST /api/sessions/{name}/shell``)."""

    TAG = "shell"
    session: str | None = None
    command: str | None = None
    cols: int | None = None
    rows: int | None = None
    detach: bool | None = None


class Ls(Request):
    TAG = "ls"


class Kill(Request):
    TAG = "kill"
    session: str | None = None
    force: bool | None = None
    all: bool | None = None


class Serve(Request):
    """Start the web server (SPEC 8), or report the one that runs (``ServeReply``); with
    ``stop``, stop it (``ServeStopped``). Without ``detach`` the server belongs to this
    connection: it stops when the connection ends, and a stop from elsewhere sends the
    connection ``server_stopped``."""

    TAG = "serve"
    port: int | None = None
    host: str | None = None
    token: str | None = None
    stop: bool | None = None
    detach: bool | None = None


class Tunnel(Request):
    TAG = "tunnel"
    stun: str | None = None
    no_stun: bool | None = None
    stop: bool | None = None
    answer: str | None = None


class Shutdown(Request):
    TAG = "shutdown"


class Status(Request):
    TAG = "status"


class Logs(Request):
    TAG = "logs"
    session: str | None = None
    pty: int | None = None
    lines: int | None = None


class Restart(Request):
    TAG = "restart"
    session: str | None = None


class ClosePty(Request):
    """End a shell PTY's process as closing its terminal would (a hang-up); the agent's
    PTY is refused (``restart`` or ``kill`` are for it)."""

    TAG = "close_pty"
    pty: int
    session: str | None = None


COMMANDS: Final[Mapping[str, type[Request]]] = table(
    Create, Attach, Shell, Ls, Kill, Serve, Tunnel, Shutdown, Status, Logs, Restart,
    ClosePty)


# --- a supervisor's commands (the daemon's, or a client's that came straight) ------------

class SupervisorInfo(Request):
    TAG = "info"
    session: str | None = None  # every supervisor command may name it (ignored)


class SupervisorAttach(Request):
    """Stream mode on a PTY. ``read_only``: the client's input and resizes are dropped
    and its window never sizes the PTY (a web viewer's link); ``sizing`` false: it types
    but its window does not size the PTY either ("do not size for me"). A ``local``
    client's window always counts; a web or tunnel client's only while it is visible and
    recently active (``session.sizing``)."""

    TAG = "attach"
    session: str | None = None
    pty: int = 0
    cols: int | None = None
    rows: int | None = None
    resume_from: int | None = None
    offset: int | None = None  # the daemon's name for resume_from
    kind: str = "local"
    read_only: bool | None = None  # None: false
    sizing: bool | None = None     # None: true


class SupervisorShell(Request):
    """A new shell PTY: stream mode on it, or with ``detach`` only its id (``PtyReply``)."""

    TAG = "shell"
    session: str | None = None
    command: str | None = None
    cols: int | None = None
    rows: int | None = None
    kind: str = "local"
    detach: bool | None = None


class SupervisorRestart(Request):
    TAG = "restart"
    session: str | None = None


class SupervisorKill(Request):
    TAG = "kill"
    session: str | None = None
    force: bool = False


class Adopt(Request):
    """Sent with one descriptor (SCM_RIGHTS): a client's socket, and its request."""

    TAG = "adopt"
    request: dict[str, Any]
    session: str | None = None


class DetachClients(Request):
    TAG = "detach_clients"
    session: str | None = None


class SupervisorClose(Request):
    TAG = "close"
    pty: int
    session: str | None = None


class Watch(Request):
    """Keep the connection: the session's ``ls`` entry now, and again (``session``
    events) each time it changes, until the peer hangs up."""

    TAG = "watch"
    session: str | None = None


SUPERVISOR_COMMANDS: Final[Mapping[str, type[Request]]] = table(
    SupervisorInfo, SupervisorAttach, SupervisorShell, SupervisorRestart, SupervisorKill,
    Adopt, DetachClients, SupervisorClose, Watch)

CLIENT_KINDS: Final = ("local", "web", "tunnel")
MAX_WINDOW: Final = 65535  # struct winsize fields are unsigned short


def check_window(cols: int, rows: int) -> None:
    """The one window-size rule of every wire: 1 to 65535 columns and rows."""
    for name, value in (("cols", cols), ("rows", rows)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{name} must be an integer", code=INVALID_COMMAND)
        if not 1 <= value <= MAX_WINDOW:
            raise ProtocolError(f"cols and rows must be from 1 to {MAX_WINDOW}",
                                code=INVALID_COMMAND)


# --- what ``ls`` and ``info`` report -------------------------------------------------------

class PtyAttention(WireMessage):
    """Why a PTY wants the user (SPEC 13 "Attention"), in its ``ls`` entry."""

    OMIT_UNSET: ClassVar[bool] = True

    reason: str              # "bell", "notification" or "silence" (after a burst of output)
    since: int               # Unix seconds when it was marked
    text: str | None = None  # a notification's text (at most 256 characters), if it had one


class PtyEntry(WireMessage):
    """One PTY in a session's ``ls`` entry (SPEC 6); ``id`` is what ``attach`` takes."""

    id: int
    role: str            # "agent" (PTY 0) or "shell"
    command: str
    state: str           # "running", "exited", "restarting", "crash-looping", "dead"
    attention: PtyAttention | None  # null unless it wants the user (cleared by typing)


class SessionEntry(WireMessage):
    """A session's ``ls`` entry (SPEC 6), as its supervisor reports it."""

    name: str
    workspace: str
    pid: int             # the supervisor's
    created: int | None
    state: str           # "running", "stopping", "crash-looping", "dead", "unreachable"
    ptys: list[PtyEntry]
    web_clients: int
    local_clients: int
    tunnel_clients: int


class PtyDetail(WireMessage):
    """What ``ls`` does not show of a PTY: pids, stream offset, size, clients."""

    id: int
    pid: int | None      # inside the sandbox; None while nothing runs behind the id
    host_pid: int | None
    offset: int
    cols: int
    rows: int
    clients: int


# --- replies ----------------------------------------------------------------------------

class Ok(Reply):
    pass


class CoopfileAsk(WireMessage):
    """One thing an untrusted workspace Coopfile asks (``coop_run.trust.Ask``): never a
    variable's value, only its name."""

    kind: str     # "mount", "network", "env", "inherit"
    key: str      # "[workspace].mount", "[network].mode", "[env].TOKEN"
    written: str  # the value as written in the file
    target: str   # the mount's real path, "host", the variable's name


class Untrusted(WireMessage):
    """What ``create``'s ``UNTRUSTED_COOPFILE`` refusal carries: enough for a client to
    show the user everything the file asks and to record their yes."""

    path: str     # the file as trusted (``coop_run.trust.trust_key``)
    sha256: str   # of the exact bytes the daemon read
    asks: list[CoopfileAsk]


class ErrorReply(WireMessage):
    """``{"ok": false, "error": CODE, "message": one line}``; ``UNTRUSTED_COOPFILE`` adds
    ``untrusted`` (other refusals leave it out)."""

    OK: ClassVar[bool | None] = False
    OMIT_UNSET: ClassVar[bool] = True

    error: str
    message: str
    untrusted: Untrusted | None = None


class LsReply(Reply):
    sessions: list[SessionEntry]


class StatusReply(Reply):
    pid: int
    version: int
    uptime: float
    sessions: int
    clients: int


class ShutdownReply(Reply):
    pid: int


class CreateReply(Reply):
    name: str
    created: bool
    warnings: list[str]


class KillReply(Reply):
    killed: list[str]


class RestartReply(Reply):
    name: str


class AttachReply(Reply):
    """The answer to ``attach``/``shell`` before stream mode begins."""

    pty: int
    offset: int
    cols: int
    rows: int
    session: str


class InfoReply(Reply):
    session: SessionEntry
    ptys: list[PtyDetail]
    # what the session inherited ([network] inherit), worded for coop status: variable
    # names, proxy URLs masked, the files bound; never a secret
    inherited: list[str] | None = None


class PtyReply(Reply):
    pty: int


class DetachedReply(Reply):
    detached: int


class ServeReply(Reply):
    """The web server that runs: where it listens and its links (the token in each);
    ``started`` false when it was already running."""

    started: bool
    detached: bool             # it stays in the daemon until ``coop serve --stop``
    host: str
    port: int
    urls: list[str]            # the local URL first, then one per network address
    read_only_urls: list[str]  # the same, with the read-only token


class ServeStopped(Reply):
    stopped: bool              # false: no server was running


# --- stream mode ------------------------------------------------------------------------

class Resize(Control):
    TAG = "resize"
    cols: int
    rows: int


class Detach(Control):
    TAG = "detach"


class Pause(Control):
    """A web client's flow control (xterm.js's watermarks): send it nothing until
    ``resume``; its backlog grows meanwhile, and past the limit it lags as a slow
    client would. The PTY and the other clients never wait."""

    TAG = "pause"


class Resume(Control):
    TAG = "resume"


class Visibility(Control):
    """The client's view was hidden (a background tab, a locked phone) or shown again.
    A hidden web client's window stops counting for the PTY's size; shown again, it
    counts at once (being shown is activity). A local terminal always counts."""

    TAG = "visibility"
    visible: bool


class Active(Control):
    """The user is at this client without typing (focus, a pointer, a touch): it
    counts for the PTY's size again for the idle window (``session.sizing``)."""

    TAG = "active"


class Sizing(Control):
    """Whether this client's window sizes the PTY from now on (``false``: "do not
    size for me", the same as joining with ``sizing: false``). A read-only client
    never sizes, whatever it says."""

    TAG = "sizing"
    sizing: bool


CLIENT_CONTROLS: Final[Mapping[str, type[Control]]] = table(
    Resize, Detach, Visibility, Active, Sizing)
WEB_CONTROLS: Final[Mapping[str, type[Control]]] = table(
    Resize, Detach, Visibility, Active, Sizing, Pause, Resume)


class PtyExited(Event):
    """The PTY's process ended with exit ``code`` (or was killed by ``signal``)."""

    TAG = "pty_exited"
    pty: int
    code: int | None
    signal: int | None = None


class PtyRestarting(Event):
    TAG = "pty_restarting"
    pty: int
    delay: float
    attempt: int


class Detached(Event):
    """Sent when the supervisor lets go of a client (daemon shutdown, kill)."""

    TAG = "detached"


class Lagged(Event):
    """The client fell behind and ``bytes`` of output were not sent to it."""

    TAG = "lagged"
    pty: int
    bytes: int


class Blocked(Event):
    """Input from a web or tunnel client was kept from the PTY (SPEC 7.3, built from an
    ``inputfilter.Blocked``): ``sequence`` names what (``exit``, ``ctrl-d``, ``ctrl-c``,
    ``block_sequences[2]``), never its bytes; ``reason`` is ``blocked`` or ``debounced``;
    ``count`` how many times in the input one filter call saw. A read-only client's
    input is dropped whole: ``sequence`` ``input``, ``reason`` ``read-only``."""

    TAG = "blocked"
    pty: int
    sequence: str
    reason: str
    count: int


class Attention(Event):
    """A PTY wants the user (``active``, with the ``reason``, and a notification's
    ``text`` if it had one), or no longer does (``active`` false: a client typed into it;
    no reason). Sent to every client of the PTY; a client that attaches while the PTY is
    marked gets it too, after the scrollback, so no event on attach means no mark."""

    TAG = "attention"
    OMIT_UNSET: ClassVar[bool] = True
    pty: int
    active: bool
    reason: str | None = None  # "bell", "notification", "silence"
    text: str | None = None


class Notice(Event):
    """Terminal text for this client alone (the input filter's notice, SPEC 7.3): shown
    in its terminal, and outside the PTY's byte stream, so it takes no offset."""

    TAG = "notice"
    pty: int
    text: str


class StreamError(Event):
    """A client's broken stream frame: sent before the client is hung up on."""

    TAG = "error"
    error: str
    message: str


class Attached(Event):
    """A web client's first frame: ``AttachReply`` as an event (the WebSocket has no
    reply), and whether its token is read-only. ``offset`` plus every byte received and
    every ``lagged`` count is where it resumes from."""

    TAG = "attached"
    pty: int
    offset: int
    cols: int
    rows: int
    session: str
    read_only: bool


class SessionChanged(Event):
    """A supervisor's ``watch``: its session's ``ls`` entry, sent when it changed."""

    TAG = "session"
    session: SessionEntry


class SessionList(Event):
    """The web's event stream (``/api/events``): every session's ``ls`` entry, sent when
    the client connects and whenever one changes, comes or goes."""

    TAG = "sessions"
    sessions: list[SessionEntry]


class ServerStopped(Event):
    """To a foreground ``coop serve``: its server was stopped from elsewhere."""

    TAG = "server_stopped"
    reason: str


EVENTS: Final[Mapping[str, type[Event]]] = table(
    PtyExited, PtyRestarting, Detached, Lagged, Blocked, Attention, Notice, StreamError,
    Attached, SessionChanged, SessionList, ServerStopped)

R = TypeVar("R", bound=Request)
RP = TypeVar("RP", bound=Reply)


def _parse(message: Mapping[str, Any], key: str, known: Mapping[str, type[R]],
           what: str) -> R:
    name = message.get(key)
    if name is None:
        raise ProtocolError(f"missing field {key!r}", code=INVALID_COMMAND)
    if not isinstance(name, str):
        raise ProtocolError(f"field {key!r} must be a string", code=INVALID_COMMAND)
    cls = known.get(name)
    if cls is None:
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise ProtocolError(f"unknown {what} {shown!r}", code=INVALID_COMMAND)
    return decode(cls, message)


def parse_command(message: Mapping[str, Any]) -> Request:
    """A daemon request checked against its declaration; raises ``ProtocolError``."""
    return _parse(message, "cmd", COMMANDS, "command")


def parse_supervisor_command(message: Mapping[str, Any]) -> Request:
    """A supervisor request checked against its declaration (``kind`` must be one of
    ``CLIENT_KINDS``); raises ``ProtocolError``."""
    request = _parse(message, "cmd", SUPERVISOR_COMMANDS, "command")
    kind = getattr(request, "kind", "local")
    if kind not in CLIENT_KINDS:
        raise ProtocolError(f"{request.TAG}: kind must be local, web or tunnel",
                            code=INVALID_COMMAND)
    return request


def refusal(reply: Mapping[str, Any]) -> CoopError:
    """The exception for an ``{"ok": false}`` answer: the peer's code (which decides the
    CLI's exit code) and message; an untrusted Coopfile's with what it asks."""
    code, message = reply.get("error"), reply.get("message")
    code = code if isinstance(code, str) else INTERNAL_ERROR
    text = message if isinstance(message, str) and message else code
    if code == SESSION_NOT_FOUND:
        return SessionNotFoundError(text)
    detail = reply.get("untrusted")
    if code == UNTRUSTED_COOPFILE and isinstance(detail, dict):
        try:
            untrusted = decode(Untrusted, detail)
        except ProtocolError:
            return RemoteError(text, code=code)
        return UntrustedCoopfileError(
            text, path=untrusted.path, sha256=untrusted.sha256,
            asks=[(a.kind, a.key, a.written, a.target) for a in untrusted.asks])
    return RemoteError(text, code=code)


def decode_reply(cls: type[RP], reply: Mapping[str, Any]) -> RP:
    """A peer's answer as ``cls``: its ``{"ok": false}`` as ``refusal``, a malformed
    answer as ``ProtocolError``."""
    if reply.get("ok") is not True:
        raise refusal(reply)
    return decode(cls, reply)


def parse_control(message: Mapping[str, Any],
                  known: Mapping[str, type[Control]] = CLIENT_CONTROLS) -> Control:
    """A client's stream-mode control message (``resize``, ``detach``, ``visibility``,
    ``active``, ``sizing``; a web client's table, ``WEB_CONTROLS``, adds ``pause`` and
    ``resume``, which the web server keeps for itself)."""
    name = message.get("type")
    cls = known.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ProtocolError("unknown control message", code=INVALID_COMMAND)
    return decode(cls, message)


# --- handshake -------------------------------------------------------------------------

class Hello(WireMessage):
    """The client's first frame."""

    version: int


class HandshakeOk(Reply):
    version: int


def hello() -> dict[str, Any]:
    return encode(Hello(VERSION))


def handshake_ok() -> dict[str, Any]:
    return encode(HandshakeOk(VERSION))


def check_hello(message: Mapping[str, Any]) -> None:
    """Accept only ``{"version": 1}``; raises ``ProtocolError(VERSION_MISMATCH)``."""
    version = message.get("version")
    if set(message) != {"version"} or isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError(
            f'expected the handshake {{"version": {VERSION}}} as the first message',
            code=VERSION_MISMATCH,
        )
    if version != VERSION:
        raise ProtocolError(
            f"protocol version {version} is not supported (this daemon speaks {VERSION})",
            code=VERSION_MISMATCH,
        )


def check_handshake_reply(message: Mapping[str, Any]) -> None:
    """The client's check of the daemon's answer; raises ``ProtocolError``."""
    if message.get("ok") is True and message.get("version") == VERSION:
        return
    code = message.get("error")
    text = message.get("message")
    raise ProtocolError(
        str(text) if isinstance(text, str) else "the daemon refused the handshake",
        code=code if isinstance(code, str) else VERSION_MISMATCH,
    )


# --- building replies -------------------------------------------------------------------

def ok() -> dict[str, Any]:
    """``{"ok": true}``."""
    return encode(Ok())


def error(code: str, message: str, untrusted: Untrusted | None = None) -> dict[str, Any]:
    """``{"ok": false, "error": CODE, "message": ...}``; ``message`` is one line."""
    line = message.splitlines()[0] if message else code
    return encode(ErrorReply(code, line, untrusted))


def error_from(exc: CoopError) -> dict[str, Any]:
    """The refusal of ``exc``: its code and line, and what an untrusted Coopfile asks."""
    untrusted = None
    if isinstance(exc, UntrustedCoopfileError):
        untrusted = Untrusted(exc.path, exc.sha256, [CoopfileAsk(*ask) for ask in exc.asks])
    return error(exc.code, exc.message, untrusted)
