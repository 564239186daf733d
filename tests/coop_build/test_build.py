"""The Builder: step cache, failures, interruption, several builds, host image, real installs.

Integration tests pull the bench's images from the loopback registry and run every step
in real namespaces; the Debian test installs with apt, pip and npm from the loopback
mirror (``mirror.env`` points the package managers at it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from coop_build.build import PASSTHROUGH_VARS, Builder, BuildOptions, BuildResult, step_environment
from coop_build.errors import InheritedPathError, StepFailedError
from coop_build.hostlayer import host_layout, system_identity
from coop_build.idmap import choose_idmap
from coop_build.layers import LoadedCoopfile, load_coopfile
from coop_build.paths import CoopPaths
from coop_build.progress import Message, ProgressEvent, StepFinished, StepOutput, StepStarted
from coop_build.store import Store
from support.procs import wait_for
from support.rootfs import as_layer

# -- pure ---------------------------------------------------------------------------------


def test_step_environment_defaults_and_passthrough() -> None:
    environ = {
        "http_proxy": "http://127.0.0.1:3128",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "npm_config_registry": "http://127.0.0.1:9/npm/",
        "SECRET_TOKEN": "hunter2",
        "HOME": "/home/me",
        "PATH": "/home/me/bin:/usr/bin",
    }
    env = step_environment(environ)
    assert env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "http_proxy": "http://127.0.0.1:3128",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "npm_config_registry": "http://127.0.0.1:9/npm/",
    }
    assert set(PASSTHROUGH_VARS) >= {"https_proxy", "NO_PROXY", "PIP_TRUSTED_HOST"}


def test_step_environment_keeps_the_image_path_but_not_its_home() -> None:
    env = step_environment(
        {}, ["PATH=/opt/node/bin:/usr/bin", "HOME=/nope", "NODE_VERSION=22", "junk"]
    )
    assert env["PATH"] == "/opt/node/bin:/usr/bin"
    assert env["NODE_VERSION"] == "22"
    assert env["HOME"] == "/root"
    assert "junk" not in env


def write_coopfile(workspace: Path, text: str) -> Path:
    workspace.mkdir(parents=True, exist_ok=True)
    path = workspace / "coop.toml"
    path.write_text(text)
    return path


def coopfile_text(
    image: str,
    setup: list[str],
    *,
    packages: Mapping[str, list[str]] | None = None,
    install: str | None = None,
) -> str:
    lines = [f"[base]\nimage = {json.dumps(image)}\n", f"[setup]\nrun = {json.dumps(setup)}\n"]
    if packages:
        lines.append(
            "[packages]\n" + "".join(f"{m} = {json.dumps(p)}\n" for m, p in packages.items())
        )
    lines.append('[agent]\ncommand = "sh"\n')
    if install:
        lines.append(f"install = {json.dumps(install)}\n")
    return "".join(lines)


def load(workspace: Path) -> LoadedCoopfile:
    return load_coopfile(workspace=workspace, global_path=workspace / "no-global.toml")


@pytest.fixture
def paths(coop_env: Any) -> Iterator[CoopPaths]:
    """The test's store; removed afterwards in the build's namespace (sub-uid files)."""
    paths = CoopPaths(Path(coop_env.coop_home))
    yield paths
    from coop_build.idmap import choose_idmap
    from coop_build.namespace import remove_tree

    remove_tree(paths.home, choose_idmap())


def fake_build(builder: Builder, loaded: LoadedCoopfile) -> None:
    """A complete build of ``loaded`` made of empty layers, without network or namespaces."""
    plan = builder.plan(loaded)
    store = builder.store
    ids = []
    with store.lock():
        for step in plan.steps:
            scratch = store.new_scratch()
            scratch.fs.mkdir()
            as_layer(scratch.fs)
            ids.append(
                store.publish_layer(
                    scratch,
                    step_key=step.key,
                    description=step.description,
                    definition=step.definition,
                )
            )
        store.register_build(plan, ids)


def test_plan_needs_no_network(paths: CoopPaths, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write_coopfile(ws, coopfile_text("127.0.0.1:1/nothing:1", ["echo a"]))
    builder = Builder(paths)
    plan = builder.plan(load(ws))
    assert [s.kind for s in plan.steps] == ["base", "setup"]
    assert plan.platform.startswith("linux/")
    assert builder.plan(load(ws), platform="linux/arm64").build_key != plan.build_key
    assert not paths.home.exists()  # planning writes nothing


FAST_PATH = """
import json, sys
from pathlib import Path
from coop_build.build import Builder
from coop_build.layers import load_coopfile
from coop_build.paths import CoopPaths
ws = Path(sys.argv[1])
loaded = load_coopfile(workspace=ws, global_path=ws / "no-global.toml")
result = Builder(CoopPaths(Path(sys.argv[2]))).build(loaded, ws)
heavy = sorted(m for m in ("requests", "oras", "zstandard", "urllib3", "coop_build.pull",
               "coop_build.export", "coop_build.registry", "coop_build.namespace",
               "coop_build.unpack") if m in sys.modules)
