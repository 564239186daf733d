"""The store: atomic publish, never-modified layers, records, the build lock, tmp cleanup, gc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from coop_build.errors import StoreError
from coop_build.paths import CoopPaths
from coop_build.steps import BuildPlan, Step, step_key
from coop_build.store import BuildRecord, Store, workspace_id, write_json_durable
from support.rootfs import as_layer


@pytest.fixture
def paths(tmp_path: Path) -> CoopPaths:
    return CoopPaths(tmp_path / "home")


@pytest.fixture
def store(paths: CoopPaths) -> Store:
    return Store(paths)


def make_plan(*commands: str, image: str = "alpine:3") -> BuildPlan:
    parent = ""
    steps: list[Step] = []
    for i, command in enumerate(("<base>", *commands)):
        definition = {"kind": "base" if i == 0 else "setup", "command": command}
        key = step_key(parent, definition)
        steps.append(Step("base" if i == 0 else "setup", command, definition, key))
        parent = key
    return BuildPlan(tuple(steps), parent, image, "linux/amd64", False, 0)


def publish(store: Store, step: Step, content: str) -> str:
    with store.lock():
        scratch = store.new_scratch()
        scratch.fs.mkdir()
        (scratch.fs / "file").write_text(content)
        as_layer(scratch.fs)
        return store.publish_layer(
            scratch, step_key=step.key, description=step.description, definition=step.definition
        )


def build(store: Store, plan: BuildPlan, tag: str = "") -> BuildRecord:
    ids = [
        store.find_layer(s.key) or publish(store, s, f"{s.description}{tag}") for s in plan.steps
    ]
    with store.lock():
        return store.register_build(plan, ids, env=["PATH=/bin"])


def test_scratch_and_publish_need_the_lock(store: Store) -> None:
    with pytest.raises(StoreError, match="build lock"):
        store.new_scratch()


def test_publish_is_one_rename(store: Store, paths: CoopPaths) -> None:
    step = make_plan().steps[0]
    with store.lock():
        scratch = store.new_scratch()
        assert scratch.path.parent == paths.tmp
        assert scratch.work.is_dir() and not scratch.fs.exists()
        scratch.fs.mkdir()
        (scratch.fs / "hello").write_text("hi")
        as_layer(scratch.fs)
        assert store.find_layer(step.key) is None
        assert not paths.layers.exists() or not any(paths.layers.iterdir())
        layer_id = store.publish_layer(
            scratch, step_key=step.key, description="d", definition={"x": 1}, extra={"e": [1]}
        )
        assert not scratch.path.exists()
    assert layer_id == step.key
    assert (paths.layers / layer_id / "fs" / "hello").read_text() == "hi"
    meta = store.layer_meta(layer_id)
    assert meta["step_key"] == step.key
    assert meta["description"] == "d"
    assert meta["definition"] == {"x": 1}
    assert meta["e"] == [1]
    assert store.find_layer(step.key) == layer_id
    assert list(paths.tmp.iterdir()) == []


def test_publish_without_fs_fails(store: Store) -> None:
    step = make_plan().steps[0]
    with store.lock():
        scratch = store.new_scratch()
        with pytest.raises(StoreError, match="no filesystem"):
            store.publish_layer(scratch, step_key=step.key, description="", definition={})


def test_republishing_a_key_never_touches_the_existing_layer(
    store: Store, paths: CoopPaths
) -> None:
    step = make_plan().steps[0]
    first = publish(store, step, "old")
    inode = (paths.layers / first / "fs" / "file").stat().st_ino
    second = publish(store, step, "new")
    third = publish(store, step, "newer")
    assert (first, second, third) == (step.key, f"{step.key}~2", f"{step.key}~3")
    assert (paths.layers / first / "fs" / "file").read_text() == "old"
    assert (paths.layers / first / "fs" / "file").stat().st_ino == inode
    assert (paths.layers / second / "fs" / "file").read_text() == "new"
    # The plain key wins while it exists; then the newest re-run.
    assert store.find_layer(step.key) == first
    with store.lock():
        report = store.gc(keep=[second, third])
    assert report.layers_removed == (first,)
    assert store.find_layer(step.key) == third


def test_build_record_round_trip(store: Store, paths: CoopPaths) -> None:
    plan = make_plan("echo a", "echo b")
    record = build(store, plan)
    assert record.build_key == plan.build_key
    assert [s.key for s in record.steps] == [s.key for s in plan.steps]
    assert record.layers == tuple(s.key for s in plan.steps)
    assert record.env == ("PATH=/bin",)
    assert store.get_build(plan.build_key) == record
    assert store.build_complete(record)
    assert store.list_builds() == [record]
    assert store.lower_dirs(record) == tuple(paths.layers / s.key / "fs" for s in plan.steps)
    refs = store.layers_of(record)
    assert [(r.step_key, r.description) for r in refs] == [
        (s.key, s.description) for s in plan.steps
    ]
    data = json.loads((paths.rootfs / plan.build_key / "build.json").read_text())
    assert set(data) == {
        "version",
        "build_key",
        "image",
        "platform",
        "host",
        "steps",
        "layers",
        "package_count",
        "created",
        "env",
    }


def test_save_build_refuses_missing_layers(store: Store) -> None:
    plan = make_plan("echo a")
    with store.lock(), pytest.raises(StoreError, match="layers missing"):
        store.register_build(plan, [s.key for s in plan.steps])
    assert store.get_build(plan.build_key) is None


def test_corrupt_build_record(store: Store, paths: CoopPaths) -> None:
    plan = make_plan("echo a")
    build(store, plan)
    path = paths.rootfs / plan.build_key / "build.json"
    data = json.loads(path.read_text())
    data["layers"][0] = "../../etc"
    path.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="invalid layer id"):
        store.get_build(plan.build_key)
    path.write_text("{not json")
    with pytest.raises(StoreError, match="cannot read"):
        store.get_build(plan.build_key)
    assert store.list_builds() == []  # skipped with a warning


def test_workspace_records(store: Store, tmp_path: Path) -> None:
    ws = tmp_path / "project"
    ws.mkdir()
    link = tmp_path / "link"
    link.symlink_to(ws)
    assert store.workspace_build(ws) is None
    plan = make_plan("echo a")
    record = build(store, plan)
    coopfile = ws / "coop.toml"
    wrec = store.record_workspace(link, plan.build_key, coopfile)
    assert wrec.workspace == str(ws)
    assert store.workspace_record(ws) == wrec
    assert store.workspace_build(ws) == record
    assert workspace_id(link) == workspace_id(ws)
    assert store.list_workspaces() == [wrec]
    # Recording the same build again keeps the record (and its time) as it is.
    assert store.record_workspace(ws, plan.build_key, coopfile) == wrec
    other = build(store, make_plan("echo other"))
    moved = store.record_workspace(ws, other.build_key, coopfile)
    assert moved.build_key == other.build_key
    assert store.workspace_build(ws) == other
    store.record_workspace(ws, plan.build_key, coopfile)
    # A build whose layers were removed is not usable.
    assert store.remove_build(plan.build_key)
    assert store.workspace_build(ws) is None


def test_two_workspaces_two_builds_and_gc(store: Store, tmp_path: Path, paths: CoopPaths) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    plan_a = make_plan("echo shared", "echo a")
    plan_b = make_plan("echo shared", "echo b")
    rec_a, rec_b = build(store, plan_a), build(store, plan_b)
    store.record_workspace(a, plan_a.build_key, None)
    store.record_workspace(b, plan_b.build_key, None)
    assert rec_a.layers[:2] == rec_b.layers[:2]  # the shared steps are one layer each
    assert store.unused_builds() == []
    with store.lock():
        assert store.gc().layers_removed == ()
    # Workspace a moves on: its old build is unused, gc frees only what b does not share.
    plan_a2 = make_plan("echo shared", "echo a2")
    build(store, plan_a2)
    store.record_workspace(a, plan_a2.build_key, None)
    assert store.unused_builds() == [plan_a.build_key]
    assert store.unused_builds(keep=[plan_a.build_key]) == []
    store.remove_build(plan_a.build_key)
    assert store.gc().layers_removed == (rec_a.layers[2],)
    assert store.workspace_build(b) == rec_b
    assert store.build_complete(rec_b)
    assert not store.remove_build(plan_a.build_key)
    assert sorted(store.list_layers()) == sorted(
        {*rec_b.layers, *store.get_build(plan_a2.build_key).layers}  # type: ignore[union-attr]
    )
    assert list(paths.tmp.iterdir()) == []


def test_write_json_durable(tmp_path: Path) -> None:
    target = tmp_path / "d" / "x.json"
    write_json_durable(target, {"a": 1})
    write_json_durable(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_lock_cleans_leftovers_of_killed_builds(store: Store, paths: CoopPaths) -> None:
    paths.tmp.mkdir(parents=True)
    stale = paths.tmp / "step-0123456789abcdef"
    (stale / "layer" / "fs" / "deep").mkdir(parents=True)
    (stale / "layer" / "fs" / "deep" / "f").write_text("x")
    (stale / "layer" / "fs" / "deep").chmod(0o500)  # as an unpacked image may leave it
    trash = paths.tmp / "trash-0123456789abcdef"
    trash.mkdir()
    other = paths.tmp / "not-ours"
    other.write_text("keep")
    with store.lock():
        assert sorted(p.name for p in paths.tmp.iterdir()) == ["not-ours"]
    assert other.read_text() == "keep"


LOCKER = """
import os, sys
from pathlib import Path
from coop_build.paths import CoopPaths
from coop_build.store import Store
store = Store(CoopPaths(Path(sys.argv[1])))
with store.lock():
    scratch = store.new_scratch()
    scratch.fs.mkdir()
    (scratch.fs / "half").write_text("half-built")
    print(scratch.path, flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), 9)
    sys.stdin.read()
