"""The mount plan of SPEC 4.2 and the set-up records that carry it to coop-init (pure)."""

from __future__ import annotations

import pytest

from coop_build import linux
from coop_run.sandbox import caps, initproto
from coop_run.sandbox.mounts import (
    Bind,
    FreshMount,
    HostLayer,
    HostOverlay,
    HostSymlink,
    MountSpec,
    Overlay,
    PivotRoot,
    Symlink,
    hidden_targets,
    plan_mounts,
    plan_records,
    split_plan,
)

SPEC = MountSpec(
    root="/s/root", lowers=("/l/a", "/l/b"), upper="/s/upper", work="/s/work",
    workspace="/home/u/proj", workspace_inside="/work/proj",
    persist=(("/s/persist/.cache", "/root/.cache"),),
    etc_files=(("/s/etc/hostname", "/etc/hostname"), ("/s/etc/hosts", "/etc/hosts")),
)


def test_plan_order_and_content() -> None:
    ops = plan_mounts(SPEC)
    # First the overlay (coop-init made propagation private before reading any).
    assert ops[0] == Overlay("/s/root", ("/l/a", "/l/b"), "/s/upper", "/s/work")
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
    assert not any(isinstance(op, HostOverlay | HostSymlink) for op in ops)


HOST_LAYERS = (HostLayer("usr", ("/usr", "/l/usr"), "/s/host/upper0", "/s/host/work0"),
               HostLayer("var/lib/dpkg", ("/var/lib/dpkg",), "/s/host/upper1",
                         "/s/host/work1"))


def test_host_image_overlays_host_dirs_before_the_workspace_and_etc_files() -> None:
    """image = "host": an overlay at each host directory (the host's the lowest layer),
    the host's top-level symlinks mirrored, all before the workspace and /etc's files."""
    ops = plan_mounts(MountSpec(root="/r", lowers=("/l",), upper="/u", work="/w",
                                host_image=True, workspace="/ws", host_layers=HOST_LAYERS,
                                host_links=("bin", "lib"),
                                etc_files=(("/e/hosts", "/etc/hosts"),)))
    overlays = [op for op in ops if isinstance(op, HostOverlay)]
    assert overlays == [
        HostOverlay("/usr", ("/usr", "/l/usr"), "/s/host/upper0", "/s/host/work0"),
        HostOverlay("/var/lib/dpkg", ("/var/lib/dpkg",), "/s/host/upper1", "/s/host/work1")]
    assert [op.name for op in ops if isinstance(op, HostSymlink)] == ["bin", "lib"]
    host = [i for i, op in enumerate(ops) if isinstance(op, HostOverlay | HostSymlink)]
    workspace = ops.index(Bind("/ws", "/workspace"))
    etc = ops.index(Bind("/e/hosts", "/etc/hosts", kind="file", readonly=True, optional=True))
    assert ops.index(FreshMount("tmpfs", "/tmp", linux.MS_NOSUID | linux.MS_NODEV,
                                "mode=1777")) < min(host)
    assert max(host) < workspace < etc
    with pytest.raises(ValueError, match="overlay"):
        plan_mounts(MountSpec(root="/r", lowers=("/l",), upper="/u", work="/w",
                              host_image=True,
                              host_layers=(HostLayer("usr", ("/usr",), "/a:b", "/w2"),)))


def test_inherited_files_are_bound_read_only_after_persist_before_hidden() -> None:
    """[network] inherit's TLS trust: files and directories, read-only, where coop
    says (never the host's path); before the covers of COOP_HOME and /etc's files."""
    ops = plan_mounts(MountSpec(
        root="/r", lowers=("/l",), upper="/u", work="/w", workspace="/ws",
        persist=(("/p", "/root/.p"),), hidden=("/run/coop/trust/2/certs/coop",),
        readonly_binds=(("/c/ca.pem", "/run/coop/trust/1/ca.pem", "file"),
                        ("/c/certs", "/run/coop/trust/2/certs", "dir")),
        etc_files=(("/e/hosts", "/etc/hosts"),)))
    ca = ops.index(Bind("/c/ca.pem", "/run/coop/trust/1/ca.pem", kind="file", readonly=True))
    certs = ops.index(Bind("/c/certs", "/run/coop/trust/2/certs", kind="dir", readonly=True))
    hidden = next(i for i, op in enumerate(ops) if isinstance(op, FreshMount)
                  and op.target == "/run/coop/trust/2/certs/coop")
    assert ops.index(Bind("/p", "/root/.p")) < ca < certs < hidden < ops.index(
        Bind("/e/hosts", "/etc/hosts", kind="file", readonly=True))


