"""A throwaway certificate authority for tests, made with the ``openssl`` command.

What a company's re-signing proxy has: its own CA, and certificates it signs on the fly
for the hosts clients ask for. Here one server certificate, for the loopback mirror's
host name. Keys are P-256 (fast to make); everything is valid for two days.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"


@dataclass(frozen=True)
class ProxyCA:
    """The CA's certificate (what clients must trust) and one server certificate + key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_test_ca(directory: Path, host: str) -> ProxyCA:
    """A new CA in ``directory`` and a certificate for ``host`` signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    key_opts = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *key_opts, "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS,
             "-subj", "/O=coop tests/CN=coop test re-signing proxy CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", *key_opts, "-keyout", "server.key", "-out", "server.csr",
             "-subj", f"/CN={host}", cwd=directory)
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=DNS:{host}\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", DAYS, "-extfile", "server.ext", "-out", "server.pem",
             cwd=directory)
    for name in ("ca.pem", "server.pem"):
        (directory / name).chmod(0o644)
    return ProxyCA(ca_cert=directory / "ca.pem", server_cert=directory / "server.pem",
                  server_key=directory / "server.key")