"""


def _locker(paths: CoopPaths, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(paths.home), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_lock_excludes_other_processes(store: Store, paths: CoopPaths) -> None:
    with _locker(paths, "hold") as proc:
        try:
            assert proc.stdout is not None
            scratch = Path(proc.stdout.readline().strip())
            assert scratch.is_dir()
            waited = threading.Event()
            acquired = threading.Event()
            seen_scratch: list[bool] = []

            def take() -> None:
                with store.lock(on_wait=waited.set):
                    seen_scratch.append(scratch.exists())
                    acquired.set()

            thread = threading.Thread(target=take)
            thread.start()
            assert waited.wait(10)
            assert not acquired.is_set()
            assert scratch.exists()  # the holder's scratch is untouched while it holds the lock
            assert proc.stdin is not None
            proc.stdin.close()  # the holder finishes without cleaning up: its scratch is stale
            assert proc.wait(10) == 0
            thread.join(10)
            assert not thread.is_alive(), "a test thread did not stop"
            assert acquired.is_set()
            assert seen_scratch == [False]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sigkilled_holder_releases_lock_and_its_scratch_is_cleaned(
    store: Store, paths: CoopPaths
) -> None:
    with _locker(paths, "kill") as proc:
        assert proc.stdout is not None
        scratch = Path(proc.stdout.readline().strip())
        assert proc.wait(10) == -signal.SIGKILL
    assert scratch.is_dir()
    with store.lock():
        assert not scratch.exists()
    assert store.list_layers() == []


def test_lock_is_reentrant(store: Store, paths: CoopPaths) -> None:
    with store.lock(), store.lock():
        store.new_scratch()
    with store.lock():
        assert list(paths.tmp.iterdir()) == []


def test_lock_file_is_private(store: Store, paths: CoopPaths) -> None:
    with store.lock():
        pass
    assert (paths.home / "build.lock").stat().st_mode & 0o077 == 0
    assert os.access(paths.home / "build.lock", os.R_OK)


@pytest.mark.rootonly
def test_a_layer_of_host_root_is_not_used_as_root(store: Store, paths: CoopPaths) -> None:
    """Layers made before root's builds ran as coop's id range belong to host root: root
    must rebuild them (a sandbox of them would hand its agent host root's files)."""
    plan = make_plan("echo a", "echo b")
    record = build(store, plan)
    assert store.build_complete(record)
    old = record.layers[1]
    os.chown(paths.layers / old / "fs", 0, 0)  # as an older coop left it
    assert not store.build_complete(record)
    assert store.find_layer(plan.steps[1].key) is None
    assert store.find_layer(plan.steps[0].key) == record.layers[0]
    assert store.host_root_layers(record) == [old]
    rebuilt = build(store, plan)
    assert rebuilt.layers == (record.layers[0], f"{old}~2", *record.layers[2:])
    assert store.build_complete(rebuilt) and store.host_root_layers(rebuilt) == []