@pytest.mark.parametrize("bad", ["/a,b", "/a:b", "/a\\b"])
def test_plan_refuses_paths_unusable_in_overlay_options(bad: str) -> None:
    with pytest.raises(ValueError, match="overlay"):
        plan_mounts(MountSpec(root="/r", lowers=(bad,), upper="/u", work="/w"))


def test_plan_needs_a_lower() -> None:
    with pytest.raises(ValueError, match="lower"):
        plan_mounts(MountSpec(root="/r", lowers=(), upper="/u", work="/w"))


def test_capability_masks() -> None:
    assert caps.mask(frozenset({0, 1, 33})) == 0b11 | (1 << 33)
    assert caps.CAP_SYS_ADMIN not in caps.KEEP
    assert caps.CAP_NET_ADMIN not in caps.KEEP
    assert caps.CAP_SYS_PTRACE not in caps.KEEP
    assert caps.CAP_SYS_MODULE not in caps.KEEP
    assert {caps.CAP_CHOWN, caps.CAP_SETUID, caps.CAP_DAC_OVERRIDE} <= caps.KEEP
    assert caps.status_mask("Name:\tx\nCapEff:\t00000000a80425fb\n") == 0xA80425FB


# --- the records coop-init executes ---------------------------------------------------


def test_the_records_carry_the_plan_in_order() -> None:
    first, late = split_plan(plan_mounts(SPEC), ["/s/etc/hosts"])
    records = plan_records(first) + plan_records(late)
    for record in records:  # every one is valid on the wire
        assert initproto.decode(initproto.encode(record))["op"] == record["op"]
    # The layers bottom first (their descriptors ride along: ``mountfds``), then the overlay.
    assert records[:3] == [
        {"op": "lower", "path": "/l/a"}, {"op": "lower", "path": "/l/b"},
        {"op": "overlay", "root": "/s/root", "upper": "/s/upper", "work": "/s/work"}]
    assert [r["op"] for r in records[3:6]] == ["fresh", "fresh", "bind"]
    assert records[3] == {"op": "fresh", "fstype": "proc", "target": "/proc",
                          "flags": linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                          "data": None, "cover": False}
    workspace = next(r for r in records if r.get("target") == "/work/proj")
    assert workspace == {"op": "bind", "source": "/home/u/proj", "target": "/work/proj",
                         "file": False, "readonly": False, "recursive": False,
                         "optional": False, "idmapped": False}
    # The late part starts at the first bind of a file the supervisor writes meanwhile.
    assert plan_records(late) == [
        {"op": "bind", "source": "/s/etc/hosts", "target": "/etc/hosts", "file": True,
         "readonly": True, "recursive": False, "optional": False, "idmapped": False},
        {"op": "pivot"}]


def test_host_secrets_are_covered_after_the_host_dirs() -> None:
    """image = "host": the blank file read-only over each secret file, an empty read-only
    tmpfs over each secret directory, right after the host's directories; none without
    the host image."""
    secrets = (("/etc/shadow", False), ("/etc/sudoers.d", True))
    spec = MountSpec(root="/r", lowers=("/l",), upper="/u", work="/w", host_image=True,
                     host_layers=HOST_LAYERS, host_links=("bin",), secrets=secrets,
                     blank="/s/etc/blank")
    ops = plan_mounts(spec)
    last_host = max(i for i, op in enumerate(ops) if isinstance(op, HostOverlay | HostSymlink))
    assert ops[last_host + 1] == Bind("/s/etc/blank", "/etc/shadow", kind="file",
                                      readonly=True)
    cover = ops[last_host + 2]
    assert isinstance(cover, FreshMount) and cover.target == "/etc/sudoers.d"
    assert cover.flags & linux.MS_RDONLY and cover.data == "mode=0555" and cover.cover
    plain = plan_mounts(MountSpec(root="/r", lowers=("/l",), upper="/u", work="/w",
                                  secrets=secrets, blank="/s/etc/blank"))
    assert not any(getattr(op, "target", "").startswith(("/etc/shadow", "/etc/sudoers"))
                   for op in plain)
    with pytest.raises(ValueError, match="blank"):
        plan_mounts(MountSpec(root="/r", lowers=("/l",), upper="/u", work="/w",
                              host_image=True, secrets=secrets))


