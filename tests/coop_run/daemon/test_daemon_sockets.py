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
from coop_run.daemon.server import Daemon
from coop_run.errors import DaemonError, SocketPathError
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


# --- shutdown with a connected client, in-process -------------------------------------

def test_shutdown_runs_the_closers_and_hangs_up_on_every_client(tmp_path: Path) -> None:
    """``shutdown`` from one client runs the shutdown closers (web server, tunnels), hangs
    up on the other clients (attached terminals live in the supervisors, which send their
    ``detached``) and removes the socket and pid file."""
    paths = CoopPaths(tmp_path / "dhome")
    paths.home.mkdir()
    sock_path = paths.home / "sock"
    daemon = Daemon(paths, sock_path, idle_seconds=60)
    closed: list[str] = []

    async def close_web_server() -> None:
        closed.append("web")

    daemon.on_shutdown(close_web_server)
    ready = threading.Event()
    results: dict[str, Any] = {}

    def client_side() -> None:
        try:
            ready.wait(10)
            with RawClient(sock_path) as idle, RawClient(sock_path) as admin:
                idle.hello()
                admin.hello()
                results["shutdown"] = admin.request({"cmd": "shutdown"})
                idle.sock.settimeout(10)
                results["idle"] = idle.sock.recv(65536)
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
    assert results["idle"] == b""  # hung up on, nothing sent
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
