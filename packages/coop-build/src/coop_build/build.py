"""The ``Builder``: plan a Coopfile's steps, reuse cached layers, run the rest, record.

An unchanged Coopfile is answered from the build record alone (no lock, no network, no
heavy imports: ``coop init`` with nothing to do must cost little more than starting
Python), so pull, unpack, namespace and export modules are imported only when needed.
Everything else happens under the store's build lock: each step runs into a scratch dir
and is published only when it succeeded, and the build record and the workspace record
are written last, so a failed, interrupted or killed build leaves the previous build of
every workspace intact.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from coop_build.errors import BuildInterruptedError, RegistryError, StepFailedError, StoreError
from coop_build.inherit import MIRROR_VARS, PROXY_VARS
from coop_build.manifest import config_env, host_platform
from coop_build.paths import CoopPaths
from coop_build.progress import (
    Message,
    ProgressCallback,
    StepFinished,
    StepOutput,
    StepStarted,
    ignore_progress,
)
from coop_build.quickcheck import fingerprint
from coop_build.reference import HOST_IMAGE
from coop_build.rootlayout import DEFAULT_PATH, HOST_BASE_DIRS
from coop_build.steps import BuildPlan, Step, plan_steps
from coop_build.store import IMAGE_ENV_KEY, BuildRecord, Scratch, Store

if TYPE_CHECKING:
    from coop_build.idmap import IdMap
    from coop_build.layers import LoadedCoopfile
    from coop_build.tlstrust import InheritedTrust

logger = logging.getLogger(__name__)

PASSTHROUGH_VARS = (*PROXY_VARS, *MIRROR_VARS)
"""Copied from the invoking environment into build steps: proxies and package mirrors.
The TLS trust variables follow with the files they name (``tlstrust``); none of these
is part of a step's key."""
TAIL_LINES = 20
# dpkg, replacing an installed package's file, first hard-links the old one; the host's
# files are host root's, whom no sandbox may hard-link (fs.protected_hardlinks).
_DPKG_UNPACKING_OVER = re.compile(r"^Unpacking (\S+) \(.*\) over \(")
_DPKG_NO_BACKUP_LINK = "unable to make backup link of"


@dataclass(frozen=True)
class BuildOptions:
    """How to build. ``prebuilt`` (a repository) overrides the Coopfile's ``build.prebuilt``;
    ``push`` is a reference to push the finished build to; ``platform`` overrides
    ``base.platform``. ``no_cache`` re-pulls and re-runs every step (and skips prebuilts).
    """

    no_cache: bool = False
    prebuilt: str | None = None
    push: str | None = None
    progress: ProgressCallback = ignore_progress
    platform: str | None = None


@dataclass(frozen=True)
class BuildResult:
    build_key: str
    record: BuildRecord
    steps_run: int
    steps_total: int
    from_prebuilt: bool
    pushed: str | None


def step_environment(environ: Mapping[str, str], image_env: Iterable[str] = ()) -> dict[str, str]:
    """The environment of a build step.

    Defaults, then the image's own ``Env`` (its PATH wins), then what steps always need,
    then the proxy and package-mirror variables of the invoking environment.
    """
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
    for item in image_env:
        name, sep, value = item.partition("=")
        if sep and name:
            env[name] = value
    env.update(HOME="/root", TERM="dumb", DEBIAN_FRONTEND="noninteractive")
    for name in PASSTHROUGH_VARS:
        passed = environ.get(name)
        if passed is not None:
            env[name] = passed
    return env