def test_root_s_workspace_is_an_idmapped_bind() -> None:
    spec = MountSpec(root="/r", lowers=("/l",), upper="/u", work="/w", workspace="/ws",
                     idmapped_workspace=True)
    assert Bind("/ws", "/workspace", idmapped=True) in plan_mounts(spec)
    record = next(r for r in plan_records(plan_mounts(spec)) if r.get("source") == "/ws")
    assert record["idmapped"] is True


def test_the_plan_splits_before_the_first_host_overlay_whose_dirs_come_late() -> None:
    """The supervisor makes the host overlays' upper and work dirs while the init mounts
    the root: the first part ends before the first overlay that needs them."""
    ops = plan_mounts(MountSpec(root="/r", lowers=("/l",), upper="/u", work="/w",
                                host_image=True, host_layers=HOST_LAYERS, workspace="/ws"))
    first, late = split_plan(ops, [layer.upper for layer in HOST_LAYERS])
    assert first + late == ops
    assert late[0] == HostOverlay("/usr", ("/usr", "/l/usr"), "/s/host/upper0",
                                  "/s/host/work0")
    assert not any(isinstance(op, HostOverlay) for op in first)


def test_host_layers_and_entries_become_records() -> None:
    """A host directory's overlay: its lowers as "lower" records (the host's first), then
    "hostlayer" with the place inside; a host symlink is a "hostentry"."""
    spec = MountSpec(root="/r", lowers=("/l",), upper="/u", work="/w", host_image=True,
                     host_layers=HOST_LAYERS[:1], host_links=("lib64",))
    records = plan_records(plan_mounts(spec))
    start = records.index({"op": "lower", "path": "/usr"})
    assert records[start:start + 3] == [
        {"op": "lower", "path": "/usr"}, {"op": "lower", "path": "/l/usr"},
        {"op": "hostlayer", "target": "/usr", "upper": "/s/host/upper0",
         "work": "/s/host/work0"}]
    assert {"op": "hostentry", "name": "lib64"} in records
    assert {"op": "symlink", "target": "/dev/fd", "points_to": "/proc/self/fd"} in records
    for record in records:
        initproto.encode(record)  # every record fits its schema


def test_a_hidden_directory_is_covered_wherever_a_bind_shows_it() -> None:
    binds = [("/home/u", "/workspace"), ("/c/sessions/s/persist/.cache", "/root/.cache")]
    assert hidden_targets(["/home/u/.coop"], binds) == ("/workspace/.coop",)
    assert hidden_targets(["/home/u"], binds) == ("/workspace",)  # the workspace is it
    assert hidden_targets(["/home/user2/.coop", "/home/uu"], binds) == ()  # prefixes only
    assert hidden_targets(["/home/u/.coop", "/home/u/.coop"], binds) == ("/workspace/.coop",)
    spec = MountSpec(root="/r", lowers=("/l",), upper="/u", work="/w", workspace="/home/u",
                     hidden=("/workspace/.coop",))
    ops = plan_mounts(spec)
    cover = [op for op in ops if isinstance(op, FreshMount) and op.target == "/workspace/.coop"]
    assert len(cover) == 1 and cover[0].flags & linux.MS_RDONLY
    workspace_bind = next(i for i, op in enumerate(ops) if getattr(op, "target", None) ==
                          "/workspace")
    assert ops.index(cover[0]) > workspace_bind  # over the bind, not under it