print(json.dumps({"steps_run": result.steps_run, "heavy": heavy}))
"""


def test_unchanged_coopfile_fast_path_imports_nothing_heavy(
    paths: CoopPaths, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    write_coopfile(ws, coopfile_text("127.0.0.1:1/nothing:1", ["echo a", "echo b"]))
    builder = Builder(paths)
    fake_build(builder, load(ws))
    proc = subprocess.run(
        [sys.executable, "-c", FAST_PATH, str(ws), str(paths.home)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    out = json.loads(proc.stdout)
    # A registry on port 1 would refuse: a pull attempt would have failed the build.
    assert out == {"steps_run": 0, "heavy": []}
    record = Store(paths).workspace_build(ws)
    assert record is not None and record.build_key == builder.plan(load(ws)).build_key


# -- integration helpers --------------------------------------------------------------------


class Recorder:
    """Collects progress events."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def finished(self) -> list[tuple[int, int, bool]]:
        return [(e.index, e.total, e.cached) for e in self.events if isinstance(e, StepFinished)]

    def output(self) -> list[str]:
        return [e.line for e in self.events if isinstance(e, StepOutput)]


def run_build(
    paths: CoopPaths, ws: Path, environ: Mapping[str, str] | None = None, **options: Any
) -> tuple[BuildResult, Recorder]:
    rec = Recorder()
    builder = Builder(paths, environ=environ)
    result = builder.build(load(ws), ws, BuildOptions(progress=rec, **options))
    return result, rec


def layer_file(paths: CoopPaths, result: BuildResult, index: int, rel: str) -> Path:
    return paths.layers / result.record.layers[index] / "fs" / rel


def scratch_dirs(paths: CoopPaths) -> list[str]:
    if not paths.tmp.exists():
        return []
    return sorted(p.name for p in paths.tmp.iterdir() if p.name.startswith(("step-", "trash-")))


# -- integration: busybox image --------------------------------------------------------------


