"""Sandbox start-up benchmark (not collected by pytest; run it by hand or from `just bench`).

    python tests/bench/bench_sandbox.py [RUNS] [--host]

Times, as medians over RUNS: (a) ``Sandbox.start()`` + spawning ``true`` on a PTY + its
exit, (b) one more ``true`` spawned into the running sandbox, (c) ``stop()``; and
``bwrap --unshare-all`` running ``true`` on a PTY with equivalent binds on an identical
busybox rootfs (its own copy, owned by the caller: bwrap maps no id range), interleaved
run by run with ours (bwrap 0.8 has no overlay: its root is a read-only bind, so it does
less work than we do). Also the host-side memory the live sandbox keeps (its init). With
``--host``, the sandbox is an ``image = "host"`` build's (made by the Builder in a private
COOP_HOME), and bwrap binds the host's directories read-only, as ``image = "host"`` once
did.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coop_build.build import Builder
from coop_build.idmap import choose_idmap
from coop_build.layers import load_coopfile
from coop_build.namespace import remove_tree
from coop_build.paths import CoopPaths
from coop_build.rootlayout import HOST_DIRS
from coop_run.sandbox.config import SandboxConfig
from coop_run.sandbox.host import Sandbox
from support.benchkit import memory_kib, run_on_pty
from support.rootfs import make_busybox_rootfs

TARGET = 1.5  # issue 3: start + `true` on a PTY at most 1.5x bwrap --unshare-all


def drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 4096):
                return
        except OSError:
            return


def bench_sandbox(base: Path, layers: list[Path], runs: int, between: Callable[[], None], *,
                  pipelined: bool = False, host: bool = False) -> dict[str, float]:
    """Our runs; ``between`` runs after each (bwrap's, interleaved: both see the same
    load on a shared machine)."""
    ws = base / "ws"
    ws.mkdir(exist_ok=True)
    starts, spawns, stops = [], [], []
    for i in range(runs):
        config = SandboxConfig(name="bench", layers=layers,
                               session_dir=base / "sessions" / "bench", workspace=ws,
                               user_home=base, persist=[".cache"], host_image=host)
        t0 = time.perf_counter()
        sandbox = Sandbox(config)
        sandbox.start(wait_ready=not pipelined)
        proc = sandbox.spawn(["true"], pty=True)
        assert proc.master_fd is not None
        sandbox.wait(proc.pid, 10)
        t1 = time.perf_counter()
        os.close(proc.master_fd)
        proc = sandbox.spawn(["true"], pty=True)
        assert proc.master_fd is not None
        sandbox.wait(proc.pid, 10)
        t2 = time.perf_counter()
        os.close(proc.master_fd)
        if i == 0 and not pipelined:
            assert sandbox.init_pid is not None
            rss, pss, _ = memory_kib(sandbox.init_pid)
            own_rss, own_pss, _ = memory_kib(os.getpid())
            print(f"memory: init RSS {rss} KiB, PSS {pss} KiB "
                  f"(the creating process: RSS {own_rss} KiB, PSS {own_pss} KiB)")
        t3 = time.perf_counter()
        sandbox.stop(grace=1.0)
        t4 = time.perf_counter()
        starts.append(t1 - t0)
        spawns.append(t2 - t1)
        stops.append(t4 - t3)
        between()
    return {"start+true": statistics.median(starts), "spawn true": statistics.median(spawns),
            "stop": statistics.median(stops)}


def bwrap_runner(base: Path) -> tuple[Callable[[], None], list[float]]:
    """A function doing one bwrap run, and the list its times go to."""
    # bwrap maps only the caller's own id: as root, coop's id range (which owns coop's
    # layer) would be unmapped in its namespace, so it gets the same tree owned by the
    # caller, as coop's sandbox gets its tree owned by ids it maps. Its root is read-only:
    # make its mount points beforehand.
    layer = make_busybox_rootfs(base / "blayer", hand_over=False)
    (layer / "workspace").mkdir()
    (layer / "root" / ".cache").mkdir()
    for name in ("hostname", "hosts", "resolv.conf"):
        (layer / "etc" / name).write_text("")
    ws = base / "bws"
    cache = base / "bcache"
    etc = base / "betc"
    for d in (ws, cache, etc):
        d.mkdir()
    for name in ("hostname", "hosts", "resolv.conf"):
        (etc / name).write_text("bench\n")
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--hostname", "bench", "--ro-bind", str(layer), "/", "--proc", "/proc",
            "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm",
            "--bind", str(ws), "/workspace", "--bind", str(cache), "/root/.cache"]
    for name in ("hostname", "hosts", "resolv.conf"):
        argv += ["--ro-bind", str(etc / name), f"/etc/{name}"]
    argv += ["--chdir", "/workspace", "true"]
    return timed_runs(argv)


def host_layers(base: Path) -> list[Path]:
    """The layers of an ``image = "host"`` build with no steps (the Builder, as coop init)."""
    workspace = base / "hostws"
    workspace.mkdir()
    (workspace / "coop.toml").write_text('[base]\nimage = "host"\n[agent]\ncommand = "sh"\n')
    builder = Builder(CoopPaths(base / "coop"))
    result = builder.build(load_coopfile(workspace=workspace,
                                         global_path=base / "no-global.toml"), workspace)
    return list(builder.store.lower_dirs(result.record))


def bwrap_host_runner(base: Path) -> tuple[Callable[[], None], list[float]]:
    """bwrap with the host's directories bound read-only, its symlinks as symlinks."""
    ws = base / "bws"
    ws.mkdir()
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--hostname", "bench"]
    for name in HOST_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), f"/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm",
             "--bind", str(ws), "/workspace", "--chdir", "/workspace", "true"]
    return timed_runs(argv)


