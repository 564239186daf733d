#!/usr/bin/env python3
"""Web terminal benchmarks of issue 12, point 11 (not collected by pytest; run by hand or
from `just bench`).

    python tests/bench/bench_web.py [-n REPS] [--only w1,w2,w3] [--strict]

The anchor is Jupyter's terminado (the Python web terminal people already use): a tornado
server with a ``UniqueTermManager`` and its ``TermSocket`` on 127.0.0.1, in a process of its
own, serving the same command as coop's session (``/bin/sh`` on a PTY, in the same
workspace). coop's side is the real CLI: a daemon with its own COOP_HOME, an
``image = "host"`` session whose agent is ``/bin/sh``, and ``coop serve -d`` on 127.0.0.1.
One aiohttp client process speaks each server's protocol as a browser tab's script would:
coop's binary frames are decoded as UTF-8 (what xterm.js does with them), terminado's JSON
messages are parsed (what its page does); the client's own CPU and decode time are printed,
so a client that is the bottleneck shows. Alternating coop, terminado (each first in every
other round) and a bare PTY, so all see the same load:

  w1  30 MB of agent output (``cat`` of bench_sessions' 30 MB text file, then a sentinel)
      drained over the WebSocket: from typing the command into an open socket until the
      sentinel arrives, coop vs terminado (and vs a bare PTY, for reference); REPS times.
      A round in which coop dropped output for its client (``lagged``: the client fell
      over 1 MiB behind, which only a machine that stalls it causes) is repeated whole
      and counted in the note: a drain has to deliver all 30 MB
  w2  keystroke echo round trip (one byte sent, until its echo comes back) over the
      WebSocket: coop vs terminado, and coop minus a bare PTY; 500 keystrokes each
  w3  the daemon's RSS with the server on and 10 idle web clients (all on the session's
      agent PTY, each reading as an idle tab does), minus the same daemon before
      ``coop serve`` (one session running, aiohttp not imported yet)

Private COOP_HOME; only 127.0.0.1; everything started is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from bench_sessions import (  # noqa: E402
    BIG_BYTES,
    COLS,
    COOP,
    ROWS,
    Bench,
    Row,
    Term,
    print_table,
    write_big,
)

from coop_build.namespace import force_rmtree  # noqa: E402
from support.benchkit import memory_kib  # noqa: E402
from support.procs import stop_pid, with_descendants  # noqa: E402

SHELL = "/bin/sh"
TIMEOUT = 60.0
ECHO_ROUNDS, ECHO_KEYS = 10, 50  # 500 keystrokes per side, in rounds of 50 alternated
IDLE_CLIENTS = 10
LINK = re.compile(r"^  Local:\s+http://127\.0\.0\.1:(\d+)/", re.M)
WEB_TARGETS = {"w1": 0.6, "w2": 1.0, "w2b": 1.0, "w3": 30.0}


def cpu_seconds(pid: int) -> float:
    """User plus system time of ``pid`` (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Lagged(Exception):
    """coop dropped output for this client: it fell more than the supervisor's backlog
    limit (1 MiB) behind, as a client does when the machine stalls it."""


# --- the two clients -----------------------------------------------------------------------


class WebTerm:
    """One terminal's WebSocket as a page's script uses it: keys out, terminal text in.

    ``decode`` turns one message into the text a terminal emulator would be given (None
    for a message that carries none); its time is summed in ``decoding``.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.serial = 0
        self.decoding = 0.0
        self.received = 0  # characters of terminal output
        self.messages = 0  # WebSocket messages that carried some

    async def send(self, keys: str) -> None:
        raise NotImplementedError

    def decode(self, message: aiohttp.WSMessage) -> str | None:
        raise NotImplementedError

    async def read_until(self, token: str, timeout: float = TIMEOUT) -> None:
        tail = ""
        keep = len(token) - 1
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await self.ws.receive()
                    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                        aiohttp.WSMsgType.ERROR):
                        raise SystemExit(f"bench: {type(self).__name__}'s socket ended "
                                         f"({message.type.name}; last {tail[-200:]!r})")
                    start = time.perf_counter()
                    text = self.decode(message)
                    self.decoding += time.perf_counter() - start
                    if text is None:
                        continue
                    self.received += len(text)
                    self.messages += 1
                    tail = tail[-keep:] + text if keep else text
                    if token in tail:
                        return
        except TimeoutError:
            raise SystemExit(f"bench: {token!r} did not arrive on {type(self).__name__} "
                             f"within {timeout:g}s (last {tail[-200:]!r})") from None

    async def sync(self) -> None:
        """Type a command with a fresh sentinel and wait for its output: the shell is idle."""
        self.serial += 1
        n = self.serial * 7
        await self.send(f"echo S{n}X$((1+1))\r")
        await self.read_until(f"S{n}X2")

    async def burst(self, path: str) -> float:
        """Seconds from typing `cat path` to the sentinel after its output."""
        self.serial += 1
        n = self.serial * 7
        start = time.perf_counter()
        await self.send(f"cat {path}; echo B{n}X$((2+3))\r")
        await self.read_until(f"B{n}X5")
        return time.perf_counter() - start

    async def resync(self, tries: int = 5) -> None:
        """``sync`` after a drain was cut short: it reads past the rest of the burst."""
        for _ in range(tries):
            try:
                await self.sync()
            except Lagged:
                continue
            return
        raise SystemExit(f"bench: {type(self).__name__} kept lagging")

    async def echo_round_trips(self, count: int) -> list[float]:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            await self.send("a")
            await self.read_until("a", timeout=5)
            times.append(time.perf_counter() - start)
        await self.send("\x15")  # kill the typed line
        await self.sync()
        return times


class CoopTerm(WebTerm):
    """coop's ``/ws``: binary frames of terminal bytes both ways, JSON events as text."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__(ws)
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, port: int, token: str,
                   name: str) -> CoopTerm:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{port}/ws", max_msg_size=0,
            params={"session": name, "pty": "0", "token": token, "cols": str(COLS),
                    "rows": str(ROWS)})
        first = await ws.receive(TIMEOUT)
        if first.type != aiohttp.WSMsgType.TEXT or json.loads(first.data).get(
                "event") != "attached":
            raise SystemExit(f"bench: coop's socket did not attach: {first}")
        return cls(ws)

    async def send(self, keys: str) -> None:
        await self.ws.send_bytes(keys.encode())

    def decode(self, message: aiohttp.WSMessage) -> str | None:
        if message.type == aiohttp.WSMsgType.BINARY:
            return self.utf8.decode(message.data)
        event = json.loads(message.data)
        if event.get("event") == "lagged":
            raise Lagged(f"{event['bytes']} bytes dropped")
        if event.get("event") in ("pty_exited", "detached"):
            raise SystemExit(f"bench: coop's terminal ended: {event}")
        return None


