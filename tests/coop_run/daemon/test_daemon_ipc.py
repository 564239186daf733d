"""The real daemon on its socket: handshake, refusals, and everybody else still served."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from daemon_support import Coop
from ipc_helpers import RawClient, header
from other_uid import as_other_user, cooptest_user

from coop_run.ipc.framing import MAX_FRAME_SIZE
from support.procs import pid_alive, wait_for


def test_handshake_and_ls(coop: Coop, daemon: int) -> None:
    with RawClient(coop.socket) as client:
        assert client.request({"version": 1}) == {"version": 1, "ok": True}
        assert client.request({"cmd": "ls"}) == {"ok": True, "sessions": []}
        status = client.request({"cmd": "status"})
        assert status["ok"] is True and status["pid"] == daemon
        assert status["sessions"] == 0 and status["clients"] == 1
        assert status["uptime"] >= 0


def test_version_mismatch_is_answered_then_closed(coop: Coop, daemon: int) -> None:
    with RawClient(coop.socket) as bad, RawClient(coop.socket) as good:
        good.hello()
        reply = bad.request({"version": 2})
        assert reply["ok"] is False and reply["error"] == "VERSION_MISMATCH"
        assert "version 2" in reply["message"]
        assert bad.closed_by_peer()
        assert good.request({"cmd": "ls"})["ok"] is True


def test_command_before_handshake_is_refused(coop: Coop, daemon: int) -> None:
    with RawClient(coop.socket) as client:
        reply = client.request({"cmd": "ls"})
        assert reply["error"] == "VERSION_MISMATCH"
        assert client.closed_by_peer()


def test_oversize_is_refused_and_others_are_served(coop: Coop, daemon: int) -> None:
    with RawClient(coop.socket) as big, RawClient(coop.socket) as other:
        other.hello()
        big.hello()
        # Only the header: the daemon must refuse without waiting for 2 MiB to arrive.
        big.send_raw(header(2 * MAX_FRAME_SIZE))
        reply = big.receive()
        assert reply["ok"] is False and reply["error"] == "MESSAGE_TOO_LARGE"
        assert big.closed_by_peer()
        assert other.request({"cmd": "ls"}) == {"ok": True, "sessions": []}
    with RawClient(coop.socket) as late:
        late.hello()
        assert late.request({"cmd": "ls"})["ok"] is True
    assert pid_alive(daemon)


def test_oversize_with_its_payload_streaming_in(coop: Coop, daemon: int) -> None:
    with RawClient(coop.socket) as big:
        big.hello()
        big.send_raw(header(MAX_FRAME_SIZE + 1) + b"{" + b" " * 65536)
        assert big.receive()["error"] == "MESSAGE_TOO_LARGE"
        assert big.closed_by_peer()


def test_garbage_frames_are_refused_and_the_connection_carries_on(
        coop: Coop, daemon: int) -> None:
    with RawClient(coop.socket) as client:
        client.hello()
        for payload in (b"hello", b"[1,2,3]", b"\xff\xfe", b"[" * 50_000):
            client.send_raw(header(len(payload)) + payload)
            reply = client.receive()
            assert reply["ok"] is False and reply["error"] == "MALFORMED_MESSAGE", reply
        assert client.request({"cmd": "ls"})["ok"] is True


def test_garbage_before_handshake_closes(coop: Coop, daemon: int) -> None:
    with RawClient(coop.socket) as client, RawClient(coop.socket) as other:
        other.hello()
        client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # "GET " as a length is ~1.2 GB: refused as too large, then closed.
        assert client.receive()["error"] == "MESSAGE_TOO_LARGE"
        assert client.closed_by_peer()
        assert other.request({"cmd": "ls"})["ok"] is True


@pytest.mark.parametrize(("message", "code"), [
    ({"cmd": "frobnicate"}, "INVALID_COMMAND"),
    ({"nocmd": 1}, "INVALID_COMMAND"),
    ({"cmd": "kill", "force": "yes"}, "INVALID_COMMAND"),
    ({"cmd": "ls", "extra": 1}, "INVALID_COMMAND"),
    ({"cmd": "tunnel"}, "NOT_SUPPORTED"),  # known, but served by a later issue
])
def test_unknown_or_invalid_commands(coop: Coop, daemon: int, message: dict[str, object],
                                     code: str) -> None:
    with RawClient(coop.socket) as client:
        client.hello()
        reply = client.request(message)
        assert reply["ok"] is False and reply["error"] == code, reply
        assert set(reply) == {"ok", "error", "message"}
        assert client.request({"cmd": "ls"})["ok"] is True


def test_many_frames_in_one_write(coop: Coop, daemon: int) -> None:
    from coop_run.ipc.framing import encode_message

    with RawClient(coop.socket) as client:
        client.hello()
        client.send_raw(b"".join(encode_message({"cmd": "ls"}) for _ in range(50)))
        for _ in range(50):
            assert client.receive() == {"ok": True, "sessions": []}


def test_socket_and_pid_file_are_private(coop: Coop, daemon: int) -> None:
    st = coop.socket.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert stat.S_IMODE(coop.pid_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(coop.log.stat().st_mode) == 0o600
    assert stat.S_IMODE(coop.coop_home.stat().st_mode) == 0o700


def test_log_has_events_but_not_the_environment(coop: Coop, daemon: int) -> None:
    secret = "s3cr3t-token-value-123"
    os.environ["COOP_TEST_SECRET_VALUE"] = secret  # visible to nothing the daemon logs
    with RawClient(coop.socket) as client:
        client.hello()
        client.request({"cmd": "frobnicate", "token": secret})
    coop("shutdown")
    wait_for(lambda: not pid_alive(daemon), 10.0, "daemon exit")
    text = coop.log.read_text()
    assert "listening on" in text and "shutting down" in text
    assert secret not in text


@pytest.mark.rootonly
def test_connection_from_another_uid_is_dropped(coop: Coop) -> None:
    """Even with the socket opened up by mistake, another uid gets no answer at all."""
    user = cooptest_user()
    sock_dir = Path(tempfile.mkdtemp(prefix="coop-sock-"))
    try:
        sock_dir.chmod(0o711)
        sock = sock_dir / "sock"
        result = coop("--socket", str(sock), "ls")
        assert result.returncode == 0, result
        sock.chmod(0o666)  # only so that the kernel lets the other user connect
        with RawClient(sock) as mine:
            mine.hello()

            def connect_as_other() -> bytes:
                other = RawClient(sock)
                try:
                    other.send({"version": 1})
                    got = other.sock.recv(65536)  # b"" when dropped without a reply
                except (ConnectionResetError, BrokenPipeError):
                    got = b""  # dropped while our hello was still unread
                return b"dropped" if got == b"" else b"answered:" + got[:50]

            verdict = as_other_user(user, connect_as_other)
            assert verdict == "dropped", verdict
            assert mine.request({"cmd": "ls"})["ok"] is True
        wait_for(lambda: f"from uid {user.pw_uid}" in coop.log.read_text(), 5.0,
                 "the refusal in the daemon log")
    finally:
        coop("--socket", str(sock_dir / "sock"), "shutdown")
        pid = wait_for(lambda: not (sock_dir / "sock").exists(), 10.0, "socket removal")
        assert pid
        sock_dir.rmdir()
