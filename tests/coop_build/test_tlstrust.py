"""The TLS trust settings build steps inherit: which variables, which paths, npmrc parsing,
refusals (pure), then ``inherit_trust`` on real files (no process started)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from coop_build.errors import InheritedPathError
from coop_build.tlstrust import (
    SESSION_TRUST_DIR,
    SESSIONS,
    TLS_FILE_VARS,
    TLS_VARS,
    TrustRequest,
    apt_config,
    inherit_trust,
    npm_userconfig,
    npmrc_cafile,
    plan_trust,
    refusal,
    trust_requests,
    trust_variables,
)

HOME = "/home/me"


# -- which variables ----------------------------------------------------------------------


def test_every_trust_variable_is_requested_in_order() -> None:
    environ = {name: f"/trust/{name}.pem" for name in TLS_FILE_VARS}
    environ |= {"SSL_CERT_DIR": "/a:/b::", "npm_config_cafile": "/npm.pem",
                "SECRET": "/s.pem", "PIP_INDEX_URL": "https://x/"}
    got = trust_requests(environ)
    assert [r.variable for r in got] == list(TLS_VARS)
    assert set(TLS_VARS) == {"SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS",
                             "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT",
                             "GIT_SSL_CAINFO", "npm_config_cafile"}
    by_name = {r.variable: r for r in got}
    assert by_name["SSL_CERT_DIR"] == TrustRequest("SSL_CERT_DIR", "SSL_CERT_DIR", ("/a", "/b"),
                                                   directory=True)
    assert by_name["PIP_CERT"] == TrustRequest("PIP_CERT", "PIP_CERT", ("/trust/PIP_CERT.pem",),
                                               directory=False)


def test_empty_or_unset_variables_request_nothing() -> None:
    assert trust_requests({"SSL_CERT_FILE": "", "SSL_CERT_DIR": ":", "HOME": HOME}) == []


def test_npm_cafile_from_the_environment_wins_over_the_npmrc() -> None:
    npmrc = ("~/.npmrc", "cafile=/from-npmrc.pem\n")
    env_upper = trust_requests({"NPM_CONFIG_CAFILE": "~/env.pem", "HOME": HOME}, npmrc=npmrc)
    assert env_upper == [TrustRequest("npm_config_cafile", "npm_config_cafile",
                                      (f"{HOME}/env.pem",), directory=False)]
    from_rc = trust_requests({"HOME": HOME}, npmrc=npmrc)
    assert from_rc == [TrustRequest("npm_config_cafile", "~/.npmrc: cafile",
                                    ("/from-npmrc.pem",), directory=False)]
    assert trust_requests({"HOME": HOME}, npmrc=("~/.npmrc", "registry=https://r/\n")) == []


def test_npm_userconfig_path() -> None:
    assert npm_userconfig({"HOME": HOME}) == f"{HOME}/.npmrc"
    assert npm_userconfig({"HOME": HOME, "NPM_CONFIG_USERCONFIG": "~/rc/npmrc"}) == (
        f"{HOME}/rc/npmrc")
    assert npm_userconfig({"npm_config_userconfig": "/etc/my-npmrc"}) == "/etc/my-npmrc"
    assert npm_userconfig({}) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cafile=/etc/corp.pem\n", "/etc/corp.pem"),
        ("  cafile = /a b/c.pem  \n", "/a b/c.pem"),
        ('cafile="/quoted;#.pem"\n', "/quoted;#.pem"),
        ("cafile='/single.pem'\n", "/single.pem"),
        ("cafile=/x.pem ; a comment\n", "/x.pem"),
        ("cafile=/x.pem # a comment\n", "/x.pem"),
        ("cafile=/x\\;y\\#z.pem\n", "/x;y#z.pem"),
        ("; cafile=/no.pem\n# cafile=/no.pem\n", None),
        ("cafile=/first.pem\ncafile=/last.pem\n", "/last.pem"),
        ("[scope]\ncafile=/no.pem\n", None),
        ("cafile=/top.pem\n[section]\ncafile=/no.pem\n", "/top.pem"),
        ("cafile=${CORP}/ca.pem\n", "/corp/ca.pem"),
        ("cafile=${UNSET}/ca.pem\n", "${UNSET}/ca.pem"),
        ("cafile=${UNSET?}/ca.pem\n", "/ca.pem"),
        ("cafile=\\${CORP}/ca.pem\n", "${CORP}/ca.pem"),
        ("cafile=~/certs/ca.pem\n", f"{HOME}/certs/ca.pem"),
        ("cafile=\n", None),
        ("cafilex=/no.pem\nca=-----BEGIN\nstrict-ssl=true\n", None),
        ("\ufeffregistry=https://r/\r\ncafile=/crlf.pem\r\n", "/crlf.pem"),
    ],
)
def test_npmrc_cafile(text: str, expected: str | None) -> None:
    assert npmrc_cafile(text, {"HOME": HOME, "CORP": "/corp"}) == expected


# -- which paths ----------------------------------------------------------------------------


class FakeHost:
    """What ``plan_trust`` may ask of the host: real path and kind of existing paths."""

    def __init__(self, files: Mapping[str, str], dirs: Mapping[str, str] | None = None) -> None:
        self.files, self.dirs = dict(files), dict(dirs or {})  # named -> real

    def __call__(self, path: str) -> tuple[str, bool] | None:
        if path in self.dirs:
            return self.dirs[path], True
        if path in self.files:
            return self.files[path], False
        return None


def test_plan_binds_each_real_path_once_at_a_place_of_coops() -> None:
    host = FakeHost(
        files={"/etc/ssl/cert.pem": "/etc/ssl/certs/ca-certificates.crt",
               "/home/me/corp.pem": "/home/me/corp.pem"},
        dirs={"/etc/ssl/certs": "/etc/ssl/certs", "/opt/certs": "/srv/certs"},
    )
    environ = {"SSL_CERT_FILE": "/etc/ssl/cert.pem", "SSL_CERT_DIR": "/opt/certs:/etc/ssl/certs",
               "NODE_EXTRA_CA_CERTS": "/home/me/corp.pem", "PIP_CERT": "/home/me//corp.pem"}
    trust = plan_trust(trust_requests(environ), host)
    # Never at the host's own path: the image's /etc/ssl/certs stays the image's (a step
    # that installs ca-certificates rewrites it). Each real file or directory once.
    assert dict(trust.env) == {
        "SSL_CERT_FILE": "/run/coop-build/trust/1/ca-certificates.crt",
        "NODE_EXTRA_CA_CERTS": "/run/coop-build/trust/2/corp.pem",
        "PIP_CERT": "/run/coop-build/trust/2/corp.pem",
        "SSL_CERT_DIR": "/run/coop-build/trust/3/certs:/run/coop-build/trust/4/certs",
    }
    assert trust.binds == (
        ("/etc/ssl/certs/ca-certificates.crt", "/run/coop-build/trust/1/ca-certificates.crt"),
        ("/home/me/corp.pem", "/run/coop-build/trust/2/corp.pem"),
        ("/srv/certs", "/run/coop-build/trust/3/certs"),
        ("/etc/ssl/certs", "/run/coop-build/trust/4/certs"),
    )
    assert trust.warnings == ()
    assert trust.apt_config == apt_config("/run/coop-build/trust/1/ca-certificates.crt")


def test_missing_paths_are_warned_about_and_left_out() -> None:
    host = FakeHost(files={"/ok.pem": "/ok.pem"}, dirs={"/certs": "/certs"})
    environ = {"SSL_CERT_FILE": "/gone.pem", "PIP_CERT": "/ok.pem",
               "SSL_CERT_DIR": "/certs:/gone-dir", "GIT_SSL_CAINFO": "/certs",
               "CURL_CA_BUNDLE": "/gone-too.pem"}
    trust = plan_trust(trust_requests(environ), host)
    assert dict(trust.env) == {"PIP_CERT": "/run/coop-build/trust/1/ok.pem",
                               "SSL_CERT_DIR": "/run/coop-build/trust/2/certs"}
    assert trust.binds == (("/ok.pem", "/run/coop-build/trust/1/ok.pem"),
                           ("/certs", "/run/coop-build/trust/2/certs"))
    assert trust.warnings == (
        "SSL_CERT_FILE=/gone.pem does not exist: build steps do not get it",
        "CURL_CA_BUNDLE=/gone-too.pem does not exist: build steps do not get it",
        "GIT_SSL_CAINFO=/certs is a directory: build steps do not get it",
        "SSL_CERT_DIR=/gone-dir does not exist: build steps do not get it",
    )
    assert trust.apt_config is None  # apt gets nothing without SSL_CERT_FILE


def test_a_session_gets_the_same_plan_at_its_own_place() -> None:
    """Sessions ([network] inherit) reuse the plan: binds under /run/coop/trust/N/, the
    variables naming them, directories said apart, messages naming sessions."""
    host = FakeHost(files={"/home/me/corp.pem": "/home/me/corp.pem"},
                    dirs={"/opt/certs": "/srv/certs"})
    environ = {"SSL_CERT_FILE": "/home/me/corp.pem", "SSL_CERT_DIR": "/opt/certs:/gone",
               "PIP_CERT": "/home/me/corp.pem"}
    trust = plan_trust(trust_requests(environ), host, inside=SESSION_TRUST_DIR,
                       audience=SESSIONS)
    assert dict(trust.env) == {"SSL_CERT_FILE": "/run/coop/trust/1/corp.pem",
                               "PIP_CERT": "/run/coop/trust/1/corp.pem",
                               "SSL_CERT_DIR": "/run/coop/trust/2/certs"}
    assert trust.binds == (("/home/me/corp.pem", "/run/coop/trust/1/corp.pem"),
                           ("/srv/certs", "/run/coop/trust/2/certs"))
    assert trust.directories == frozenset({"/srv/certs"})
    assert trust.warnings == ("SSL_CERT_DIR=/gone does not exist: sessions do not get it",)
    with pytest.raises(InheritedPathError, match=re.escape(
            "SSL_CERT_FILE=/proc/x: /proc is the kernel's and is never bound into a session")):
        plan_trust(trust_requests({"SSL_CERT_FILE": "/proc/x"}), host, audience=SESSIONS)


def test_trust_variables_are_what_the_plan_reads() -> None:
    """What a client sends for its session's trust: the trust variables and npm's
    cafile and userconfig in any spelling, nothing else (HOME, secrets, proxies)."""
    environ = {name: f"/t/{name}" for name in TLS_FILE_VARS}
    environ |= {"SSL_CERT_DIR": "/d", "NPM_CONFIG_CAFILE": "/n.pem",
                "npm_config_userconfig": "/rc", "HOME": HOME, "TOKEN": "s3cret",
                "https_proxy": "http://u:p@proxy:1", "PIP_CERT": ""}
    sent = trust_variables(environ)
    assert set(sent) == {*TLS_FILE_VARS, "SSL_CERT_DIR", "NPM_CONFIG_CAFILE",
                         "npm_config_userconfig"} - {"PIP_CERT"}
    assert trust_requests(sent) == trust_requests({k: v for k, v in environ.items()
                                                   if k != "HOME"})


def test_nothing_set_means_nothing_inherited() -> None:
    trust = plan_trust(trust_requests({"HOME": HOME}), FakeHost({}))
    assert (dict(trust.env), trust.binds, trust.warnings, trust.apt_config) == ({}, (), (), None)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SSL_CERT_FILE", "corp.pem", "SSL_CERT_FILE=corp.pem is not an absolute path"),
        ("NODE_EXTRA_CA_CERTS", "/dev/fd/63",
         "NODE_EXTRA_CA_CERTS=/dev/fd/63: /dev is the kernel's and is never bound"),
        ("PIP_CERT", "/proc/self/fd/3", "PIP_CERT=/proc/self/fd/3: /proc is the kernel's"),
        ("SSL_CERT_DIR", "/etc/ssl/certs:/sys", "SSL_CERT_DIR=/sys: /sys is the kernel's"),
        ("SSL_CERT_DIR", "/", "SSL_CERT_DIR=/: / as a whole is never bound"),
        ("SSL_CERT_DIR", "/etc/", "SSL_CERT_DIR=/etc/: /etc as a whole is never bound"),
        ("SSL_CERT_DIR", "/etc/ssl/..", "SSL_CERT_DIR=/etc/ssl/..: /etc as a whole"),
        ("GIT_SSL_CAINFO", '/a"b.pem', "holds a quote or control character"),
        ("CURL_CA_BUNDLE", "/a\nb.pem", "holds a quote or control character"),
        ("SSL_CERT_FILE", "/var/coop/layers/x.pem",
         "/var/coop is coop's own directory and is never bound into a build step"),
    ],
)
def test_nonsense_paths_are_refused_in_one_line(name: str, value: str, message: str) -> None:
    host = FakeHost(files={}, dirs={"/etc/ssl/certs": "/etc/ssl/certs"})
    with pytest.raises(InheritedPathError, match=re.escape(message)) as info:
        plan_trust(trust_requests({name: value}), host, coop_home="/var/coop")
    assert "\n" not in str(info.value)


def test_a_path_resolving_into_the_kernels_files_is_refused() -> None:
    host = FakeHost(files={"/home/me/ca.pem": "/proc/1/root/ca.pem"})
    with pytest.raises(InheritedPathError, match=r"^SSL_CERT_FILE=/home/me/ca.pem resolves to "
                                                 r"/proc/1/root/ca.pem: /proc is the kernel's"):
        plan_trust(trust_requests({"SSL_CERT_FILE": "/home/me/ca.pem"}), host)


def test_refusal_spares_what_lies_below_etc() -> None:
    assert refusal("/etc/ssl/certs") is None
    assert refusal("/etc/pki/tls/cert.pem") is None
    assert refusal("/devices/ca.pem") is None
    assert refusal("/var/coop2/ca.pem", "/var/coop") is None
    assert refusal("/boot") is not None


def test_apt_config_trusts_the_file_for_https() -> None:
    text = apt_config("/etc/ssl/corp bundle.pem")
    assert 'Acquire::https::CaInfo "/etc/ssl/corp bundle.pem";\n' in text
    assert all(line.startswith("//") or line.startswith("Acquire::")
               for line in text.splitlines())


# -- inherit_trust on real files ------------------------------------------------------------


def test_inherit_trust_reads_the_users_npmrc_and_the_real_paths(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    (home / "certs").mkdir(parents=True)
    ca = home / "certs" / "corp.pem"
    ca.write_text("corp CA\n")
    (home / "bundle.pem").symlink_to(ca)
    (home / ".npmrc").write_text("registry=https://registry.example/\ncafile=~/certs/corp.pem\n")
    environ = {"HOME": str(home), "SSL_CERT_FILE": str(home / "bundle.pem"),
               "CURL_CA_BUNDLE": str(home / "missing.pem")}
    with caplog.at_level(logging.WARNING, logger="coop_build.tlstrust"):
        trust = inherit_trust(environ, coop_home=tmp_path / "coop")
    assert dict(trust.env) == {"SSL_CERT_FILE": "/run/coop-build/trust/1/corp.pem",
                               "npm_config_cafile": "/run/coop-build/trust/1/corp.pem"}
    assert trust.binds == ((str(ca), "/run/coop-build/trust/1/corp.pem"),)
    assert [r.getMessage() for r in caplog.records] == [
        f"CURL_CA_BUNDLE={home / 'missing.pem'} does not exist: build steps do not get it"]

    # $NPM_CONFIG_USERCONFIG names another file; a missing one is no error.
    other = tmp_path / "npmrc"
    other.write_text(f"cafile = {ca}\n")
    trust = inherit_trust({"HOME": str(home), "NPM_CONFIG_USERCONFIG": str(other)})
    assert dict(trust.env) == {"npm_config_cafile": "/run/coop-build/trust/1/corp.pem"}
    assert trust.binds == ((str(ca), "/run/coop-build/trust/1/corp.pem"),)
    trust = inherit_trust({"HOME": str(home), "NPM_CONFIG_USERCONFIG": str(tmp_path / "none")})
    assert dict(trust.env) == {}

    # The npmrc's cafile names a file that is gone: said where it was set.
    (home / ".npmrc").write_text("cafile=~/certs/gone.pem\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coop_build.tlstrust"):
        trust = inherit_trust({"HOME": str(home)})
    assert dict(trust.env) == {}
    assert [r.getMessage() for r in caplog.records] == [
        f"~/.npmrc: cafile={home}/certs/gone.pem does not exist: build steps do not get it"]


def test_inherit_trust_refuses_a_path_under_coop_home(tmp_path: Path) -> None:
    coop_home = tmp_path / "coop"
    coop_home.mkdir()
    (coop_home / "ca.pem").write_text("x")
    (tmp_path / "link.pem").symlink_to(coop_home / "ca.pem")
    with pytest.raises(InheritedPathError, match="coop's own directory"):
        inherit_trust({"PIP_CERT": str(tmp_path / "link.pem")}, coop_home=coop_home)
