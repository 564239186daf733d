#!/usr/bin/env python3
"""coop's benchmarks: each of our operations against the plain tool doing the same job.

Usage: python tests/bench/run.py [-n REPS] [--only a,b,c] [--strict]   (or: just bench)

Every pair is measured in the same run, alternating ours and the anchor, on loopback
servers only; the table prints medians of N repetitions and their ratio:

  a  pull + unpack of the cached Debian test image: coop_build.pull_image + unpack_image
     vs skopeo copy docker://... oci:... + umoci unpack --rootless
  b  coop init with nothing to do vs /usr/bin/python3 -c pass
  c  coop init after changing only the last setup command vs that command alone in an
     unshare'd user+mount+pid namespace (and how many steps ran), for a 0.5 s and a 2 s
     command: coop's fixed cost is the same, so the ratio depends on the command's length

Needs the prepared test cache (scripts/prepare-test-images, as root).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from coop_build.namespace import force_rmtree  # noqa: E402
from coop_build.paths import CoopPaths  # noqa: E402
from coop_build.pull import pull_image  # noqa: E402
from coop_build.reference import parse_reference  # noqa: E402
from coop_build.unpack import unpack_image  # noqa: E402
from support.bench import BenchUnavailable, push_debian, start_registry_retrying  # noqa: E402
from support.benchkit import run, timed  # noqa: E402
from support.images import build_and_push  # noqa: E402
from support.servers import Registry, clean_env  # noqa: E402

COOP = Path(sys.executable).with_name("coop")
LAST_COMMAND = "sleep {seconds} && echo x{n}"
STEPS_RUN = re.compile(r"(\d+) of (\d+) steps run")


@dataclass
class Row:
    name: str
    ours: list[float]
    anchor: list[float]
    target: float  # the ceiling for the ratio
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.anchor)


def bench_pull_unpack(registry: Registry, scratch: Path, reps: int) -> Row:
    ref_text = push_debian(registry)
    ref = parse_reference(ref_text)
    env = clean_env()
    ours: list[float] = []
    anchor: list[float] = []
    for i in range(reps):
        home = scratch / f"a-ours-{i}"
        paths = CoopPaths(home)

        def coop_pull_unpack(paths: CoopPaths = paths, home: Path = home) -> None:
            pulled = pull_image(ref, paths=paths, environ=env)
            unpack_image(paths.cache_oci, pulled.umoci_tag, home / "rootfs")

        ours.append(timed(coop_pull_unpack))
        force_rmtree(home)

        layout = scratch / f"a-anchor-{i}"

        def skopeo_umoci(layout: Path = layout) -> None:
            layout.mkdir()
            run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                 f"docker://{ref_text}", f"oci:{layout}/oci:bookworm"], env)
            run(["umoci", "unpack", "--rootless", "--image", f"{layout}/oci:bookworm",
                 str(layout / "bundle")], env)

        anchor.append(timed(skopeo_umoci))
        force_rmtree(layout)
    return Row("a  pull+unpack Debian (vs skopeo+umoci)", ours, anchor, 1.0)


def coop_env(home: Path) -> dict[str, str]:
    env = clean_env({"HOME": str(home), "COOP_HOME": str(home / "coop"),
                     "XDG_CONFIG_HOME": str(home / "config")})
    return env


def write_coopfile(workspace: Path, image: str, setup: list[str]) -> None:
    commands = ", ".join(f'"{cmd}"' for cmd in setup)
    workspace.joinpath("coop.toml").write_text(
        f'[base]\nimage = "{image}"\n[setup]\nrun = [{commands}]\n[agent]\ncommand = "/bin/sh"\n'
    )


def bench_noop_init(image: str, scratch: Path, reps: int) -> Row:
    home = scratch / "b-home"
    workspace = scratch / "b-ws"
    workspace.mkdir(parents=True)
    env = coop_env(home)
    write_coopfile(workspace, image, ["echo ready > /ready"])
    run([str(COOP), "-q", "init"], env, workspace)  # the build being measured is a no-op
    ours: list[float] = []
    anchor: list[float] = []
    for _ in range(reps):
        ours.append(timed(lambda: run([str(COOP), "init"], env, workspace)))
        anchor.append(timed(lambda: run(["/usr/bin/python3", "-c", "pass"], env)))
    out = run([str(COOP), "init"], env, workspace)
    if "Nothing to do" not in out:
        raise SystemExit(f"bench: the no-op init did work:\n{out}")
    return Row("b  coop init, nothing to do (vs /usr/bin/python3 -c pass)", ours, anchor, 15.0)


def bench_last_step(image: str, scratch: Path, reps: int, seconds: float) -> Row:
    """One row of (c): the edited last command sleeps ``seconds``, so the ratio shows
    coop's fixed cost (interpreter, click, Coopfile validation, namespace setup) against
    a step of that length; the note gives that cost in milliseconds."""
    home = scratch / f"c-home-{seconds}"
    workspace = scratch / f"c-ws-{seconds}"
    workspace.mkdir(parents=True)
    env = coop_env(home)
    first = ["echo one > /one", "echo two > /two"]

    def last(n: object) -> str:
        return LAST_COMMAND.format(seconds=seconds, n=n)

    write_coopfile(workspace, image, [*first, last("initial")])
    run([str(COOP), "-q", "init"], env, workspace)
    ours: list[float] = []
    anchor: list[float] = []
    ran: set[str] = set()
    unshare = ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork",
               "--mount-proc"]
    for i in range(reps):
        write_coopfile(workspace, image, [*first, last(i)])
        started = time.perf_counter()
        output = run([str(COOP), "init"], env, workspace)
        ours.append(time.perf_counter() - started)
        match = STEPS_RUN.search(output)
        ran.add(f"{match[1]} of {match[2]}" if match else "? (no summary line)")
        command = last(i)
        anchor.append(timed(lambda command=command: run([*unshare, "sh", "-c", command], env)))
    overhead = (statistics.median(ours) - statistics.median(anchor)) * 1000
    note = f"steps run: {', '.join(sorted(ran))}; coop's fixed cost {overhead:.0f} ms"
    if ran != {"1 of 4"}:
        note += "  MISSED: exactly one step must run"
    name = f"c  init after editing the last step ({seconds:g} s) vs the step alone"
    return Row(name, ours, anchor, 1.2, note)


def print_table(rows: list[Row], reps: int) -> None:
    header = f"{'benchmark':<58} {'ours':>9} {'anchor':>9} {'ratio':>7} {'target':>8}  N"
    print(header)
    print("-" * len(header))
    for row in rows:
        ours = statistics.median(row.ours)
        anchor = statistics.median(row.anchor)
        verdict = "" if row.ratio <= row.target else "  MISSED"
        print(f"{row.name:<58} {ours * 1000:>7.0f}ms {anchor * 1000:>7.0f}ms "
              f"{row.ratio:>6.2f}x {'<=' + format(row.target, 'g') + 'x':>8}  {reps}{verdict}")
        if row.note:
            print(f"{'':<4}{row.note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--reps", type=int, default=5, help="repetitions (median)")
    parser.add_argument("--only", default="a,b,c", help="comma-separated: a, b, c")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a ratio misses its target (CI gate)")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    wanted = set(args.only.split(","))
    scratch = Path(tempfile.mkdtemp(prefix="coop-bench-"))
    scratch.chmod(0o755)
    registry, server = start_registry_retrying(scratch / "registry")
    rows: list[Row] = []
    try:
        images = build_and_push(scratch / "images", registry.host, registry.url)
        if "a" in wanted:
            rows.append(bench_pull_unpack(registry, scratch, args.reps))
        if "b" in wanted:
            rows.append(bench_noop_init(images.busybox, scratch, args.reps))
        if "c" in wanted:
            for seconds in (0.5, 2.0):
                rows.append(bench_last_step(images.busybox, scratch, args.reps, seconds))
    except BenchUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        force_rmtree(scratch)
    print_table(rows, args.reps)
    missed = [row.name for row in rows if row.ratio > row.target or "MISSED" in row.note]
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