def timed_runs(argv: list[str]) -> tuple[Callable[[], None], list[float]]:
    """A function running ``argv`` on a PTY once, and the list its times go to."""
    times: list[float] = []

    def once() -> None:
        start = time.perf_counter()
        code = run_on_pty(argv)
        times.append(time.perf_counter() - start)
        assert code == 0, f"bwrap failed: exit {code}"

    return once, times


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--host"]
    host = "--host" in sys.argv[1:]
    runs = int(args[0]) if args else 100
    with tempfile.TemporaryDirectory(prefix="coop-bench-") as tmp:
        base = Path(tmp)
        if host:
            layers = host_layers(base)
            once, bwrap_times = bwrap_host_runner(base)
        else:
            layers = [make_busybox_rootfs(base / "layer")]
            once, bwrap_times = bwrap_runner(base)
        ours = bench_sandbox(base, layers, runs, once, host=host)
        bwrap = statistics.median(bwrap_times)
        bwrap_times.clear()
        piped = bench_sandbox(base, layers, runs, once, pipelined=True, host=host)
        bwrap2 = statistics.median(bwrap_times)
        if host:  # the store holds sub-id owned files: remove it the way coop does
            remove_tree(base / "coop", choose_idmap())
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    image = 'image = "host"' if host else "busybox layer"
    print(f"as {who}, {image}, {runs} runs, medians:")
    for key, value in ours.items():
        print(f"  coop {key:<12} {value * 1000:7.2f} ms")
    print(f"  bwrap true (pty)  {bwrap * 1000:7.2f} ms")
    ratio = ours["start+true"] / bwrap
    verdict = "" if ratio <= TARGET else "  MISSED"
    print(f"  ratio coop start+true / bwrap: {ratio:.2f}  (target <= {TARGET:g}){verdict}")
    print(f"  pipelined (start(wait_ready=False), then spawn): {piped['start+true'] * 1000:.2f} ms"
          f" vs bwrap {bwrap2 * 1000:.2f} ms: ratio {piped['start+true'] / bwrap2:.2f}")


if __name__ == "__main__":
    main()
