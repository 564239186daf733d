"""Binding the socket safely, and the daemon's shutdown seen by an attached client."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from ipc_helpers import RawClient

from coop_build.paths import CoopPaths
from coop_run.daemon.server import Connection, Daemon
from coop_run.errors import DaemonError, SocketPathError
from coop_run.ipc import protocol
from coop_run.ipc.framing import Control, StreamDecoder
from coop_run.ipc.sockets import bind_unix_socket, check_socket_path, peer_uid


def test_bound_socket_is_0600_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        sock = bind_unix_socket(tmp_path / "s")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE((tmp_path / "s").lstat().st_mode) == 0o600
        assert os.umask(old) == old  # the umask was restored
    finally:
        sock.close()


def test_peer_uid(tmp_path: Path) -> None:
    server = bind_unix_socket(tmp_path / "s")
    with server, socket.socket(socket.AF_UNIX) as client:
        client.connect(str(tmp_path / "s"))
        conn, _ = server.accept()
        with conn:
            assert peer_uid(conn) == os.geteuid()


def test_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "s").symlink_to(tmp_path / "target")
    with pytest.raises(SocketPathError, match="symlink"):
        bind_unix_socket(tmp_path / "s")
    assert not (tmp_path / "target").exists()


def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("precious")
    with pytest.raises(SocketPathError, match="not a socket"):
        bind_unix_socket(tmp_path / "s")
    assert (tmp_path / "s").read_text() == "precious"


def test_refuses_a_live_socket(tmp_path: Path) -> None:
    first = bind_unix_socket(tmp_path / "s")
    with first, pytest.raises(DaemonError, match="already listens"):
        bind_unix_socket(tmp_path / "s")


def test_replaces_a_stale_socket(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "s"))
    stale.close()
    with bind_unix_socket(tmp_path / "s") as sock, socket.socket(socket.AF_UNIX) as client:
        client.connect(str(tmp_path / "s"))
        sock.accept()[0].close()


def test_refuses_a_path_too_long(tmp_path: Path) -> None:
    with pytest.raises(SocketPathError, match="too long"):
        check_socket_path(tmp_path / ("x" * 120))


@pytest.mark.rootonly
def test_refuses_a_socket_owned_by_another_user(tmp_path: Path) -> None:
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(tmp_path / "s"))
    other.close()
    os.chown(tmp_path / "s", 4242, 4242)
    with pytest.raises(SocketPathError, match="belongs to uid 4242"):
        bind_unix_socket(tmp_path / "s")
    assert (tmp_path / "s").exists()


@pytest.mark.rootonly
def test_refuses_a_directory_owned_by_another_user(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    os.chown(directory, 4242, 4242)
    with pytest.raises(SocketPathError, match="belongs to uid 4242"):
        bind_unix_socket(directory / "s")


# --- shutdown with an attached (stream-mode) client, in-process ---------------------------

def test_shutdown_sends_detached_to_attached_clients(tmp_path: Path) -> None:
    """A stand-in ``attach`` handler puts the connection in stream mode; ``shutdown`` from
    another client must reach it as a ``detached`` control frame, then end the daemon."""
    paths = CoopPaths(tmp_path / "dhome")
    paths.home.mkdir()
    sock_path = paths.home / "sock"
    daemon = Daemon(paths, sock_path, idle_seconds=60)

    async def attach(conn: Connection, _command: protocol.Command) -> dict[str, Any]:
        conn.stream = True
        daemon.streams.add(conn)
        return protocol.ok(pty="agent")

    daemon.register("attach", attach)
    closed: list[str] = []

    async def close_web_server() -> None:
        closed.append("web")

    daemon.on_shutdown(close_web_server)
    ready = threading.Event()
    results: dict[str, Any] = {}

    def client_side() -> None:
        try:
            ready.wait(10)
            with RawClient(sock_path) as attached, RawClient(sock_path) as admin:
                attached.hello()
                assert attached.request({"cmd": "attach"})["ok"] is True
                admin.hello()
                results["shutdown"] = admin.request({"cmd": "shutdown"})
                decoder = StreamDecoder()
                items: list[Any] = []
                attached.sock.settimeout(10)
                while data := attached.sock.recv(65536):
                    items.extend(decoder.feed(data))
                results["attached"] = items
        except BaseException as exc:
            results["error"] = exc

    thread = threading.Thread(target=client_side)
    thread.start()
    try:
        asyncio.run(asyncio.wait_for(daemon.run(ready.set), 20))
    finally:
        ready.set()
        thread.join(20)
    assert "error" not in results, results
    assert results["shutdown"] == {"ok": True, "pid": os.getpid()}
    assert results["attached"] == [Control({"event": "detached"})]
    assert closed == ["web"]
    assert not sock_path.exists()
    assert not (paths.home / "daemon.pid").exists()


def test_exiting_daemon_never_removes_a_live_socket(tmp_path: Path) -> None:
    """Inode numbers get reused: an old daemon on its way out must not delete the socket
    a new daemon has bound in its place, even if the inode number matches."""
    from coop_run.daemon.server import _file_id

    paths = CoopPaths(tmp_path / "dhome")
    paths.home.mkdir()
    sock_path = paths.home / "sock"
    old = Daemon(paths, sock_path)
    with bind_unix_socket(sock_path):  # the "new" daemon's listener
        old._socket_id = _file_id(sock_path)
        old._remove_files()
        assert sock_path.exists()
    old._socket_id = _file_id(sock_path)  # now nobody listens: it is ours to remove
    old._remove_files()
    assert not sock_path.exists()