class _StepLog:
    """Step output to the build log, the progress callback and a tail for errors; on
    ``image = "host"``, also what dpkg said it could not replace (``host_reason``)."""

    def __init__(self, fh: IO[str], index: int, progress: ProgressCallback, *,
                 host: bool = False) -> None:
        self._fh = fh
        self._index = index
        self._progress = progress
        self._host = host
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._unpacking: list[str] = []  # packages dpkg unpacked over an installed one
        self._replacing: list[str] = []  # ... and could not, the host's files being its

    def __call__(self, line: str) -> None:
        line = line.rstrip("\r\n")
        self._fh.write(line + "\n")
        self.tail.append(line)
        self._progress(StepOutput(self._index, line))
        if self._host:
            if match := _DPKG_UNPACKING_OVER.match(line):
                self._unpacking.append(match[1].partition(":")[0])
            elif _DPKG_NO_BACKUP_LINK in line:
                name = self._unpacking[-1] if self._unpacking else "a package"
                if name not in self._replacing:
                    self._replacing.append(name)

    def host_reason(self) -> str | None:
        """The one line that says why a host-image step failed, when dpkg said it."""
        if not self._replacing:
            return None
        return (f"dpkg cannot replace the host's own packages ({', '.join(self._replacing)}): "
                'a step on image = "host" may add packages the host lacks, not upgrade or '
                "reinstall the host's")


