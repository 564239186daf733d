"""Setup-time preparation of the cached test inputs (network allowed here, never in tests).

Builds, under ``$COOP_TEST_CACHE`` (default ``/var/cache/coop-tests``):

- ``debian-bookworm/``: an OCI layout (tag ``bookworm``) of a debootstrapped minbase
  Debian with pip and npm, whose apt source is the loopback test mirror;
- ``mirror/``: the files the loopback mirror serves: a Debian mini-repository holding
  ``jq`` and the dependencies the image lacks, the ``six`` wheel and ``is-number`` 7.0.0.

Standard library only: ``scripts/prepare-test-images`` runs this as root, before any venv
exists for the test user. Each part is built in a temporary directory and renamed into place,
so an interrupted run leaves no half-built cache behind.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .oci import Layout

logger = logging.getLogger(__name__)

# Bump when the recipe below changes: caches with another version are rebuilt.
DEBIAN_VERSION = 1
MIRROR_VERSION = 1

DEBIAN_DIR = "debian-bookworm"
DEBIAN_TAG = "bookworm"
MIRROR_DIR = "mirror"
STAMP = "coop-bench.json"
MIRROR_HOST = "coop-test-mirror"
SOURCES_LIST = f"deb [trusted=yes] http://{MIRROR_HOST}/debian bookworm main\n"
# A build step of ``image = "host"`` that points apt at the mirror alone (the host's own
# sources are out of the tests' reach) and reads its lists.
APT_MIRROR_STEP = ("rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* && "
                   f"echo '{SOURCES_LIST.strip()}' > /etc/apt/sources.list.d/coop-test.list "
                   "&& apt-get update --error-on=any")
DEBIAN_EXTRAS = ("python3-pip", "npm")
# jq and what it needs beyond the image (libc6 is there already).
MIRROR_DEBS = ("jq", "libjq1", "libonig5")
PIP_REQUIREMENT = "six==1.17.0"
NPM_SPEC = "is-number@7.0.0"


class PrepareError(Exception):
    """A preparation step failed; the message says which and why."""


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Where the cached test inputs live: ``$COOP_TEST_CACHE`` or /var/cache/coop-tests."""
    env = os.environ if environ is None else environ
    return Path(env.get("COOP_TEST_CACHE") or "/var/cache/coop-tests")


def read_stamp(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def debian_ready(cache: Path) -> bool:
    stamp = read_stamp(cache / DEBIAN_DIR)
    return stamp is not None and stamp.get("version") == DEBIAN_VERSION


def mirror_ready(cache: Path) -> bool:
    stamp = read_stamp(cache / MIRROR_DIR)
    return stamp is not None and stamp.get("version") == MIRROR_VERSION


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         stdout: int | None = None) -> subprocess.CompletedProcess[bytes]:
    logger.info("running %s", " ".join(argv))
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=stdout or subprocess.PIPE,
                          stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        text = proc.stderr.decode(errors="replace").strip()
        if not text and proc.stdout:
            text = proc.stdout.decode(errors="replace").strip()
        tail = text.splitlines()[-5:]
        raise PrepareError(f"{argv[0]} failed ({proc.returncode}): {' | '.join(tail)}")
    return proc


def _make_world_readable(root: Path) -> None:
    """The unprivileged test run reads (and pushes) the cache: a+rX everywhere."""
    _run(["chmod", "-R", "a+rX", str(root)])


def _publish(tmp: Path, dest: Path) -> None:
    """Swaps ``tmp`` in as ``dest`` (old copy removed after the rename)."""
    old = None
    if dest.exists():
        old = dest.with_name(dest.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _host_debian_mirror() -> str:
    """The host's own Debian mirror URI (the host is bookworm too)."""
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if uri.rstrip("/").endswith("/debian"):
                        return uri
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"]:
                uri = next((p for p in parts[1:] if not p.startswith("[")), "")
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    return "http://deb.debian.org/debian"


def _exclude_special(name: str) -> bool:
    """Leaves /dev, /proc, /sys empty: sandboxes bind or mount their own."""
    return any(name.startswith(d + "/") for d in ("dev", "proc", "sys"))


def build_debian(cache: Path) -> Path:
    """debootstraps bookworm minbase into an OCI layout at ``cache/debian-bookworm``."""
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".debian-", dir=cache))
    try:
        rootfs = work / "rootfs"
        # debootstrap's own resolver cannot install npm (virtual packages): install the
        # extras with apt inside the new root instead.
        _run(["debootstrap", "--variant=minbase", "--include=ca-certificates",
              "bookworm", str(rootfs), _host_debian_mirror()])
        chroot_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                      "DEBIAN_FRONTEND": "noninteractive"}
        _run(["chroot", str(rootfs), "apt-get", "update", "-q"], env=chroot_env)
        _run(["chroot", str(rootfs), "apt-get", "install", "-y", "-q",
              "--no-install-recommends", *DEBIAN_EXTRAS], env=chroot_env)
        _run(["chroot", str(rootfs), "apt-get", "clean"], env=chroot_env)
        (rootfs / "etc" / "resolv.conf").write_text("")
        apt = rootfs / "etc" / "apt"
        (apt / "sources.list").write_text(SOURCES_LIST)
        for extra in (apt / "sources.list.d").glob("*"):
            extra.unlink()
        for deb in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            deb.unlink()
        for lst in (rootfs / "var" / "lib" / "apt" / "lists").iterdir():
            if lst.is_file() and lst.name != "lock":
                lst.unlink()
        (rootfs / "etc" / "coop-test-image").write_text("debian\n")
        (rootfs / "workspace").mkdir(exist_ok=True)
        status = (rootfs / "var" / "lib" / "dpkg" / "status").read_text()
        installed = sorted(line.split(":", 1)[1].strip() for line in status.splitlines()
                           if line.startswith("Package:"))

        layout_dir = work / "layout"
        layout = Layout(layout_dir)
        layer = layout.add_layer_from_dir(rootfs, exclude=_exclude_special)
        manifest = layout.add_image([layer], cmd=("bash",))
        layout.tag(DEBIAN_TAG, manifest)
        (layout_dir / STAMP).write_text(json.dumps(
            {"version": DEBIAN_VERSION, "packages": installed, "manifest": manifest.digest},
            indent=1))
        _make_world_readable(layout_dir)
        _publish(layout_dir, cache / DEBIAN_DIR)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("debian image cached at %s", cache / DEBIAN_DIR)
    return cache / DEBIAN_DIR


