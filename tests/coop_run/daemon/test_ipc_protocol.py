"""The wire messages: one declaration each, checked by one schema, and a contract that
pins every message of every wire (daemon, supervisor, stream mode, launch).

The contract table is the promise to clients (the CLI, the web UI, the tunnel, scripts):
changing a field means changing this table on purpose, and bumping VERSION if it breaks
one. A message added to a module without a row here fails ``test_every_message_is_pinned``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coop_run.errors import (
    ProtocolError,
    RemoteError,
    SessionNotFoundError,
    SupervisorError,
    UntrustedCoopfileError,
)
from coop_run.ipc import protocol, schema
from coop_run.sandbox.config import SandboxConfig
from coop_run.session import launch
from coop_run.session.config import SupervisorConfig

STR, INT, BOOL = "a string", "an integer", "a boolean"
OPT_S, OPT_I, OPT_B = "a string or null ?", "an integer or null ?", "a boolean or null ?"

CONTRACT: dict[type[schema.WireMessage], dict[str, str]] = {
    # the daemon's commands
    protocol.Create: {"cmd": "'create'", "workspace": STR, "name": OPT_S,
                      "overrides": "an object or null ?", "detach": OPT_B, "cols": OPT_I,
                      "rows": OPT_I, "env": "an object of strings or null ?", "config": OPT_S},
    protocol.Attach: {"cmd": "'attach'", "session": OPT_S, "pty": OPT_I, "cols": OPT_I,
                      "rows": OPT_I, "offset": OPT_I},
    protocol.Shell: {"cmd": "'shell'", "session": OPT_S, "command": OPT_S, "cols": OPT_I,
                     "rows": OPT_I, "detach": OPT_B},
    protocol.Ls: {"cmd": "'ls'"},
    protocol.Kill: {"cmd": "'kill'", "session": OPT_S, "force": OPT_B, "all": OPT_B},
    protocol.Serve: {"cmd": "'serve'", "port": OPT_I, "host": OPT_S, "token": OPT_S,
                     "stop": OPT_B, "detach": OPT_B},
    protocol.Tunnel: {"cmd": "'tunnel'", "stun": OPT_S, "no_stun": OPT_B, "stop": OPT_B,
                      "answer": OPT_S},
    protocol.Shutdown: {"cmd": "'shutdown'"},
    protocol.Status: {"cmd": "'status'"},
    protocol.Logs: {"cmd": "'logs'", "session": OPT_S, "pty": OPT_I, "lines": OPT_I},
    protocol.Restart: {"cmd": "'restart'", "session": OPT_S},
    protocol.ClosePty: {"cmd": "'close_pty'", "pty": INT, "session": OPT_S},
    # a supervisor's commands
    protocol.SupervisorInfo: {"cmd": "'info'", "session": OPT_S},
    protocol.SupervisorAttach: {"cmd": "'attach'", "session": OPT_S, "pty": "an integer ?",
                                "cols": OPT_I, "rows": OPT_I, "resume_from": OPT_I,
                                "offset": OPT_I, "kind": "a string ?",
                                "read_only": OPT_B, "sizing": OPT_B},
    protocol.SupervisorShell: {"cmd": "'shell'", "session": OPT_S, "command": OPT_S,
                               "cols": OPT_I, "rows": OPT_I, "kind": "a string ?",
                               "detach": OPT_B},
    protocol.SupervisorRestart: {"cmd": "'restart'", "session": OPT_S},
    protocol.SupervisorKill: {"cmd": "'kill'", "session": OPT_S, "force": "a boolean ?"},
    protocol.Adopt: {"cmd": "'adopt'", "request": "an object", "session": OPT_S},
    protocol.DetachClients: {"cmd": "'detach_clients'", "session": OPT_S},
    protocol.SupervisorClose: {"cmd": "'close'", "pty": INT, "session": OPT_S},
    protocol.Watch: {"cmd": "'watch'", "session": OPT_S},
    # what ls and info report (SPEC 6): PTYs by their integer id
    protocol.SessionEntry: {"name": STR, "workspace": STR, "pid": INT,
                            "created": "an integer or null", "state": STR,
                            "ptys": "a list of PtyEntry objects", "web_clients": INT,
                            "local_clients": INT, "tunnel_clients": INT},
    protocol.PtyEntry: {"id": INT, "role": STR, "command": STR, "state": STR,
                        "attention": "an object (PtyAttention) or null"},
    protocol.PtyAttention: {"reason": STR, "since": INT, "text": OPT_S},
    protocol.PtyDetail: {"id": INT, "pid": "an integer or null",
                         "host_pid": "an integer or null", "offset": INT, "cols": INT,
                         "rows": INT, "clients": INT},
    # handshake and replies
    protocol.Hello: {"version": INT},
    protocol.HandshakeOk: {"ok": "true", "version": INT},
    protocol.Ok: {"ok": "true"},
    protocol.ErrorReply: {"ok": "false", "error": STR, "message": STR,
                          "untrusted": "an object (Untrusted) or null ?"},
    protocol.Untrusted: {"path": STR, "sha256": STR, "asks": "a list of CoopfileAsk objects"},
    protocol.CoopfileAsk: {"kind": STR, "key": STR, "written": STR, "target": STR},
    protocol.LsReply: {"ok": "true", "sessions": "a list of SessionEntry objects"},
    protocol.StatusReply: {"ok": "true", "pid": INT, "version": INT, "uptime": "a number",
                           "sessions": INT, "clients": INT},
    protocol.ShutdownReply: {"ok": "true", "pid": INT},
    protocol.CreateReply: {"ok": "true", "name": STR, "created": BOOL,
                           "warnings": "a list of strings"},
    protocol.KillReply: {"ok": "true", "killed": "a list of strings"},
    protocol.RestartReply: {"ok": "true", "name": STR},
    protocol.AttachReply: {"ok": "true", "pty": INT, "offset": INT, "cols": INT, "rows": INT,
                           "session": STR},
    protocol.InfoReply: {"ok": "true", "session": "an object (SessionEntry)",
                         "ptys": "a list of PtyDetail objects",
                         "inherited": "a list of strings or null ?"},
    protocol.PtyReply: {"ok": "true", "pty": INT},
    protocol.DetachedReply: {"ok": "true", "detached": INT},
    protocol.ServeReply: {"ok": "true", "started": BOOL, "detached": BOOL, "host": STR,
                          "port": INT, "urls": "a list of strings",
                          "read_only_urls": "a list of strings"},
    protocol.ServeStopped: {"ok": "true", "stopped": BOOL},
    # stream mode: a client's controls, the server's events
    protocol.Resize: {"type": "'resize'", "cols": INT, "rows": INT},
    protocol.Detach: {"type": "'detach'"},
    protocol.Pause: {"type": "'pause'"},
    protocol.Resume: {"type": "'resume'"},
    protocol.Visibility: {"type": "'visibility'", "visible": BOOL},
    protocol.Active: {"type": "'active'"},
    protocol.Sizing: {"type": "'sizing'", "sizing": BOOL},
    protocol.PtyExited: {"event": "'pty_exited'", "pty": INT, "code": "an integer or null",
                         "signal": OPT_I},
    protocol.PtyRestarting: {"event": "'pty_restarting'", "pty": INT, "delay": "a number",
                             "attempt": INT},
    protocol.Detached: {"event": "'detached'"},
    protocol.Lagged: {"event": "'lagged'", "pty": INT, "bytes": INT},
    protocol.Blocked: {"event": "'blocked'", "pty": INT, "sequence": STR, "reason": STR,
                       "count": INT},
    protocol.Attention: {"event": "'attention'", "pty": INT, "active": BOOL, "reason": OPT_S,
                         "text": OPT_S},
    protocol.Notice: {"event": "'notice'", "pty": INT, "text": STR},
    protocol.StreamError: {"event": "'error'", "error": STR, "message": STR},
    protocol.Attached: {"event": "'attached'", "pty": INT, "offset": INT, "cols": INT,
                        "rows": INT, "session": STR, "read_only": BOOL},
    protocol.SessionChanged: {"event": "'session'", "session": "an object (SessionEntry)"},
    protocol.SessionList: {"event": "'sessions'",
                           "sessions": "a list of SessionEntry objects"},
    protocol.ServerStopped: {"event": "'server_stopped'", "reason": STR},
    # the launch wire: daemon -> zygote -> supervisor, and the start-up reply
    launch.LaunchSandbox: {"name": STR, "layers": "a list of strings", "session_dir": STR,
                           "workspace": STR, "workspace_inside": STR, "host_image": BOOL,
                           "persist": "a list of strings", "home": STR,
                           "env": "an object of strings", "user_home": "a string or null",
                           "created": "an integer or null", "hide": "a list of strings",
                           "readonly_binds": "a list of LaunchBind objects",
                           "proxies": "a list of LaunchEndpoint objects"},
    launch.LaunchBind: {"source": STR, "target": STR, "directory": BOOL},
    launch.LaunchEndpoint: {"address": STR, "port": INT},
    launch.LaunchRequest: {"sandbox": "an object (LaunchSandbox)", "network": STR,
                           "coop_home": STR, "agent": "a list of strings",
                           "agent_env": "an object of strings", "shell": "a list of strings",
                           "auto_restart": BOOL, "restart_delay_ms": INT,
                           "restart_max_delay_ms": INT, "cols": INT, "rows": INT, "scrollback": INT,
                           "max_backlog": INT, "stop_grace": "a number",
                           "silence_burst": INT, "silence_after": "a number",
                           "web_idle": "a number",
                           "log_file": "a string or null", "inherited": "a list of strings",
                           "block_sequences": "a list of strings", "ctrl_c_debounce_ms": INT},
    launch.StartedReply: {"pid": INT},
    launch.FailedReply: {"error": STR},
}

BASES = {protocol.Request, protocol.Reply, protocol.Event, protocol.Control}


@pytest.mark.parametrize("cls", list(CONTRACT), ids=lambda c: c.__name__)
def test_contract(cls: type[schema.WireMessage]) -> None:
    assert schema.describe(cls) == CONTRACT[cls]


def test_every_message_is_pinned() -> None:
    declared = {obj for module in (protocol, launch) for obj in vars(module).values()
                if inspect.isclass(obj) and issubclass(obj, schema.WireMessage)
                and obj.__module__ == module.__name__ and obj not in BASES}
    assert declared == set(CONTRACT)


def test_every_wire_table_dispatches_its_declarations() -> None:
    assert set(protocol.COMMANDS) == {"create", "attach", "shell", "ls", "kill", "serve",
                                      "tunnel", "shutdown", "status", "logs", "restart",
                                      "close_pty"}
    assert set(protocol.SUPERVISOR_COMMANDS) == {"info", "attach", "shell", "restart",
                                                 "kill", "adopt", "detach_clients", "close",
                                                 "watch"}
    assert set(protocol.CLIENT_CONTROLS) == {"resize", "detach", "visibility", "active",
                                             "sizing"}
    assert set(protocol.WEB_CONTROLS) == {"resize", "detach", "visibility", "active",
                                          "sizing", "pause", "resume"}
    assert set(protocol.EVENTS) == {"pty_exited", "pty_restarting", "detached", "lagged",
                                    "blocked", "attention", "notice", "error", "attached",
                                    "session", "sessions", "server_stopped"}


def test_encoded_values() -> None:
    assert protocol.hello() == {"version": 1}
    assert protocol.handshake_ok() == {"ok": True, "version": 1}
    assert schema.encode(protocol.Detached()) == {"event": "detached"}
    assert protocol.error("X", "a\nb") == {"ok": False, "error": "X", "message": "a"}
    assert schema.encode(protocol.LsReply([])) == {"ok": True, "sessions": []}
    entry = protocol.SessionEntry(
        name="s", workspace="/w", pid=7, created=1, state="running",
        ptys=[protocol.PtyEntry(id=0, role="agent", command="sh", state="running",
                                attention=None),
              protocol.PtyEntry(id=1, role="shell", command="sh", state="running",
                                attention=protocol.PtyAttention("bell", 1700000000))],
        web_clients=0, local_clients=1, tunnel_clients=0)
    wire = schema.encode(protocol.LsReply([entry]))
    assert wire["sessions"][0]["ptys"] == [
        {"id": 0, "role": "agent", "command": "sh", "state": "running", "attention": None},
        {"id": 1, "role": "shell", "command": "sh", "state": "running",
         "attention": {"reason": "bell", "since": 1700000000}}]
    assert protocol.decode_reply(protocol.LsReply, wire) == protocol.LsReply([entry])
    assert schema.encode(protocol.PtyExited(0, 3)) == {"event": "pty_exited", "pty": 0,
                                                        "code": 3, "signal": None}
    assert schema.encode(protocol.Lagged(1, 9)) == {"event": "lagged", "pty": 1, "bytes": 9}
    assert schema.encode(protocol.Blocked(0, "exit", "blocked", 2)) == {
        "event": "blocked", "pty": 0, "sequence": "exit", "reason": "blocked", "count": 2}
    # attention: set with its reason (and a notification's text), cleared without
    assert schema.encode(protocol.Attention(0, True, "notification", "done")) == {
        "event": "attention", "pty": 0, "active": True, "reason": "notification",
        "text": "done"}
    assert schema.encode(protocol.Attention(2, True, "bell")) == {
        "event": "attention", "pty": 2, "active": True, "reason": "bell"}
    assert schema.encode(protocol.Attention(2, False)) == {"event": "attention", "pty": 2,
                                                           "active": False}
    # a request leaves out what it does not set; the receiver's defaults apply
    assert schema.encode(protocol.SupervisorAttach(cols=80)) == {
        "cmd": "attach", "pty": 0, "cols": 80, "kind": "local"}
    assert schema.encode(protocol.Attach(session="s")) == {"cmd": "attach", "session": "s"}


@pytest.mark.parametrize("message", [
    {"cmd": "ls"},
    {"cmd": "create", "workspace": "/w", "name": "n", "detach": True, "overrides": {}},
    {"cmd": "create", "workspace": "/w", "config": "/home/u/.config/coop/default.toml",
     "env": {"A": "b"}, "cols": 80, "rows": 24},
    {"cmd": "attach", "session": "n", "pty": 0, "cols": 80, "rows": 24, "offset": 0},
    {"cmd": "kill", "all": True, "force": False},
    {"cmd": "serve", "port": 8888, "host": "127.0.0.1"},
    {"cmd": "logs", "session": "n", "pty": 1, "lines": 10},
    {"cmd": "shutdown"},
])
def test_valid_commands_round_trip(message: dict[str, Any]) -> None:
    command = protocol.parse_command(message)
    assert message["cmd"] == command.TAG
    assert schema.encode(command) == message


def test_a_refusal_carries_the_peers_code() -> None:
    with pytest.raises(SessionNotFoundError, match="no session 'x'"):
        protocol.decode_reply(protocol.Ok, protocol.error("SESSION_NOT_FOUND", "no session 'x'"))
    with pytest.raises(RemoteError) as info:
        protocol.decode_reply(protocol.Ok, {"ok": False, "error": "PTY_NOT_FOUND"})
    assert info.value.code == "PTY_NOT_FOUND"
    with pytest.raises(ProtocolError, match="LsReply: missing field 'sessions'"):
        protocol.decode_reply(protocol.LsReply, {"ok": True})
    with pytest.raises(ProtocolError, match="'sessions' must be a list of SessionEntry"):
        protocol.decode_reply(protocol.LsReply, {"ok": True, "sessions": [{"name": 1}]})


def test_an_untrusted_coopfile_refusal_carries_what_it_asks() -> None:
    """The one refusal with more than a line: a client shows the user each ask and
    records their yes for the bytes the daemon read. Other refusals stay three keys."""
    asks = [("mount", "[workspace].mount", "..", "/home/u"),
            ("env", "[env].T", "$AWS_KEY", "AWS_KEY")]
    exc = UntrustedCoopfileError("~/w/coop.toml is not trusted: ...\nsecond line",
                                 path="/home/u/w/coop.toml", sha256="ab" * 32, asks=asks)
    wire = protocol.error_from(exc)
    assert wire == {"ok": False, "error": "UNTRUSTED_COOPFILE",
                    "message": "~/w/coop.toml is not trusted: ...",
                    "untrusted": {"path": "/home/u/w/coop.toml", "sha256": "ab" * 32, "asks": [
                        {"kind": "mount", "key": "[workspace].mount", "written": "..",
                         "target": "/home/u"},
                        {"kind": "env", "key": "[env].T", "written": "$AWS_KEY",
                         "target": "AWS_KEY"}]}}
    with pytest.raises(UntrustedCoopfileError) as info:
        protocol.decode_reply(protocol.CreateReply, json.loads(json.dumps(wire)))
    assert (info.value.path, info.value.sha256, info.value.asks) == (
        "/home/u/w/coop.toml", "ab" * 32, asks)
    assert info.value.code == "UNTRUSTED_COOPFILE"
    # a detail that does not fit is a plain refusal with the code (still exit 2)
    broken = {**wire, "untrusted": {"path": "/x"}}
    with pytest.raises(RemoteError) as plain:
        protocol.decode_reply(protocol.CreateReply, broken)
    assert plain.value.code == "UNTRUSTED_COOPFILE"
    assert protocol.error_from(RemoteError("gone", code="SESSION_NOT_FOUND")) == {
        "ok": False, "error": "SESSION_NOT_FOUND", "message": "gone"}


def test_a_pty_is_named_by_its_integer_id_as_ls_reports_it() -> None:
    assert protocol.parse_command({"cmd": "attach", "pty": 0}) == protocol.Attach(pty=0)
    for wire in ({"cmd": "attach", "pty": "0"}, {"cmd": "logs", "pty": "agent"}):
        with pytest.raises(ProtocolError, match="field 'pty' must be an integer"):
            protocol.parse_command(wire)
    request = protocol.parse_supervisor_command({"cmd": "attach", "pty": 2})
    assert isinstance(request, protocol.SupervisorAttach) and request.pty == 2


@pytest.mark.parametrize(("message", "words"), [
    ({}, "missing field 'cmd'"),
    ({"cmd": 3}, "'cmd' must be a string"),
    ({"cmd": "frobnicate"}, "unknown command 'frobnicate'"),
    ({"cmd": "create"}, "create: missing field 'workspace'"),
    ({"cmd": "create", "workspace": 7}, "create: field 'workspace' must be a string"),
    ({"cmd": "create", "workspace": "/w", "config": 7},
     "create: field 'config' must be a string"),
    ({"cmd": "create", "workspace": "/w", "overrides": []},
     "create: field 'overrides' must be an object"),
    ({"cmd": "create", "workspace": "/w", "env": {"A": 1}},
     "create: field 'env' must be an object of strings"),
    ({"cmd": "attach", "cols": "80"}, "attach: field 'cols' must be an integer"),
    ({"cmd": "attach", "cols": True}, "attach: field 'cols' must be an integer"),
    ({"cmd": "kill", "force": 1}, "kill: field 'force' must be a boolean"),
    ({"cmd": "ls", "verbose": True}, "ls: unknown field 'verbose'"),
    ({"cmd": "x" * 5000}, "unknown command"),
    ({"cmd": "ls", "y" * 5000: 1}, "ls: unknown field"),
])
def test_invalid_commands(message: dict[str, Any], words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.parse_command(message)
    assert info.value.code == "INVALID_COMMAND"
    assert words in info.value.message
    assert "\n" not in info.value.message
    assert len(info.value.message) < 120


@pytest.mark.parametrize("message", [
    {"cmd": "nope"}, {"cmd": "attach", "cols": "80"}, {"cmd": "kill", "force": 1},
    {"cmd": "attach", "kind": "ssh"}, {"cmd": "info", "extra": 1}, {},
    {"cmd": "attach", "cols": True}, {"cmd": "attach", "pty": "0"}, {"cmd": "adopt"},
    {"cmd": "create", "workspace": "/w"},  # a daemon command, not a supervisor's
])
def test_invalid_supervisor_commands(message: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.parse_supervisor_command(message)
    assert info.value.code == "INVALID_COMMAND"


def test_supervisor_commands_may_name_their_session() -> None:
    request = protocol.parse_supervisor_command(
        {"cmd": "attach", "pty": 0, "cols": 80, "session": "x"})
    assert request == protocol.SupervisorAttach(session="x", pty=0, cols=80)


def test_controls() -> None:
    assert protocol.parse_control({"type": "resize", "cols": 80, "rows": 24}) == \
        protocol.Resize(80, 24)
    assert protocol.parse_control({"type": "detach"}) == protocol.Detach()
    # what the window-size rule hears of a client (the web server relays them as sent)
    assert protocol.parse_control({"type": "visibility", "visible": False}) == \
        protocol.Visibility(False)
    assert protocol.parse_control({"type": "active"}) == protocol.Active()
    assert protocol.parse_control({"type": "sizing", "sizing": True}) == protocol.Sizing(True)
    for bad in ({"type": "resize", "cols": 80}, {"type": "nope"}, {}, {"type": 1},
                {"type": "pause"},  # a web client's flow control, not a socket's
                {"type": "visibility"}, {"type": "visibility", "visible": 0},
                {"type": "sizing", "sizing": "no"}, {"type": "active", "at": 1}):
        with pytest.raises(ProtocolError):
            protocol.parse_control(bad)
    web = protocol.WEB_CONTROLS
    assert protocol.parse_control({"type": "pause"}, web) == protocol.Pause()
    assert protocol.parse_control({"type": "resume"}, web) == protocol.Resume()
    with pytest.raises(ProtocolError):
        protocol.parse_control({"type": "pause", "now": True}, web)


def test_window_sizes_have_one_rule() -> None:
    protocol.check_window(1, 65535)
    for cols, rows in ((0, 24), (80, 65536), (True, 24)):
        with pytest.raises(ProtocolError) as info:
            protocol.check_window(cols, rows)
        assert info.value.code == "INVALID_COMMAND"


# --- the launch wire ----------------------------------------------------------------------

def _config() -> SupervisorConfig:
    box = SandboxConfig(name="s", layers=(Path("/l/1"), Path("/l/2")), persist=(".cache",),
                        session_dir=Path("/h/sessions/s"), workspace=Path("/w"),
                        env={"A": "b"}, user_home=None, created=5,
                        hide=(Path("/h"),),
                        readonly_binds=(("/c/ca.pem", "/run/coop/trust/1/ca.pem", False),
                                        ("/c/certs", "/run/coop/trust/2/certs", True)),
                        proxies=(("127.0.0.1", 3128), ("10.1.2.3", 8080)))
    return SupervisorConfig(sandbox=box, agent=("claude", "--x"), agent_env={"K": "v"},
                            stop_grace=2.0, log_file=Path("/h/logs/s.log"),
                            inherited=("http_proxy=http://***@127.0.0.1:3128", "no_proxy"),
                            block_sequences=(b"\x1b:q\r", b"rm -rf"), ctrl_c_debounce_ms=250,
                            web_idle=2.5)


def test_a_launch_round_trips() -> None:
    data = launch.encode_launch(_config(), network="veth", coop_home=Path("/h"))
    config, network, home = launch.decode_launch(data)
    assert (network, home) == ("veth", Path("/h"))
    assert config == _config()


Change = Callable[[dict[str, Any]], object]


@pytest.mark.parametrize(("change", "words"), [
    (lambda m: m.pop("agent"), "missing field 'agent'"),
    (lambda m: m.update(agent=[1]), "field 'agent' must be a list of strings"),
    (lambda m: m["sandbox"].update(host_image=1), "field 'host_image' must be a boolean"),
    (lambda m: m["sandbox"].update(extra=1), "unknown field 'extra'"),
    (lambda m: m.update(stop_grace="2"), "field 'stop_grace' must be a number"),
    (lambda m: m.update(agent=[]), "empty agent command"),
    (lambda m: m.update(block_sequences=["zz"]), "block_sequences must be hex"),
])
def test_a_malformed_launch_is_one_line(change: Change, words: str) -> None:
    message = json.loads(launch.encode_launch(_config(), network="none", coop_home=Path("/h")))
    change(message)
    with pytest.raises(SupervisorError) as info:
        launch.decode_launch(json.dumps(message).encode())
    assert info.value.message.startswith("malformed launch request: ")
    assert words in info.value.message


def test_start_up_replies() -> None:
    assert launch.parse_reply(launch.started_reply(42)) == 42
    with pytest.raises(SupervisorError, match=r"^no rootfs$"):
        launch.parse_reply(launch.failed_reply("no rootfs"))
    for bad in (b"", b"[]", b'{"pid": "1"}', b'{"pid": true}', b'{"error": 3}'):
        with pytest.raises(SupervisorError, match="malformed start-up reply"):
            launch.parse_reply(bad)


def test_error_codes_of_the_spec() -> None:
    spec = {"SESSION_NOT_FOUND", "SESSION_EXISTS", "PTY_NOT_FOUND", "INVALID_COMMAND",
            "VERSION_MISMATCH", "MESSAGE_TOO_LARGE", "ROOTFS_NOT_BUILT", "INVALID_COOPFILE",
            "UNTRUSTED_COOPFILE"}
    assert spec <= protocol.ERROR_CODES


def test_handshake() -> None:
    protocol.check_hello({"version": 1})
    for bad in ({"version": 2}, {"version": "1"}, {"version": True}, {}, {"cmd": "ls"},
                {"version": 1, "extra": 1}):
        with pytest.raises(ProtocolError) as info:
            protocol.check_hello(bad)
        assert info.value.code == "VERSION_MISMATCH"
    protocol.check_handshake_reply({"version": 1, "ok": True})
    with pytest.raises(ProtocolError) as info:
        protocol.check_handshake_reply({"ok": False, "error": "VERSION_MISMATCH",
                                        "message": "nope"})
    assert info.value.message == "nope"


