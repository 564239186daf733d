"""Starting and stopping the bench's loopback servers (registry, mirror, hub) by PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .procs import pid_alive, stop_pid, wait_for

START_TIMEOUT = 20.0

# PIDs of the bench's own long-running servers: the leak check leaves these alone.
BENCH_PIDS: set[int] = set()

# Variables that would redirect or authenticate the bench's own traffic.
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy",
              "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "FTP_PROXY", "NO_PROXY")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for bench subprocesses: no proxies, no registry config overrides."""
    env = {k: v for k, v in os.environ.items()
           if k not in PROXY_VARS and not k.startswith("REGISTRY_")
           and k not in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE")}
    if extra:
        env.update(extra)
    return env


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET without any proxy; returns (status, body), HTTP errors included."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _answers(url: str) -> bool:
    try:
        http_get(url, timeout=1.0)
    except OSError:
        return False
    return True


@dataclass
class Server:
    """A server subprocess started by the bench, logging to ``log``."""

    name: str
    pid: int
    log: Path
    proc: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def check_running(self) -> bool:
        """True while running; raises with the log tail once it has died."""
        if pid_alive(self.pid):
            return True
        self.proc.poll()
        raise RuntimeError(f"{self.name} exited early (status {self.proc.returncode}): "
                           f"{self.log_tail()}")

    def stop(self) -> None:
        stop_pid(self.pid, timeout=5.0)
        BENCH_PIDS.discard(self.pid)
        self.proc.poll()  # the child is already reaped; this only settles the Popen object


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Server:
    """Starts ``argv`` in its own session (Ctrl-C in pytest must not kill it mid-teardown)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=env if env is not None else clean_env(),
                                start_new_session=True)
    BENCH_PIDS.add(proc.pid)
    return Server(name=name, pid=proc.pid, log=log, proc=proc)


def wait_ready(server: Server, url: str, timeout: float = START_TIMEOUT) -> None:
    """Waits until ``url`` answers HTTP (any status), failing fast if the server died."""
    try:
        wait_for(lambda: server.check_running() and _answers(url), timeout,
                 f"{server.name} to answer {url}")
    except BaseException:
        server.stop()
        raise


def python_server(name: str, script: str, args: list[str],
                  workdir: Path) -> tuple[Server, dict[str, int]]:
    """Runs one of the bench's own server scripts; it binds port 0 and reports its ports.

    The script writes ``{"port": P, ...}`` to ``workdir/ports.json`` once listening, which
    avoids the race of picking a free port first and binding it later.
    """
    ports_file = workdir / "ports.json"
    ports_file.unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).with_name(script)), "--ports-file",
            str(ports_file), *args]
    server = spawn(name, argv, workdir / f"{name}.log")
    try:
        wait_for(lambda: server.check_running() and ports_file.exists(), START_TIMEOUT,
                 f"{name} to report its ports")
    except BaseException:
        server.stop()
        raise
    ports: dict[str, int] = json.loads(ports_file.read_text())
    return server, ports


@dataclass(frozen=True)
class Registry:
    """Debian's docker-registry on 127.0.0.1 for one test session."""

    host: str
    url: str
    pid: int
    root: Path


REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
"""


def start_registry(workdir: Path, port: int) -> tuple[Registry, Server]:
    """Writes a minimal config, starts ``docker-registry serve``, waits for ``/v2/``."""
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yml"
    host = f"127.0.0.1:{port}"
    config.write_text(REGISTRY_CONFIG.format(root=storage, addr=host))
    server = spawn("docker-registry", ["docker-registry", "serve", str(config)],
                   workdir / "registry.log")
    url = f"http://{host}"
    wait_ready(server, url + "/v2/")
    return Registry(host=host, url=url, pid=server.pid, root=storage), server
