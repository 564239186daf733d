"""The mount plan of SPEC 4.2 (pure) and resolving mount points inside the root."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from coop_build import linux
from coop_run import caps
from coop_run.rootfs_mounts import (
    Bind,
    FreshMount,
    HostSymlinkOrBind,
    MakePrivate,
    MountSpec,
    Overlay,
    PivotRoot,
    SpecError,
    Symlink,
    ensure_target,
    plan_mounts,
    spec_from_json,
    spec_to_json,
    split_plan,
)
from coop_run.sandbox_init import setup_message, setup_spec

SPEC = MountSpec(
    root="/s/root", lowers=("/l/a", "/l/b"), upper="/s/upper", work="/s/work",
    workspace="/home/u/proj", workspace_inside="/work/proj",
    persist=(("/s/persist/.cache", "/root/.cache"),),
    etc_files=(("/s/etc/hostname", "/etc/hostname"), ("/s/etc/hosts", "/etc/hosts")),
)


def test_plan_order_and_content() -> None:
    ops = plan_mounts(SPEC)
    assert isinstance(ops[0], MakePrivate)
    assert ops[1] == Overlay("/s/root", ("/l/a", "/l/b"), "/s/upper", "/s/work")
    assert isinstance(ops[-1], PivotRoot)
    fresh = {op.target: op for op in ops if isinstance(op, FreshMount)}
    assert fresh["/proc"].fstype == "proc"
    assert fresh["/dev"].fstype == "tmpfs"
    assert fresh["/tmp"].fstype == "tmpfs" and fresh["/dev/shm"].fstype == "tmpfs"
    devpts = fresh["/dev/pts"]
    assert devpts.fstype == "devpts"
    assert devpts.data is not None and "newinstance" in devpts.data
    assert "ptmxmode=0666" in devpts.data
    for op in fresh.values():
        assert op.flags & linux.MS_NOSUID
    # /dev exists before anything is put inside it, /dev/pts before ptmx points there.
    order = [getattr(op, "target", None) for op in ops]
    assert order.index("/dev") < order.index("/dev/null") < order.index("/dev/pts")
    assert Symlink("/dev/ptmx", "pts/ptmx") in ops
    nodes = {op.target for op in ops if isinstance(op, Bind) and op.source.startswith("/dev/")}
    assert nodes == {f"/dev/{n}" for n in ("null", "zero", "full", "random", "urandom", "tty")}
    assert Bind("/home/u/proj", "/work/proj") in ops            # read-write
    assert Bind("/s/persist/.cache", "/root/.cache") in ops
    assert Bind("/s/etc/hostname", "/etc/hostname", kind="file", readonly=True) in ops
    assert not any(isinstance(op, HostSymlinkOrBind) for op in ops)


def test_host_image_binds_host_dirs_before_the_workspace_and_etc_files() -> None:
    ops = plan_mounts(MountSpec(root="/r", lowers=("/l",), upper="/u", work="/w",
                                host_image=True, workspace="/ws",
                                etc_files=(("/e/hosts", "/etc/hosts"),)))
    hosts = [i for i, op in enumerate(ops) if isinstance(op, HostSymlinkOrBind)]
    names = [op.name for op in ops if isinstance(op, HostSymlinkOrBind)]
    assert {"usr", "bin", "lib", "etc"} <= set(names)
    workspace = ops.index(Bind("/ws", "/workspace"))
    etc = ops.index(Bind("/e/hosts", "/etc/hosts", kind="file", readonly=True, optional=True))
    assert max(hosts) < workspace < etc


@pytest.mark.parametrize("bad", ["/a,b", "/a:b", "/a\\b"])
def test_plan_refuses_paths_unusable_in_overlay_options(bad: str) -> None:
    with pytest.raises(ValueError, match="overlay"):
        plan_mounts(MountSpec(root="/r", lowers=(bad,), upper="/u", work="/w"))


def test_plan_needs_a_lower() -> None:
    with pytest.raises(ValueError, match="lower"):
        plan_mounts(MountSpec(root="/r", lowers=(), upper="/u", work="/w"))


def test_ensure_target_creates_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ws").symlink_to("/etc")  # an image trying to steer the workspace onto /etc
    target = ensure_target(str(root), "/ws/proj", "dir")
    assert target == str(root / "etc" / "proj")
    assert (root / "etc" / "proj").is_dir()
    target = ensure_target(str(root), "/etc/hosts", "file")
    assert Path(target).is_file() and Path(target).parent == root / "etc"


def test_capability_masks() -> None:
    assert caps.mask(frozenset({0, 1, 33})) == 0b11 | (1 << 33)
    assert caps.CAP_SYS_ADMIN not in caps.KEEP
    assert caps.CAP_NET_ADMIN not in caps.KEEP
    assert caps.CAP_SYS_PTRACE not in caps.KEEP
    assert caps.CAP_SYS_MODULE not in caps.KEEP
    assert {caps.CAP_CHOWN, caps.CAP_SETUID, caps.CAP_DAC_OVERRIDE} <= caps.KEEP
    assert caps.effective_mask("Name:\tx\nCapEff:\t00000000a80425fb\n") == 0xA80425FB


# --- the spec as the supervisor sends it to a waiting init ------------------------------


def test_a_spec_survives_json() -> None:
    spec = replace(SPEC, host_image=True, workspace=None)
    wire = json.loads(json.dumps(spec_to_json(SPEC)))
    assert spec_from_json(wire) == SPEC
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec


@pytest.mark.parametrize(("key", "value"), [
    ("root", 1), ("lowers", "a"), ("lowers", ["a", 2]), ("persist", [["a"]]),
    ("etc_files", ["ab"]), ("host_image", "yes"), ("workspace", 3), ("host_dirs", None),
])
def test_a_malformed_spec_is_refused(key: str, value: object) -> None:
    wire = spec_to_json(SPEC)
    wire[key] = value
    with pytest.raises(SpecError, match=key):
        spec_from_json(wire)


def test_the_setup_message_gives_the_init_its_plan() -> None:
    message = json.loads(json.dumps(setup_message("box", SPEC, ["/s/etc/hosts"],
                                                  frozenset({0, 5}))))
    spec, hostname = setup_spec(message)
    early, middle, late = split_plan(plan_mounts(SPEC), ["/s/etc/hosts"])
    assert (spec.early, spec.middle, spec.late) == (early, middle, late)
    assert (hostname, spec.root, spec.child_caps) == ("box", SPEC.root, frozenset({0, 5}))
    for bad in ({**message, "op": "spawn"}, {**message, "child_caps": [True]},
                {**message, "hostname": None}, {**message, "late_sources": "x"}):
        with pytest.raises(SpecError):
            setup_spec(bad)