class Builder:
    """Builds Coopfiles into the store of one ``COOP_HOME``."""

    def __init__(self, paths: CoopPaths, *, environ: Mapping[str, str] | None = None) -> None:
        self.paths = paths
        self.store = Store(paths)
        self._environ: dict[str, str] = dict(os.environ if environ is None else environ)
        self._idmap: IdMap | None = None

    @property
    def idmap(self) -> IdMap:
        """The id map build steps run with (chosen once per Builder)."""
        if self._idmap is None:
            from coop_build.idmap import choose_idmap

            self._idmap = choose_idmap(environ=self._environ)
        return self._idmap

    def plan(self, loaded: LoadedCoopfile, *, platform: str | None = None) -> BuildPlan:
        """The steps and keys of a build of ``loaded``; no network, nothing written."""
        coopfile = loaded.coopfile
        chosen = platform or coopfile.base.platform or host_platform()
        system = ""
        if coopfile.base.image == HOST_IMAGE:
            from coop_build.hostlayer import system_identity

            system = system_identity()
        return plan_steps(coopfile, platform=chosen, single_idmap=not self.idmap.full,
                          host_system=system)

    def existing_build(self, plan: BuildPlan) -> BuildRecord | None:
        """The complete stored build of ``plan``, if there is one."""
        record = self.store.get_build(plan.build_key)
        if record is None or not self.store.build_complete(record):
            return None
        return record

    def build(
        self, loaded: LoadedCoopfile, workspace: Path, options: BuildOptions | None = None
    ) -> BuildResult:
        """Build ``loaded`` for ``workspace`` (or reuse a build), then record the workspace.

        Raises StepFailedError when a step exits non-zero and BuildInterruptedError on
        Ctrl-C; either way nothing half-built is published and the workspace keeps its
        previous build.
        """
        options = options or BuildOptions()
        progress = options.progress
        plan = self.plan(loaded, platform=options.platform)
        total = len(plan.steps)

        if not options.no_cache:
            record = self.existing_build(plan)
            if record is not None:
                logger.info("build %s is up to date", plan.build_key)
                self._record_workspace(workspace, plan, loaded, options)
                pushed = self._push(record, options.push, progress) if options.push else None
                return BuildResult(plan.build_key, record, 0, total, False, pushed)

        def waiting() -> None:
            progress(Message("waiting for another coop build to finish"))

        try:
            with self.store.lock(on_wait=waiting):
                record = None if options.no_cache else self.existing_build(plan)
                steps_run, from_prebuilt = 0, False
                if record is None:
                    record, steps_run, from_prebuilt = self._build_locked(loaded, plan, options)
                self._record_workspace(workspace, plan, loaded, options)
                pushed = self._push(record, options.push, progress) if options.push else None
        except KeyboardInterrupt:
            raise BuildInterruptedError(
                "build interrupted; the previous build is unchanged"
            ) from None
        return BuildResult(plan.build_key, record, steps_run, total, from_prebuilt, pushed)

    def fingerprint(self, loaded: LoadedCoopfile, *, platform: str | None = None) -> str:
        """What this workspace's record is compared with by ``quickcheck.current_build``."""
        return fingerprint(loaded.inputs, platform=platform, idmap_full=self.idmap.full)

    def _record_workspace(
        self, workspace: Path, plan: BuildPlan, loaded: LoadedCoopfile, options: BuildOptions
    ) -> None:
        self.store.record_workspace(
            workspace,
            plan.build_key,
            loaded.path,
            fingerprint=self.fingerprint(loaded, platform=options.platform),
            static_warnings=loaded.static_warnings,
            env_refs=loaded.env_refs,
        )

    # -- under the lock ---------------------------------------------------------------------

    def _push(self, record: BuildRecord, ref: str, progress: ProgressCallback) -> str:
        from coop_build.export import push_build

        # Under the lock: export may use scratch dirs, which another build would clean.
        with self.store.lock():
            return push_build(self.paths, self.store, record, ref, progress=progress)

    def _build_locked(
        self, loaded: LoadedCoopfile, plan: BuildPlan, options: BuildOptions
    ) -> tuple[BuildRecord, int, bool]:
        progress = options.progress
        repository = options.prebuilt or loaded.coopfile.build.prebuilt
        if repository and not plan.host and not options.no_cache:
            from coop_build.export import fetch_prebuilt

            try:
                fetched = fetch_prebuilt(
                    self.paths, self.store, repository, plan, progress=progress
                )
            except RegistryError as exc:
                # A prebuilt is an optimisation: an unreachable registry must not stop a build.
                logger.warning("prebuilt from %s unavailable: %s", repository, exc)
                progress(Message(f"prebuilt image unavailable ({exc}); building locally"))
                fetched = None
            if fetched is not None:
                return fetched, 0, True
            logger.info("no prebuilt %s in %s: building locally", plan.build_key, repository)

        from coop_build.tlstrust import inherit_trust

        trust = inherit_trust(self._environ, coop_home=self.paths.home)
        explicit_platform = options.platform or loaded.coopfile.base.platform
        total = len(plan.steps)
        log_path = self.paths.build_logs / f"{plan.build_key}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        layer_ids: list[str] = []
        image_env: list[str] = []
        steps_run = 0
        with log_path.open("w", encoding="utf-8") as log:
            for index, step in enumerate(plan.steps, 1):
                progress(StepStarted(index, total, step.description))
                started = time.monotonic()
                layer_id = None if options.no_cache else self.store.find_layer(step.key)
                cached = layer_id is not None
                if layer_id is None:
                    log.write(f"==> [{index}/{total}] {step.description}\n")
                    log.flush()
                    layer_id = self._run_step(
                        plan,
                        step,
                        index=index,
                        lowers=tuple(self.store.layer_path(i) / "fs" for i in layer_ids),
                        image_env=image_env,
                        log=log,
                        log_path=log_path,
                        progress=progress,
                        refresh=options.no_cache,
                        platform=explicit_platform,
                        trust=trust,
                    )
                    steps_run += 1
                else:
                    log.write(f"==> [{index}/{total}] {step.description} (cached)\n")
                if step.kind == "base":
                    image_env = self.store.base_image_env(layer_id)
                layer_ids.append(layer_id)
                progress(
                    StepFinished(index, total, step.description, time.monotonic() - started, cached)
                )
        record = self.store.register_build(plan, layer_ids, env=image_env)
        logger.info("built %s: %d of %d steps run", plan.build_key, steps_run, total)
        return record, steps_run, False

    def _run_step(
        self,
        plan: BuildPlan,
        step: Step,
        *,
        index: int,
        lowers: tuple[Path, ...],
        image_env: list[str],
        log: IO[str],
        log_path: Path,
        progress: ProgressCallback,
        refresh: bool,
        platform: str | None,
        trust: InheritedTrust,
    ) -> str:
        """Run one step into a scratch dir and publish it; the scratch goes on any failure."""
        scratch = self.store.new_scratch()
        try:
            extra: dict[str, Any] = {}
            if step.kind == "base":
                extra[IMAGE_ENV_KEY] = self._make_base(plan, scratch, progress, refresh, platform)
            else:
                self._run_command(
                    plan=plan,
                    step=step,
                    scratch=scratch,
                    index=index,
                    lowers=lowers,
                    image_env=image_env,
                    log=log,
                    log_path=log_path,
                    progress=progress,
                    trust=trust,
                )
            return self.store.publish_layer(
                scratch,
                step_key=step.key,
                description=step.description,
                definition=step.definition,
                extra=extra,
            )
        except BaseException:
            self.store.discard(scratch)
            raise

    def _make_base(
        self,
        plan: BuildPlan,
        scratch: Scratch,
        progress: ProgressCallback,
        refresh: bool,
        platform: str | None,
    ) -> list[str]:
        """The base layer: an unpacked image, or for ``image = "host"`` the mount points
        and the skeleton of the host's directories (``hostlayer``)."""
        from coop_build.namespace import hand_over_tree

        if plan.host:
            from coop_build.hostlayer import host_layout, make_skeleton

            scratch.fs.mkdir()
            for rel, mode in HOST_BASE_DIRS:
                (scratch.fs / rel).mkdir()
                (scratch.fs / rel).chmod(mode)
            made = make_skeleton(str(scratch.fs), host_layout(), self.idmap.owner)
            logger.info("host image skeleton: %d entries", made)
            hand_over_tree(scratch.fs, self.idmap)
            return []
        from coop_build.pull import pull_image
        from coop_build.reference import parse_reference
        from coop_build.unpack import unpack_image

        pulled = pull_image(
            parse_reference(plan.image),
            paths=self.paths,
            platform=platform,
            progress=progress,
            refresh=refresh,
            environ=self._environ,
        )
        unpack_image(self.paths.cache_oci, pulled.umoci_tag, scratch.fs)
        # umoci unpacks as us; root's steps and sessions run as coop's id range instead.
        hand_over_tree(scratch.fs, self.idmap)
        return config_env(pulled.config)

    def _run_command(
        self,
        *,
        plan: BuildPlan,
        step: Step,
        scratch: Scratch,
        index: int,
        lowers: tuple[Path, ...],
        image_env: list[str],
        log: IO[str],
        log_path: Path,
        progress: ProgressCallback,
        trust: InheritedTrust,
    ) -> None:
        from coop_build.namespace import RootfsSpec, run_in_rootfs

        command = step.command
        if command is None:
            raise StoreError(f"step {step.description!r} has no command")
        scratch.fs.mkdir()
        env = step_environment(self._environ, image_env)
        env.update(trust.env)
        binds = list(trust.binds)
        if trust.apt_config is not None:
            from coop_build.tlstrust import APT_CONFIG_PATH

            # Outside fs/: the file is bound into the step, never part of its layer.
            apt_conf = scratch.path / "apt-tls.conf"
            apt_conf.write_text(trust.apt_config)
            apt_conf.chmod(0o644)
            binds.append((str(apt_conf), APT_CONFIG_PATH))
            env["APT_CONFIG"] = APT_CONFIG_PATH
        spec = RootfsSpec(lowers=lowers, upper=scratch.fs, work=scratch.work,
                          host_dirs=plan.host, binds=tuple(binds))
        output = _StepLog(log, index, progress, host=plan.host)
        code = run_in_rootfs(spec, command, env=env, idmap=self.idmap, output=output)
        log.flush()
        if code != 0:
            log.write(f"==> step failed with exit code {code}\n")
            log.flush()
            reason = output.host_reason()
            if reason is not None:
                raise StepFailedError(
                    f"step {index}/{len(plan.steps)} failed: {reason}: {step.description}",
                    step=step.description, exit_code=code, log_tail=list(output.tail),
                    log_path=log_path, index=index, total=len(plan.steps), reason=reason)
            raise StepFailedError(
                f"step {index}/{len(plan.steps)} failed with exit code {code}: {step.description}",
                step=step.description,
                exit_code=code,
                log_tail=list(output.tail),
                log_path=log_path,
                index=index,
                total=len(plan.steps),
            )