@pytest.mark.registry
@pytest.mark.slow
def test_build_then_cached_then_one_step_changed(
    test_images: Any, paths: CoopPaths, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    setup = ["echo one > /one && echo said-one", "echo two > /two", "cat /one /two > /both"]
    write_coopfile(ws, coopfile_text(test_images.busybox, setup, install="echo agent > /agent"))
    first, rec = run_build(paths, ws)
    assert (first.steps_run, first.steps_total, first.from_prebuilt, first.pushed) == (
        5,
        5,
        False,
        None,
    )
    assert rec.finished() == [(i, 5, False) for i in range(1, 6)]
    started = [(e.index, e.description) for e in rec.events if isinstance(e, StepStarted)]
    assert started[1:] == [(2, setup[0]), (3, setup[1]), (4, setup[2]), (5, "echo agent > /agent")]
    assert "said-one" in rec.output()
    assert layer_file(paths, first, 0, "etc/coop-test-image").read_text() == "busybox\n"
    assert layer_file(paths, first, 1, "one").read_text() == "one\n"
    assert not layer_file(paths, first, 2, "one").exists()  # each layer holds only its changes
    assert layer_file(paths, first, 3, "both").read_text() == "one\ntwo\n"
    assert layer_file(paths, first, 4, "agent").read_text() == "agent\n"
    log = paths.build_logs / f"{first.build_key}.log"
    assert "said-one" in log.read_text()
    store = Store(paths)
    assert store.workspace_build(ws) == first.record
    assert first.record.image == test_images.busybox
    assert scratch_dirs(paths) == []

    again, rec = run_build(paths, ws)
    assert (again.steps_run, again.build_key) == (0, first.build_key)
    assert again.record == first.record

    changed = [setup[0], "echo TWO > /two", setup[2]]
    write_coopfile(ws, coopfile_text(test_images.busybox, changed, install="echo agent > /agent"))
    third, rec = run_build(paths, ws)
    assert third.steps_run == 3
    assert rec.finished() == [
        (1, 5, True),
        (2, 5, True),
        (3, 5, False),
        (4, 5, False),
        (5, 5, False),
    ]
    assert third.record.layers[:2] == first.record.layers[:2]
    assert layer_file(paths, third, 3, "both").read_text() == "one\nTWO\n"
    # The first build is still whole: a session on it would be unaffected.
    assert store.get_build(first.build_key) == first.record
    assert store.build_complete(first.record)
    assert store.workspace_build(ws) == third.record


@pytest.mark.registry
@pytest.mark.slow
def test_failing_step_keeps_previous_build(
    test_images: Any, paths: CoopPaths, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    write_coopfile(ws, coopfile_text(test_images.busybox, ["echo good > /good"]))
    good, _ = run_build(paths, ws)
    good_file = layer_file(paths, good, 1, "good")

    failing = "for i in $(seq 1 30); do echo line-$i; done; echo boom >&2; touch /partial; exit 3"
    write_coopfile(
        ws, coopfile_text(test_images.busybox, ["echo good > /good", "echo next > /next", failing])
    )
    with pytest.raises(StepFailedError) as info:
        run_build(paths, ws)
    err = info.value
    assert err.exit_code == 3
    assert err.step == failing
    assert str(err).startswith("step 4/4 failed with exit code 3: ")
    assert len(err.log_tail) == 20
    assert err.log_tail[-1] == "boom"
    assert err.log_tail[0] == "line-12"
    assert err.log_path is not None and "boom" in err.log_path.read_text()

    store = Store(paths)
    assert store.workspace_build(ws) == good.record
    assert good_file.read_text() == "good\n"
    assert scratch_dirs(paths) == []
    assert not any((paths.layers / lid / "fs" / "partial").exists() for lid in store.list_layers())
    # The step before the failure is cached: fixing the command runs only it.
    write_coopfile(
        ws, coopfile_text(test_images.busybox, ["echo good > /good", "echo next > /next", "true"])
    )
    fixed, _ = run_build(paths, ws)
    assert fixed.steps_run == 1


@pytest.mark.registry
@pytest.mark.slow
def test_no_cache_never_modifies_referenced_layers(
    test_images: Any, paths: CoopPaths, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    write_coopfile(ws, coopfile_text(test_images.busybox, ["date +%s%N > /stamp"]))
    old, _ = run_build(paths, ws)
    stamp = layer_file(paths, old, 1, "stamp")
    before = (stamp.read_text(), stamp.stat().st_ino)
    new, rec = run_build(paths, ws, no_cache=True)
    assert new.steps_run == 2
    assert rec.finished() == [(1, 2, False), (2, 2, False)]
    assert new.build_key == old.build_key
    assert set(new.record.layers).isdisjoint(old.record.layers)
    assert (stamp.read_text(), stamp.stat().st_ino) == before
    store = Store(paths)
    assert store.get_build(new.build_key) == new.record
    # The old dirs are unreferenced now; gc frees them unless a session still uses them.
    assert store.gc(keep=old.record.layers).layers_removed == ()
    assert sorted(store.gc().layers_removed) == sorted(old.record.layers)
    assert store.build_complete(new.record)
    assert scratch_dirs(paths) == []


@pytest.mark.registry
@pytest.mark.slow
def test_gc_removes_layers_holding_sub_id_files(
    test_images: Any, paths: CoopPaths, tmp_path: Path
) -> None:
    """With a subuid range, chowned files belong to sub-ids on the host: gc still works."""
    ws = tmp_path / "ws"
    step = "mkdir -p /owned/sub && touch /owned/sub/f && (chown -R 1234:1234 /owned || true)"
    write_coopfile(ws, coopfile_text(test_images.busybox, [step]))
    old, _ = run_build(paths, ws)
    owned = layer_file(paths, old, 1, "owned/sub/f")
    full = Builder(paths).idmap.full
    assert (owned.stat().st_uid != os.getuid()) == full
    new, _ = run_build(paths, ws, no_cache=True)
    store = Store(paths)
    assert sorted(store.gc().layers_removed) == sorted(old.record.layers)
    assert not (paths.layers / old.record.layers[1]).exists()
    assert store.build_complete(new.record)
    assert scratch_dirs(paths) == []


@pytest.mark.registry
@pytest.mark.slow
def test_two_workspaces_two_builds(test_images: Any, paths: CoopPaths, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_coopfile(a, coopfile_text(test_images.busybox, ["echo a > /who"]))
    write_coopfile(b, coopfile_text(test_images.layered, ["echo b > /who"]))
    ra, _ = run_build(paths, a)
    rb, _ = run_build(paths, b)
    assert ra.build_key != rb.build_key
    store = Store(paths)
    assert store.workspace_build(a) == ra.record
    assert store.workspace_build(b) == rb.record
    assert {r.build_key for r in store.list_builds()} == {ra.build_key, rb.build_key}
    assert layer_file(paths, ra, 1, "who").read_text() == "a\n"
    assert layer_file(paths, rb, 1, "who").read_text() == "b\n"
    assert store.unused_builds() == []
    assert store.gc().layers_removed == ()


@pytest.mark.registry
@pytest.mark.slow
def test_unreachable_prebuilt_registry_falls_back_to_building(
    test_images: Any, paths: CoopPaths, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    write_coopfile(ws, coopfile_text(test_images.busybox, ["echo local > /where"]))
    result, rec = run_build(paths, ws, prebuilt="127.0.0.1:1/coop/prebuilt")
    assert (result.steps_run, result.from_prebuilt) == (2, False)
    assert any(isinstance(e, Message) and "building locally" in e.text for e in rec.events)
    assert layer_file(paths, result, 1, "where").read_text() == "local\n"


@pytest.mark.slow
def test_host_image(paths: CoopPaths, tmp_path: Path) -> None:
    """The host image's base holds mount points and the skeleton of the host's
    directories (``hostlayer``: directories, empty lock files, never a host file's
    contents); a step's writes in a host directory land in its own layer there."""
    ws = tmp_path / "ws"
    name = f"coop-test-{os.getpid()}"
    write_coopfile(
        ws,
        coopfile_text("host", ["echo hi > /root/hi", "test -x /bin/sh && ls /usr/bin > /root/ls",
                               f"echo local > /usr/local/bin/{name}"]),
    )
    result, _ = run_build(paths, ws)
    assert result.steps_run == 4
    assert result.record.host
    assert result.record.system == system_identity()
    base = paths.layers / result.record.layers[0] / "fs"
    layout = host_layout()
    assert {p.name for p in base.iterdir()} == {
        "dev", "proc", "root", "tmp", "workspace", "var",
        *(rel.split("/")[0] for rel in layout.dirs)}
    assert (base / "usr" / "local" / "bin").is_dir()
    assert all(not p.is_file() or p.stat().st_size == 0 for p in base.rglob("*"))
    assert not any(p.is_file() for p in (base / "etc").rglob("*"))  # no host file is copied
    assert layer_file(paths, result, 1, "root/hi").read_text() == "hi\n"
    assert "sh" in layer_file(paths, result, 2, "root/ls").read_text().split()
    assert layer_file(paths, result, 3, f"usr/local/bin/{name}").read_text() == "local\n"
    assert not Path("/usr/local/bin", name).exists()
    again, _ = run_build(paths, ws)
    assert again.steps_run == 0


@pytest.mark.rootonly
def test_root_builds_as_coops_id_range(
    test_images: Any, paths: CoopPaths, tmp_path: Path
) -> None:
    """A build root starts runs as coop's own range (``coop_build.subids``), never as host
    root: its steps' uid 0 is that range's first id, and nothing in any layer it made,
    the unpacked image included, belongs to host uid or gid 0."""
    ws = tmp_path / "ws"
    step = "cat /proc/self/uid_map > /uid_map; touch /made; chown 7:8 /made"
    write_coopfile(ws, coopfile_text(test_images.busybox, [step]))
    result, _ = run_build(paths, ws)
    uid, gid = choose_idmap().owner
    assert uid >= 1 << 30 and gid >= 1 << 30
    assert layer_file(paths, result, 1, "uid_map").read_text().split() == [
        "0", str(uid), "65536"]
    made = layer_file(paths, result, 1, "made").stat()
    assert (made.st_uid, made.st_gid) == (uid + 7, gid + 8)
    assert layer_file(paths, result, 0, "bin/busybox").stat().st_uid == uid
    for layer in result.record.layers:
        fs = paths.layers / layer / "fs"
        owned = [p for p in (fs, *fs.rglob("*")) if 0 in (p.lstat().st_uid, p.lstat().st_gid)]
        assert owned == [], f"host root's files in layer {layer}: {owned[:5]}"


# -- interruption ------------------------------------------------------------------------------

BUILDER_PROC = """
import json, sys
from pathlib import Path
from coop_build.build import Builder, BuildOptions
from coop_build.errors import BuildInterruptedError
from coop_build.layers import load_coopfile
from coop_build.paths import CoopPaths
from coop_build.progress import StepOutput
ws = Path(sys.argv[1])
def progress(event):
    if isinstance(event, StepOutput):
        print(event.line, flush=True)
loaded = load_coopfile(workspace=ws, global_path=ws / "no-global.toml")
try:
    Builder(CoopPaths(Path(sys.argv[2]))).build(loaded, ws, BuildOptions(progress=progress))
except BuildInterruptedError as exc:
    print("INTERRUPTED", exc.code, flush=True)
    sys.exit(130)
"""


@pytest.fixture
def builder_proc(paths: CoopPaths) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _sleepers(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.registry
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_build_keeps_previous_rootfs(
    sig: signal.Signals,
    test_images: Any,
    paths: CoopPaths,
    tmp_path: Path,
    builder_proc: list[subprocess.Popen[str]],
) -> None:
    ws = tmp_path / "ws"
    write_coopfile(ws, coopfile_text(test_images.busybox, ["echo v1 > /v"]))
    previous, _ = run_build(paths, ws)
    marker = f"{4000 + os.getpid() % 1000}"
    long_step = f"echo v2 > /v; echo half > /half; echo running; exec sleep {marker}"
    write_coopfile(ws, coopfile_text(test_images.busybox, ["echo v1 > /v", long_step]))
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILDER_PROC, str(ws), str(paths.home)],
        stdout=subprocess.PIPE,
        text=True,
    )
    builder_proc.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "running"
    assert scratch_dirs(paths)  # the step is being built in tmp/, nowhere else
    os.kill(proc.pid, sig)
    code = proc.wait(30)
    if sig == signal.SIGINT:
        assert code == 130
        assert proc.stdout.read().split() == ["INTERRUPTED", "INTERRUPTED"]
        assert scratch_dirs(paths) == []
    else:
        assert code == -signal.SIGKILL
    # Everything in the step's namespace died with the build.
    wait_for(lambda: not _sleepers(marker), 15, "the step's processes to end")

    store = Store(paths)
    assert store.workspace_build(ws) == previous.record
    assert layer_file(paths, previous, 1, "v").read_text() == "v1\n"
    assert not any((paths.layers / lid / "fs" / "half").exists() for lid in store.list_layers())
    new_plan = Builder(paths).plan(load(ws))
    assert store.get_build(new_plan.build_key) is None

    # The next build cleans what was left in tmp/ and builds only the interrupted step.
    write_coopfile(ws, coopfile_text(test_images.busybox, ["echo v1 > /v", "echo v3 > /v"]))
    result, _ = run_build(paths, ws)
    assert result.steps_run == 1
    assert scratch_dirs(paths) == []
    assert layer_file(paths, result, 2, "v").read_text() == "v3\n"


# -- TLS trust: what steps inherit, outside every key ------------------------------------


@pytest.mark.registry
@pytest.mark.slow
def test_trust_variables_reach_steps_with_their_files_outside_every_key(
    test_images: Any, paths: CoopPaths, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corp = tmp_path / "corp"
    (corp / "certs").mkdir(parents=True)
    (corp / "ca.pem").write_text("corp CA\n")
    (corp / "certs" / "a.pem").write_text("cert a\n")
    (corp / "npm.pem").write_text("npm CA\n")
    npmrc = Path(os.environ["HOME"]) / ".npmrc"
    npmrc.write_text(f"cafile = {corp / 'npm.pem'}\n")
    ws = tmp_path / "ws"
    show = ('cat "$SSL_CERT_FILE" "$npm_config_cafile" "$APT_CONFIG"; ls "$SSL_CERT_DIR"; '
            'echo "pip=$PIP_CERT"; echo x 2>/dev/null > "$SSL_CERT_FILE" || echo read-only; '
            # The image's own path of the same name stays the image's (update-ca-certificates
            # rewrites /etc/ssl/certs, which the host's SSL_CERT_DIR so often names).
            f'mkdir -p {corp}/certs && echo own > {corp}/certs/a.pem && echo writable')
    write_coopfile(ws, coopfile_text(test_images.busybox, [show, "echo built > /marker"]))
    trust = {"SSL_CERT_FILE": str(corp / "ca.pem"), "SSL_CERT_DIR": str(corp / "certs"),
             "PIP_CERT": str(corp / "ca.pem"), "CURL_CA_BUNDLE": str(corp / "gone.pem")}
    with caplog.at_level("WARNING", logger="coop_build.tlstrust"):
        first, rec = run_build(paths, ws, environ={**os.environ, **trust})
    assert first.steps_run == 3
    assert rec.output() == [
        "corp CA", "npm CA",
        "// coop: build steps trust SSL_CERT_FILE for https, as the invoking user does",
        'Acquire::https::CaInfo "/run/coop-build/trust/1/ca.pem";',
        "a.pem", "pip=/run/coop-build/trust/1/ca.pem", "read-only", "writable",
    ]
    assert [r.getMessage() for r in caplog.records] == [
        f"CURL_CA_BUNDLE={corp / 'gone.pem'} does not exist: build steps do not get it"]
    assert (corp / "ca.pem").read_text() == "corp CA\n"
    assert (corp / "certs" / "a.pem").read_text() == "cert a\n"
    # The mount points (/run/coop-build for apt's file) went with the step.
    assert not layer_file(paths, first, 1, "run").exists()
    assert layer_file(paths, first, 2, "marker").read_text() == "built\n"

    # Another network: no trust at all, or other files. Same keys, same fingerprint.
    npmrc.unlink()
    elsewhere = {"SSL_CERT_FILE": str(corp / "certs" / "a.pem"), "HOME": os.environ["HOME"]}
    for environ in ({**os.environ}, {**os.environ, **elsewhere}):
        again, _ = run_build(paths, ws, environ=environ)
        assert (again.steps_run, again.build_key) == (0, first.build_key)
        assert Builder(paths, environ=environ).fingerprint(load(ws)) == (
            Builder(paths, environ={**os.environ, **trust}).fingerprint(load(ws)))

    # A path no step may have bound stops the build before any step, in one line.
    write_coopfile(ws, coopfile_text(test_images.busybox, ["echo changed > /marker"]))
    with pytest.raises(InheritedPathError, match=r"^NODE_EXTRA_CA_CERTS=/proc/self/fd/0: "):
        run_build(paths, ws, environ={**os.environ, "NODE_EXTRA_CA_CERTS": "/proc/self/fd/0"})
    assert Store(paths).workspace_build(ws) == again.record


# -- Debian: real apt, pip and npm installs from the loopback mirror --------------------------


@pytest.mark.debian
@pytest.mark.registry
@pytest.mark.slow
def test_debian_packages_really_installed(
    debian_image: Any, mirror: Any, paths: CoopPaths, tmp_path: Path
) -> None:
    image = debian_image if isinstance(debian_image, str) else debian_image.ref
    ws = tmp_path / "ws"
    checks = [
        "jq --version",
        'python3 -c "import six; print(six.__version__)"',
        "test -d /usr/local/lib/node_modules/is-number",
    ]
    write_coopfile(
        ws,
        coopfile_text(
            image, checks, packages={"npm": ["is-number"], "pip": ["six==1.17.0"], "apt": ["jq"]}
        ),
    )
    environ = {**os.environ, **mirror.env}
    result, rec = run_build(paths, ws, environ=environ)
    assert result.steps_run == 7
    assert result.record.package_count == 3
    out = rec.output()
    assert any(line.startswith("jq-1.") for line in out), out[-20:]
    assert "1.17.0" in out, "\n".join(out[-40:])
    # apt cleaned its lists in the same step, so the layer holds no index files.
    lists = layer_file(paths, result, 1, "var/lib/apt/lists")
    assert not lists.exists() or not [
        p for p in lists.iterdir() if p.is_file() and p.name != "lock"
    ]
    again, _ = run_build(paths, ws, environ=environ)
    assert again.steps_run == 0


# -- the public API ------------------------------------------------------------------------


def test_package_exports_are_lazy_and_match_the_api() -> None:
    code = (
        "import sys, coop_build\n"
        "assert 'pydantic' not in sys.modules and 'coop_build.build' not in sys.modules\n"
        "store = coop_build.Store\n"
        "assert 'pydantic' not in sys.modules, 'Store pulled in pydantic'\n"
        "assert 'coop_build.api' not in sys.modules, 'Store pulled in the api module'\n"
        "import coop_build.api as api, coop_build.build as build\n"
        "assert coop_build.Builder is build.Builder is api.Builder\n"
        "assert coop_build.__all__ == api.__all__\n"
        "for name in api.__all__:\n"
        "    assert getattr(coop_build, name) is getattr(api, name), name\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.stdout == "ok\n", proc.stderr
    import coop_build

    with pytest.raises(AttributeError):
        _ = coop_build.no_such_name