class TerminadoTerm(WebTerm):
    """terminado's ``TermSocket``: JSON arrays as text frames, ``["stdin", keys]`` out and
    ``["stdout", text]`` in."""

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, port: int) -> TerminadoTerm:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/websocket", max_msg_size=0)
        first = await ws.receive(TIMEOUT)
        if first.type != aiohttp.WSMsgType.TEXT or json.loads(first.data)[0] != "setup":
            raise SystemExit(f"bench: terminado's socket did not set up: {first}")
        await ws.send_str(json.dumps(["set_size", ROWS, COLS]))
        return cls(ws)

    async def send(self, keys: str) -> None:
        await self.ws.send_str(json.dumps(["stdin", keys]))

    def decode(self, message: aiohttp.WSMessage) -> str | None:
        kind, *rest = json.loads(message.data)
        if kind == "stdout":
            return str(rest[0])
        if kind == "disconnect":
            raise SystemExit("bench: terminado's terminal ended")
        return None


@dataclass
class Drains:
    """One side's 30 MB drains: what the client measured and its servers' CPU."""

    server_cpu: dict[str, list[float]]  # per server process, seconds per drain
    wall: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    decoding: list[float] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)

    async def run(self, term: WebTerm, path: str, pids: dict[str, int]) -> bool:
        """One drain of ``path`` through ``term``, checked to be complete; False (nothing
        recorded) when coop dropped part of it for a lagging client."""
        before = {name: cpu_seconds(pids[name]) for name in self.server_cpu}
        decoding, received, messages = term.decoding, term.received, term.messages
        cpu = time.process_time()
        try:
            wall = await term.burst(path)
        except Lagged:
            await term.resync()
            return False
        self.client_cpu.append(time.process_time() - cpu)
        self.wall.append(wall)
        for name, spent in self.server_cpu.items():
            spent.append(cpu_seconds(pids[name]) - before[name])
        self.decoding.append(term.decoding - decoding)
        self.messages.append(term.messages - messages)
        if term.received - received < BIG_BYTES:
            raise SystemExit(f"bench: {type(term).__name__} got {term.received - received} "
                             f"characters of {BIG_BYTES}")
        return True

    def forget_last(self) -> None:
        for figures in (self.wall, self.client_cpu, self.decoding, self.messages,
                        *self.server_cpu.values()):
            figures.pop()

    def rate(self, mb: float) -> str:
        return f"{mb / statistics.median(self.wall):.0f}"

    def client_text(self, decoding: str) -> str:
        med = statistics.median
        return (f"{med(self.client_cpu) * 1000:.0f} ms ({decoding} took "
                f"{med(self.decoding) * 1000:.0f} ms of wall time, {med(self.messages):.0f} "
                f"messages)")

    def servers_text(self) -> str:
        return " + ".join(f"{name} {statistics.median(spent) * 1000:.0f} ms"
                          for name, spent in self.server_cpu.items())


