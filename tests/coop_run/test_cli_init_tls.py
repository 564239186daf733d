"""``coop init`` behind a TLS re-signing proxy on loopback (issue 11, point 4).

The test mirror is reachable only over https, through a proxy that re-signs with a CA the
test made (``resigning_proxy``). That CA reaches coop only the way a company network's
does, through the invoking environment: ``SSL_CERT_FILE`` (apt, through the APT_CONFIG coop
writes), ``PIP_CERT`` and npm's ``cafile`` in ``~/.npmrc``. With them apt, pip and npm
install in the Debian test image and in ``image = "host"`` (apt there as setup steps: the
host's own sources are out of reach, and it adds a jq the host image lacks); without them
each fails, and coop's error shows the step's own TLS error. Nothing leaves loopback: the
proxy serves only coop-test-mirror.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from coop_cli import Result, coop_init, remove_the_store

from support.prepare import APT_MIRROR_STEP

pytestmark = [pytest.mark.registry, pytest.mark.debian, pytest.mark.slow, pytest.mark.asuser,
              pytest.mark.usefixtures("remove_the_store")]
__all__ = ["remove_the_store"]  # a fixture: pytest finds it here

PACKAGES = {"apt": ["jq"], "pip": ["six==1.17.0"], "npm": ["is-number"]}
CHECKS = [
    "jq --version",
    'python3 -c "import six; print(six.__version__)"',
    "test -d /usr/local/lib/node_modules/is-number",
]
# Each package manager's own words for a certificate it cannot verify.
TLS_ERRORS = {
    "apt": "Certificate verification failed: The certificate is NOT trusted. "
           "The certificate issuer is unknown.",
    "pip": "certificate verify failed: unable to get local issuer certificate",
    "npm": "request to https://coop-test-mirror/npm/is-number failed, "
           "reason: unable to verify the first certificate",
}
# The failing installs: [packages] for apt and pip; npm as a setup step, because npm
# retries a failed fetch for over a minute (fetch-retry-mintimeout 10 s, maxtimeout 60 s)
# and its retry settings are no variable a step inherits.
FAILING = {
    "apt": ({"apt": PACKAGES["apt"]}, [], '"apt install jq"'),
    "pip": ({"pip": PACKAGES["pip"]}, [], '"pip install six==1.17.0"'),
    "npm": ({}, ["npm install -g --fetch-retries=0 is-number"], '"npm install -g --fetch'),
}


# image = "host": apt adds the mirror's jq (the host's removed first: dpkg may not replace
# a package of the host's), pip installs into the system Python, npm into its prefix.
HOST_PACKAGES = {"pip": ["six==1.17.0"], "npm": ["is-number"]}
HOST_STEPS = [
    APT_MIRROR_STEP,
    "dpkg -r --force-depends jq libjq1",
    "apt-get install -y --no-install-recommends jq libjq1",
    "dpkg-query -W -f '${Status}' jq | grep -qx 'install ok installed'",
    'python3 -c "import six; assert six.__version__ == \'1.17.0\', six.__version__"',
    'test -d "$(npm root -g)/is-number"',
]
HOST_FAILING = {
    "apt": ({}, [APT_MIRROR_STEP], f'"{APT_MIRROR_STEP[:40]}'),
    "pip": ({"pip": PACKAGES["pip"]}, [], '"pip install six==1.17.0"'),
    "npm": ({}, ["npm install -g --fetch-retries=0 is-number"], '"npm install -g --fetch'),
}


def write_coopfile(workspace: Path, image: str, packages: Mapping[str, list[str]],
                   setup: list[str]) -> None:
    lines = ["[base]", f"image = {json.dumps(image)}", "", "[packages]"]
    lines += [f"{manager} = {json.dumps(names)}" for manager, names in packages.items()]
    lines += ["", "[setup]", f"run = {json.dumps(setup)}", "",
              "[agent]", 'command = "/bin/sh"', ""]
    (workspace / "coop.toml").write_text("\n".join(lines))


def users_trust(home: Path, ca: Path) -> dict[str, str]:
    """The CA where a user behind such a proxy has it: one copy per tool, so each one's
    file must reach the step by its own variable."""
    certs = home / "certs"
    certs.mkdir()
    for name in ("bundle.pem", "pip-ca.pem", "npm-ca.pem"):
        shutil.copyfile(ca, certs / name)
    (home / ".npmrc").write_text("; the proxy re-signs everything\ncafile=~/certs/npm-ca.pem\n")
    return {"SSL_CERT_FILE": str(certs / "bundle.pem"), "PIP_CERT": str(certs / "pip-ca.pem")}


def test_apt_pip_and_npm_install_with_the_users_trust_and_no_rebuild_without_it(
    workspace: Path, coop_env: Any, debian_image: str, resigning_proxy: Any
) -> None:
    write_coopfile(workspace, debian_image, PACKAGES, CHECKS)
    trust = users_trust(coop_env.home, resigning_proxy.ca.ca_cert)
    built = coop_init(coop_env, workspace, {**resigning_proxy.env, **trust})
    assert built.returncode == 0, built
    assert "built: 7 of 7 steps run" in built.stdout, built
    assert "WARNING" not in built.stderr, built

    # Another network (no proxy, no trust): the same Coopfile is the same build.
    (coop_env.home / ".npmrc").unlink()
    again = coop_init(coop_env, workspace, {})
    assert again.returncode == 0, again
    assert "Nothing to do" in again.stdout, again


def each_failed_install(
    tmp_path: Path, coop_env: Any, resigning_proxy: Any, image: str,
    failing: Mapping[str, tuple[dict[str, list[str]], list[str], str]],
) -> Iterator[tuple[str, Result, list[str]]]:
    """Each manager's install on ``image`` without the user's trust: ``coop init`` fails
    in its step with that tool's own TLS error shown, and no traceback. Yields the
    manager, the result and the indented lines below the first."""
    for manager, tls_error in TLS_ERRORS.items():
        workspace = tmp_path / manager
        workspace.mkdir()
        packages, setup, shown = failing[manager]
        write_coopfile(workspace, image, packages, setup)
        failed = coop_init(coop_env, workspace, resigning_proxy.env)
        assert failed.returncode == 1, failed
        first, *tail = failed.stderr.splitlines()
        assert first.startswith(f"error: step [2/2] {shown}"), failed
        assert "failed with exit code" in first, failed
        assert any(tls_error in line for line in tail), failed
        assert "Traceback" not in failed.stderr
        yield manager, failed, tail


def test_without_the_users_trust_each_install_fails_with_its_tls_error(
    tmp_path: Path, coop_env: Any, debian_image: str, resigning_proxy: Any
) -> None:
    for manager, failed, tail in each_failed_install(
            tmp_path, coop_env, resigning_proxy, debian_image, FAILING):
        assert all(line.startswith("    ") for line in tail), (manager, failed)


def test_the_host_image_installs_with_the_users_trust(
    workspace: Path, coop_env: Any, resigning_proxy: Any
) -> None:
    write_coopfile(workspace, "host", HOST_PACKAGES, HOST_STEPS)
    trust = users_trust(coop_env.home, resigning_proxy.ca.ca_cert)
    built = coop_init(coop_env, workspace, {**resigning_proxy.env, **trust})
    assert built.returncode == 0, built
    assert "built: 9 of 9 steps run" in built.stdout, built
    assert "WARNING" not in built.stderr, built


def test_the_host_image_without_the_users_trust_fails_with_each_tls_error(
    tmp_path: Path, coop_env: Any, resigning_proxy: Any
) -> None:
    for _ in each_failed_install(tmp_path, coop_env, resigning_proxy, "host", HOST_FAILING):
        pass  # each_failed_install asserts each failure as it comes
