"""The daemon hands clients' sockets to supervisors: it only talks to sockets that are
ours (no symlink, our owner, a listener running as us), also when rediscovering."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coop_build.paths import CoopPaths
from coop_run.daemon.registry import SessionRegistry
from coop_run.ipc import protocol
from coop_run.ipc.framing import FrameDecoder, encode_message
from coop_run.ipc.schema import encode
from support.bench import CoopEnv


class FakeSupervisor:
    """Answers the handshake and ``info`` like a supervisor, on a real socket."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.settimeout(5.0)
                decoder = FrameDecoder()
                entry = protocol.SessionEntry(
                    name=self.name, workspace="/", pid=os.getpid(), created=1,
                    state="running", ptys=[], web_clients=0, local_clients=0,
                    tunnel_clients=0)
                info = encode(protocol.InfoReply(session=entry, ptys=[]))
                for reply in (protocol.handshake_ok(), info):
                    messages: list[object] = []
                    while not messages:
                        data = conn.recv(65536)
                        if not data:
                            break
                        messages = list(decoder.feed(data))
                    if not messages:
                        break
                    conn.sendall(encode_message(reply))

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5.0)
        self.listener.close()
        assert not self.thread.is_alive()


@pytest.fixture
def sessions(coop_env: CoopEnv) -> Path:
    path = CoopPaths(coop_env.coop_home).sessions
    path.mkdir(parents=True)
    return path


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[socket.socket]:
    """A listening socket nobody accepts on: a connection would wait in its backlog."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "elsewhere.sock"))
    listener.listen(4)
    listener.setblocking(False)
    yield listener
    listener.close()


def _session_dir(sessions: Path, name: str) -> Path:
    path = sessions / name
    path.mkdir(mode=0o700)
    (path / "supervisor.json").write_text(json.dumps({"pid": os.getpid(), "name": name}))
    return path


def test_a_plain_socket_of_ours_is_rediscovered(sessions: Path, tmp_path: Path,
                                               coop_env: CoopEnv) -> None:
    path = _session_dir(sessions, "good")
    server = FakeSupervisor(path / "supervisor.sock", "good")
    try:
        registry = SessionRegistry(CoopPaths(coop_env.coop_home))
        assert registry.rediscover() == ["good"]  # positive control for the test below
        assert server.accepted == 1
    finally:
        server.close()


def test_a_symlinked_supervisor_socket_is_refused(sessions: Path, elsewhere: socket.socket,
                                                 coop_env: CoopEnv) -> None:
    path = _session_dir(sessions, "evil")
    (path / "supervisor.sock").symlink_to(elsewhere.getsockname())
    registry = SessionRegistry(CoopPaths(coop_env.coop_home))
    assert registry.rediscover() == []
    with pytest.raises(BlockingIOError):  # never even connected: the backlog is empty
        elsewhere.accept()