# --- terminado's server, in a process of its own -------------------------------------------


async def terminado_server() -> None:
    """Serve ``SHELL`` on a fresh PTY per WebSocket at /websocket on 127.0.0.1 (a port the
    kernel picks, printed on stdout) until SIGTERM; then end every terminal."""
    import tornado.httpserver
    import tornado.netutil
    import tornado.web
    from terminado import TermSocket, UniqueTermManager

    manager = UniqueTermManager(shell_command=[SHELL], term_settings={"type": "xterm"})
    app = tornado.web.Application([(r"/websocket", TermSocket, {"term_manager": manager})])
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.stop()
    await manager.shutdown()


# --- the bench ---------------------------------------------------------------------------


class WebBench(Bench):
    def __init__(self, scratch: Path, reps: int) -> None:
        super().__init__(scratch, reps)
        self.token = secrets.token_urlsafe(24)
        self.port = 0
        self.terminado: subprocess.Popen[str] | None = None
        self.terminado_port = 0

    def ls_entry(self, name: str) -> dict[str, Any]:
        for entry in json.loads(self.coop("ls", "--json")):
            if entry["name"] == name:
                return dict(entry)
        raise SystemExit(f"bench: session {name} is not listed")

    def wait_web_clients(self, name: str, count: int) -> None:
        deadline = time.monotonic() + 20
        while self.ls_entry(name)["web_clients"] != count:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: session {name} never had {count} web clients")

    def supervisor_pid(self) -> int:
        (pid,) = self.supervisor_pids()
        return pid

    def serve(self) -> None:
        out = self.coop("serve", "-d", "-p", "0", "-H", "127.0.0.1", "--token", self.token)
        found = LINK.search(out)
        if found is None:
            raise SystemExit(f"bench: no local URL in coop serve's output:\n{out}")
        self.port = int(found.group(1))

    def start_terminado(self, ws: Path) -> None:
        self.terminado = subprocess.Popen(
            [sys.executable, __file__, "--terminado-server"], cwd=ws, env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        assert self.terminado.stdout is not None
        line = self.terminado.stdout.readline()
        if not line.strip().isdigit():
            raise SystemExit(f"bench: terminado's server did not start ({line!r})")
        self.terminado_port = int(line)

    def stop_terminado(self) -> None:
        if self.terminado is None:
            return
        left = with_descendants([self.terminado.pid])
        stop_pid(self.terminado.pid)
        for pid in left:  # a shell its manager did not end (it ends them all on SIGTERM)
            if Path(f"/proc/{pid}").exists():
                stop_pid(pid)
        self.terminado = None

    # w3, first: the daemon has done nothing else yet
    async def memory(self, session: aiohttp.ClientSession, name: str) -> Row:
        daemon = self.daemon_pid()
        supervisor = self.supervisor_pid()
        rss0, pss0, _ = memory_kib(daemon)
        sup0 = memory_kib(supervisor)[0]
        self.serve()
        rss_on, pss_on, _ = memory_kib(daemon)
        clients = [await CoopTerm.open(session, self.port, self.token, name)
                   for _ in range(IDLE_CLIENTS)]

        async def idle(term: CoopTerm) -> None:
            async for _ in term.ws:  # reading answers the heartbeat's pings, as a tab does
                pass

        readers = [asyncio.create_task(idle(term)) for term in clients]
        await asyncio.to_thread(self.wait_web_clients, name, IDLE_CLIENTS)
        rss, pss, _ = memory_kib(daemon)
        sup = memory_kib(supervisor)[0]
        for term in clients:
            await term.ws.close()
        await asyncio.gather(*readers)
        await asyncio.to_thread(self.wait_web_clients, name, 0)
        return Row(f"w3 daemon RSS: server + {IDLE_CLIENTS} idle web clients minus bare (MB)",
                   [(rss - rss0) / 1024], [], WEB_TARGETS["w3"], kind="abs",
                   note=f"the daemon with one session running, before coop serve: RSS "
                        f"{rss0 / 1024:.1f}, PSS {pss0 / 1024:.1f} MB; server on, no client: "
                        f"RSS {rss_on / 1024:.1f}, PSS {pss_on / 1024:.1f} MB; with "
                        f"{IDLE_CLIENTS} idle clients on the agent PTY: RSS {rss / 1024:.1f}, "
                        f"PSS {pss / 1024:.1f} MB (PSS +{(pss - pss0) / 1024:.1f} MB); the "
                        f"session's supervisor RSS {sup0 / 1024:.1f} -> {sup / 1024:.1f} MB")

    # w1, w2
    async def terminals(self, session: aiohttp.ClientSession, name: str,
                        wanted: set[str]) -> list[Row]:
        if not self.port:
            self.serve()
        coop = await CoopTerm.open(session, self.port, self.token, name)
        tado = await TerminadoTerm.open(session, self.terminado_port)
        bare = self.term([SHELL], cwd=self.big.parent)
        for term in (coop, tado):
            await term.sync()
        bare.sync()
        assert self.terminado is not None
        servers = {"coop's daemon": self.daemon_pid(), "supervisor": self.supervisor_pid(),
                   "terminado": self.terminado.pid}
        rows: list[Row] = []
        if "w1" in wanted:
            rows += await self.drain(coop, tado, bare, servers)
        if "w2" in wanted:
            rows += await self.echo(coop, tado, bare)
        await coop.ws.close()
        await tado.ws.close()
        self.drop(bare)
        return rows

    async def drain(self, coop: CoopTerm, tado: TerminadoTerm, bare: Term,
                    servers: dict[str, int]) -> list[Row]:
        inside = f"/workspace/{self.big.name}"
        ours = Drains({name: [] for name in servers if name != "terminado"})
        anchor = Drains({"terminado": []})
        t_bare: list[float] = []
        lagged = 0
        while len(t_bare) < self.reps:
            sides = [(ours, coop, inside), (anchor, tado, str(self.big))]
            if len(t_bare) % 2:  # neither goes first every time
                sides.reverse()
            done = []
            for drains, term, path in sides:
                if not await drains.run(term, path, servers):
                    break
                done.append(drains)
            else:
                t_bare.append(bare.burst(str(self.big)))
                continue
            for drains in done:  # the whole round again, so all three see the same load
                drains.forget_last()
            lagged += 1
            if lagged > self.reps:
                raise SystemExit(f"bench: coop's client lagged in {lagged} drains")
        again = (f" {lagged} round(s) were repeated: coop dropped output for its client, "
                 f"which the loaded machine stalled past the 1 MiB backlog limit (by "
                 f"design; terminado buffers without a limit)." if lagged else "")
        mb = BIG_BYTES / 1e6
        bare_ms = statistics.median(t_bare) * 1000
        return [
            Row("w1 30 MB drained over the WebSocket: coop vs terminado", ours.wall,
                anchor.wall, WEB_TARGETS["w1"],
                note=f"MB/s: coop {ours.rate(mb)}, terminado {anchor.rate(mb)}, bare PTY "
                     f"{mb / bare_ms * 1000:.0f} ({bare_ms:.0f} ms). Per drain, medians: the "
                     f"client's CPU: coop {ours.client_text('UTF-8 decode')}, terminado "
                     f"{anchor.client_text('JSON')}; the servers' CPU: "
                     f"{ours.servers_text()}, {anchor.servers_text()}.{again}"),
            Row("w1b 30 MB: coop's WebSocket vs a bare PTY (the floor)", ours.wall, t_bare,
                None, note="a PTY hands its reader 4 KiB at a time, whoever reads it: every "
                           "web terminal pays this"),
        ]

    async def echo(self, coop: CoopTerm, tado: TerminadoTerm, bare: Term) -> list[Row]:
        e_coop, e_tado, e_bare = [], [], []
        for round_ in range(ECHO_ROUNDS):
            web: list[tuple[WebTerm, list[float]]] = [(coop, e_coop), (tado, e_tado)]
            if round_ % 2:  # neither goes first every time
                web.reverse()
            for term, times in web:
                times.extend(await term.echo_round_trips(ECHO_KEYS))
            e_bare += bare.echo_round_trips(ECHO_KEYS)
        med = statistics.median
        note = (f"medians over {len(e_coop)}: coop {med(e_coop) * 1e3:.3f} ms, terminado "
                f"{med(e_tado) * 1e3:.3f} ms, bare PTY {med(e_bare) * 1e3:.3f} ms")
        return [
            Row("w2 keystroke echo over the WebSocket: coop vs terminado", e_coop, e_tado,
                WEB_TARGETS["w2"], note=note),
            Row("w2b keystroke echo: coop WebSocket minus bare PTY (ms)", e_coop, e_bare,
                WEB_TARGETS["w2b"], kind="diff"),
        ]

    async def run_all(self, wanted: set[str]) -> list[Row]:
        ws = self.workspace(0)
        write_big(self.big)
        self.coop("-q", "-d", "-w", str(ws))  # the daemon and the session from here on
        self.start_terminado(ws)
        rows: list[Row] = []
        async with aiohttp.ClientSession() as session:
            if "w3" in wanted:
                rows.append(await self.memory(session, ws.name))
            if wanted & {"w1", "w2"}:
                rows += await self.terminals(session, ws.name, wanted)
        if "w3" in wanted and rows:
            after = memory_kib(self.daemon_pid())[0] / 1024
            rows[0].note += (f"; after the drains and echoes above, the daemon's RSS is "
                             f"{after:.1f} MB")
        return sorted(rows, key=lambda row: row.name)

    def cleanup(self) -> None:
        self.stop_terminado()
        if (Path(self.env["COOP_HOME"]) / "sock").exists():
            # forgotten, so that no later daemon of this COOP_HOME starts it again
            subprocess.run([str(COOP), "serve", "--stop"], env=self.env,
                           capture_output=True, check=False, stdin=subprocess.DEVNULL)
        super().cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--reps", type=int, default=5, help="30 MB drains (median)")
    parser.add_argument("--only", default="w1,w2,w3",
                        help="comma-separated figures w1-w3 (the other benches' figures are "
                             "ignored, so `just bench --only ...` can pick from all)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a figure misses its target (CI gate)")
    parser.add_argument("--terminado-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.terminado_server:
        asyncio.run(terminado_server())
        return 0
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    wanted = set(args.only.split(",")) & {"w1", "w2", "w3"}
    if not wanted:
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="coop-bench-web-"))
    scratch.chmod(0o755)
    bench = WebBench(scratch, args.reps)
    started = time.monotonic()
    try:
        rows = asyncio.run(bench.run_all(wanted))
    finally:
        bench.cleanup()
        force_rmtree(scratch)
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    print(f"coop web bench as {who}, {time.monotonic() - started:.0f} s; medians of N; "
          f"anchor: terminado")
    print_table(rows)
    return 1 if args.strict and any(row.missed for row in rows) else 0


if __name__ == "__main__":
    os.umask(0o022)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