def _apt_download(pool: Path) -> None:
    try:
        _run(["apt-get", "download", *MIRROR_DEBS], cwd=pool)
    except PrepareError:
        logger.info("apt-get download failed; updating the package lists once")
        _run(["apt-get", "update"])
        _run(["apt-get", "download", *MIRROR_DEBS], cwd=pool)


def _release_file(debian: Path, files: list[str]) -> str:
    lines = [
        "Origin: coop-test",
        "Label: coop-test",
        "Suite: bookworm",
        "Codename: bookworm",
        "Date: " + email.utils.formatdate(usegmt=True),
        "Architectures: amd64",
        "Components: main",
        "Description: coop loopback test mirror",
        "SHA256:",
    ]
    dists = debian / "dists" / "bookworm"
    for rel in files:
        data = (dists / rel).read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {rel}")
    return "\n".join(lines) + "\n"


def build_mirror(cache: Path) -> Path:
    """Downloads the mirror's packages into ``cache/mirror`` (debian/, pypi/, npm/)."""
    cache.mkdir(parents=True, exist_ok=True)
    if shutil.which("dpkg-scanpackages") is None:
        _run(["apt-get", "install", "-y", "--no-install-recommends", "dpkg-dev"])
    if shutil.which("npm") is None:
        _run(["apt-get", "install", "-y", "--no-install-recommends", "npm"])
    work = Path(tempfile.mkdtemp(prefix=".mirror-", dir=cache))
    try:
        root = work / "mirror"
        debian = root / "debian"
        pool = debian / "pool"
        pool.mkdir(parents=True)
        _apt_download(pool)
        binary = debian / "dists" / "bookworm" / "main" / "binary-amd64"
        binary.mkdir(parents=True)
        packages = _run(["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"],
                        cwd=debian).stdout
        (binary / "Packages").write_bytes(packages)
        (binary / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
        release = _release_file(debian, ["main/binary-amd64/Packages",
                                         "main/binary-amd64/Packages.gz"])
        (debian / "dists" / "bookworm" / "Release").write_text(release)

        pypi = root / "pypi"
        pypi.mkdir()
        _run(["/usr/bin/python3", "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              "--disable-pip-version-check", "-d", str(pypi), PIP_REQUIREMENT])

        npm = root / "npm"
        npm.mkdir()
        _run(["npm", "pack", NPM_SPEC, "--pack-destination", str(npm)], cwd=work)

        (root / STAMP).write_text(json.dumps({"version": MIRROR_VERSION}))
        _make_world_readable(root)
        _publish(root, cache / MIRROR_DIR)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("mirror files cached at %s", cache / MIRROR_DIR)
    return cache / MIRROR_DIR


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Serialises builders: a test session and the prepare script may run at once."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_built(cache: Path, part: str, *, force: bool = False) -> Path:
    """Builds ``part`` ("debian" or "mirror") unless a current copy is cached."""
    ready, build, name = {
        "debian": (debian_ready, build_debian, DEBIAN_DIR),
        "mirror": (mirror_ready, build_mirror, MIRROR_DIR),
    }[part]
    with cache_lock(cache):
        if force or not ready(cache):
            build(cache)
    return cache / name


def prepare_all(cache: Path, *, force: bool = False) -> None:
    """Builds whatever part of the cache is missing or stale (root only)."""
    if os.geteuid() != 0:
        raise PrepareError("preparing the test cache needs root (debootstrap, apt-get)")
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o755)
    ensure_built(cache, "debian", force=force)
    ensure_built(cache, "mirror", force=force)
