"""``coop serve`` as a person uses it (seed 11.4, SPEC 8, 13): the links and a QR code a
real decoder reads back, a second ``coop serve``, the foreground ended by Ctrl+C or by
``coop serve --stop``, bad arguments in one line, a detached server back with the same
link after ``kill -9`` of the daemon, and tokens in no log.

Network rule: ``-H 0.0.0.0`` binds every address, but the tests only look at the network
links and send traffic to 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import zlib
from pathlib import Path

import aiohttp
from web_support import (
    Coop,
    Links,
    Served,
    Terminal,
    client_session,
    make_workspace,
    parse_links,
    run,
    serve,
    serve_session,
)

from coop_run.cli.serve import render_half_blocks
from coop_run.web.addresses import local_addresses
from support.procs import pid_alive, processes_with_env, wait_for
from support.require import needs

TIMEOUT = 20.0
QR_LINE = re.compile(r"^  ([█▀▄ ]+)$")


def get(url: str, **headers: str) -> int:
    """The status of a GET on 127.0.0.1 (no redirect followed); 0 when refused."""
    async def fetch() -> int:
        async with client_session(**headers) as session:
            try:
                async with session.get(url, allow_redirects=False) as response:
                    return response.status
            except aiohttp.ClientConnectionError:
                return 0
    return int(run(fetch()))


# --- reading the printed QR code back -------------------------------------------------------

_MODULES = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}


def printed_qr(output: str) -> list[list[bool]]:
    """The QR code ``coop serve`` printed, as modules (True: light)."""
    lines = [m.group(1) for line in output.splitlines() if (m := QR_LINE.match(line))]
    assert lines, output
    rows: list[list[bool]] = []
    for line in lines:
        rows.append([_MODULES[c][0] for c in line])
        rows.append([_MODULES[c][1] for c in line])
    return rows


def png(light: list[list[bool]], scale: int = 6, margin: int = 4) -> bytes:
    """A grayscale PNG of the modules: dark ones black, a white margin around."""
    width = (len(light[0]) + 2 * margin) * scale
    blank = [True] * (len(light[0]) + 2 * margin)
    padded = [blank] * margin + [[True] * margin + row + [True] * margin
                                 for row in light] + [blank] * margin
    raw = bytearray()
    for row in padded:
        line = bytes(255 if module else 0 for module in row for _ in range(scale))
        for _ in range(scale):
            raw += b"\x00" + line

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, len(padded) * scale, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))


def decode_qr(output: str, tmp_path: Path) -> str:
    image = tmp_path / "qr.png"
    image.write_bytes(png(printed_qr(output)))
    result = subprocess.run(["zbarimg", "--raw", "-q", str(image)], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result
    return result.stdout.strip()


def test_half_blocks_draw_two_rows_a_line() -> None:
    light = [[True, False, True], [True, True, False], [False, False, True]]
    assert render_half_blocks(light) == ["█▄▀", "  ▀"]  # an odd last row: dark below


@needs(shutil.which("zbarimg") is not None, "needs zbarimg (Debian's zbar-tools)")
def test_links_and_a_qr_code_of_the_network_url(coop: Coop, tmp_path: Path) -> None:
    token = "a-token-of-my-own_" + "x" * 14
    result = coop("serve", "-p", "0", "-H", "0.0.0.0", "-d", "--token", token)
    assert result.returncode == 0, result
    links = parse_links(result.stdout)
    addresses = [str(a) for a in local_addresses()
                 if a.version == 4 and not a.is_loopback]
    assert addresses, "a machine with a network address"
    port = links.port
    assert links.local == f"http://127.0.0.1:{port}/?token={token}"
    assert links.network == [f"http://{a}:{port}/?token={token}" for a in addresses]
    assert links.read_only == f"http://{addresses[0]}:{port}/?token={links.read_only_token}"
    assert len(links.read_only_token) * 6 >= 128 and links.read_only_token != token
    assert decode_qr(result.stdout, tmp_path) == links.network[0]
    assert f"Scan the code to open http://{addresses[0]}:{port}/ on a phone." in result.stdout
    assert get(links.local) == 303  # this machine's own link works (loopback only)
    stopped = coop("serve", "--stop")
    assert (stopped.returncode, stopped.stdout) == (
        0, "web server stopped (sessions keep running)\n")
    assert get(links.local) == 0


def test_a_loopback_server_prints_no_qr_code_and_says_why(coop: Coop) -> None:
    links = serve(coop, "-p", "0", "-d")
    assert links.network == [] and links.local.startswith("http://127.0.0.1:")
    assert not any(QR_LINE.match(line) for line in links.output.splitlines())
    assert "coop serve -H 0.0.0.0 listens on the network" in links.output
    assert links.read_only.startswith(links.base + "/?token=")
    assert len(links.token) == 32 and links.token != links.read_only_token


def test_a_second_serve_prints_the_running_servers_links(coop: Coop) -> None:
    first = serve(coop, "-p", "0", "-d")
    again = coop("serve", "-p", "0")  # not another server, and no waiting either
    assert again.returncode == 0, again
    second = parse_links(again.stdout)
    assert (second.local, second.read_only) == (first.local, first.read_only)
    assert again.stdout.startswith(f"A web server is already running on 127.0.0.1:{first.port}")
    assert coop("serve", "--stop").returncode == 0
    assert coop("serve", "--stop").stdout == "no web server is running\n"


class Foreground:
    """A ``coop serve`` in the foreground, its output read as it comes."""

    def __init__(self, coop: Coop, *args: str) -> None:
        self.proc = coop.popen("serve", "-p", "0", *args)
        self.out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)

    @property
    def text(self) -> str:
        return "".join(self.out)

    def links(self) -> Links:
        wait_for(lambda: "Press Ctrl+C" in self.text, TIMEOUT, "coop serve to be ready")
        return parse_links(self.text)

    def wait(self) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=TIMEOUT)
        self._reader.join(TIMEOUT)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        with self.proc.stdout, self.proc.stderr:
            return code, self.text, self.proc.stderr.read()


def test_the_foreground_ends_with_a_stop_from_elsewhere_or_ctrl_c(coop: Coop) -> None:
    workspace = make_workspace(coop, "proj")
    assert coop("-d", cwd=workspace).returncode == 0
    first = Foreground(coop)
    links = first.links()
    assert get(links.local) == 303
    assert coop("serve", "--stop").returncode == 0
    code, out, err = first.wait()
    assert (code, err) == (0, "")
    assert out.endswith("web server stopped by coop serve --stop\n")
    assert get(links.local) == 0

    second = Foreground(coop)
    links = second.links()
    second.proc.send_signal(signal.SIGINT)
    code, _, err = second.wait()
    assert (code, err) == (130, "web server stopped (sessions keep running)\n")
    wait_for(lambda: get(links.local) == 0, TIMEOUT, "the server to stop")
    assert re.search(r"^proj\s.*running", coop("ls").stdout, flags=re.M)  # untouched
    assert not (coop.coop_home / "web.json").exists()  # a foreground server: no record


def test_detach_given_to_a_running_foreground_server_keeps_it(coop: Coop) -> None:
    foreground = Foreground(coop)
    links = foreground.links()
    detached = coop("serve", "-d")
    assert detached.returncode == 0 and parse_links(detached.stdout).local == links.local
    assert "stays until coop serve --stop" in detached.stdout
    foreground.proc.send_signal(signal.SIGINT)
    assert foreground.wait()[0] == 130
    assert get(links.local) == 303  # still served
    assert coop("serve", "--stop").returncode == 0
    assert get(links.local) == 0


def test_bad_arguments_and_a_busy_port_are_one_line(coop: Coop) -> None:
    def one_line(result: object, code: int, words: str) -> None:
        assert result.returncode == code, result  # type: ignore[attr-defined]
        err: str = result.stderr  # type: ignore[attr-defined]
        assert err.count("\n") == 1 and err.startswith("error: ") and words in err, result
        assert "Traceback" not in err

    one_line(coop("serve", "--token", "short"), 2, "16 to 256 characters")
    one_line(coop("serve", "--token", "spaces are not allowed!"), 2, "only letters")
    one_line(coop("serve", "-H", "no such host!"), 2, "neither an IP address nor a host")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line(coop("serve", "-p", str(port)), 1,
                 f"cannot listen on 127.0.0.1:{port}: the port is in use")
    one_line(coop("serve", "-H", "203.0.113.9", "-p", "0"), 1,
             "203.0.113.9 is not an address of this machine")
    wrong = coop("serve", "-p", "70000")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert coop("serve", "--stop").stdout == "no web server is running\n"


def keepers(coop: Coop) -> list[int]:
    """The keepers of this COOP_HOME (named so once their interpreter has started)."""
    return [p.pid for p in processes_with_env("COOP_HOME", str(coop.coop_home))
            if p.alive and ("coop keeper" in p.cmdline or "daemon.keeper" in p.cmdline)]


def test_a_detached_server_comes_back_after_the_daemon_is_killed(served: Served) -> None:
    coop, links = served.coop, served.links
    record = coop.coop_home / "web.json"
    assert record.stat().st_mode & 0o777 == 0o600
    assert links.token in record.read_text() and links.read_only_token in record.read_text()
    assert len(keepers(coop)) == 1
    daemon = coop.daemon_pid()
    assert daemon is not None
    bearer = {"Authorization": "Bearer " + links.token}
    os.kill(daemon, signal.SIGKILL)  # nothing is typed from here on
    wait_for(lambda: not pid_alive(daemon), TIMEOUT, "the daemon to die")
    wait_for(lambda: coop.daemon_pid() not in (None, daemon)
             and get(links.base + "/api/sessions", **bearer) == 200, 5.0,
             "the same link and token to work again")
    assert get(links.read_only) == 303  # the read-only link too

    async def session_back() -> None:
        async with client_session() as session:
            terminal = await Terminal.open(session, links.base, links.token)
            await terminal.run("echo st''ill-here", "still-here")
            await terminal.ws.close()

    run(session_back())
    wait_for(lambda: len(keepers(coop)) == 1, TIMEOUT, "the new daemon's keeper")
    assert coop("serve", "--stop").returncode == 0
    assert not record.exists()
    wait_for(lambda: keepers(coop) == [], TIMEOUT, "the keeper to go")
    assert get(links.base + "/api/sessions", **bearer) == 0


def test_without_a_session_the_keeper_alone_brings_the_server_back(coop: Coop) -> None:
    links = serve(coop, "-p", "0", "-d")
    daemon = coop.daemon_pid()
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: coop.daemon_pid() not in (None, daemon) and get(links.local) == 303,
             5.0, "the server to come back")
    assert coop("shutdown").returncode == 0  # on purpose: nothing brings it back
    wait_for(lambda: keepers(coop) == [] and get(links.local) == 0, TIMEOUT,
             "the server and keeper to be gone")
    # the record stays for the next daemon: a detached server lasts until --stop
    assert serve(coop, "-p", "0").local == links.local
    assert coop("serve", "--stop").returncode == 0


def test_a_bare_daemon_never_loads_aiohttp(coop: Coop) -> None:
    """Checked on the real process: a module that was imported has its C parts mapped."""
    assert coop("ls").returncode == 0
    daemon = coop.daemon_pid()
    assert daemon is not None

    def loaded() -> bool:
        return "/aiohttp/" in Path(f"/proc/{daemon}/maps").read_text()

    assert not loaded()
    serve(coop, "-p", "0", "-d")
    assert loaded()  # the check can see it
    assert coop("serve", "--stop").returncode == 0


def test_the_tokens_reach_no_log(coop: Coop) -> None:
    served = serve_session(coop)
    links = served.links
    tokens = (links.token, links.read_only_token)

    async def use_everything() -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            for url in (links.local, links.read_only, f"{links.base}/{links.token}",
                        f"{links.base}/api/{links.token}?token={links.token}",
                        f"{links.base}/api/sessions?token={links.read_only_token}x",
                        f"{links.base}/ws?session=nope&token={links.token}"):
                async with session.get(url) as response:
                    await response.read()
            terminal = await Terminal.open(session, links.base, links.token)
            await terminal.run("echo lo''gged", "logged")
            await terminal.control({"type": "resize", "cols": 0, "rows": 0})
            await terminal.ws.close()
            async with session.post(f"{links.base}/api/sessions?token={links.token}",
                                    json={"workspace": links.token}) as response:
                assert response.status == 400
                assert links.token not in await response.text()

    run(use_everything())
    assert coop("serve", "-p", "0").returncode == 0  # prints the links again
    assert coop("serve", "--stop").returncode == 0
    assert coop("shutdown").returncode == 0
    logs = coop.logs()
    access = logs[coop.coop_home / "logs" / "daemon.log"].decode()
    # the lines are there, with every token replaced
    assert "GET /*** 404" in access and "GET /api/*** 404" in access
    assert "GET /api/sessions 403" in access and "GET /ws 404" in access
    for path, data in logs.items():
        for token in tokens:
            assert token.encode() not in data, (path, token)
