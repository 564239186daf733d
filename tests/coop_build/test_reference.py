"""Image reference parsing: golden tables of accepted and rejected forms."""

from __future__ import annotations

import pytest

from coop_build.errors import CoopfileError, InvalidReferenceError
from coop_build.reference import (
    HOST_IMAGE,
    Reference,
    is_loopback_registry,
    parse_reference,
    parse_repository,
)

HUB = "registry-1.docker.io"
SHA = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "fedcba9876543210" * 8

# text -> (registry, repository, tag, digest, canonical str)
VALID: list[tuple[str, tuple[str, str, str | None, str | None, str]]] = [
    ("alpine", (HUB, "library/alpine", "latest", None, f"{HUB}/library/alpine:latest")),
    ("alpine:3", (HUB, "library/alpine", "3", None, f"{HUB}/library/alpine:3")),
    ("alpine:3.20.1", (HUB, "library/alpine", "3.20.1", None, f"{HUB}/library/alpine:3.20.1")),
    ("node:22-alpine", (HUB, "library/node", "22-alpine", None, f"{HUB}/library/node:22-alpine")),
    ("user/app", (HUB, "user/app", "latest", None, f"{HUB}/user/app:latest")),
    ("user/app:v1", (HUB, "user/app", "v1", None, f"{HUB}/user/app:v1")),
    ("docker.io/alpine", (HUB, "library/alpine", "latest", None, f"{HUB}/library/alpine:latest")),
    ("docker.io/library/alpine:3", (HUB, "library/alpine", "3", None, f"{HUB}/library/alpine:3")),
    ("index.docker.io/user/app", (HUB, "user/app", "latest", None, f"{HUB}/user/app:latest")),
    ("index.docker.io/busybox", (HUB, "library/busybox", "latest", None, "")),
    (f"{HUB}/library/alpine:3", (HUB, "library/alpine", "3", None, f"{HUB}/library/alpine:3")),
    ("localhost/foo", ("localhost", "foo", "latest", None, "localhost/foo:latest")),
    ("localhost:5000/foo/bar:v1", ("localhost:5000", "foo/bar", "v1", None, "")),
    ("127.0.0.1:5000/coop/base", ("127.0.0.1:5000", "coop/base", "latest", None, "")),
    ("[::1]:5000/x/y:t", ("[::1]:5000", "x/y", "t", None, "[::1]:5000/x/y:t")),
    ("[::1]/x", ("[::1]", "x", "latest", None, "[::1]/x:latest")),
    ("ghcr.io/org/tool:1.2", ("ghcr.io", "org/tool", "1.2", None, "ghcr.io/org/tool:1.2")),
    ("quay.io/a/b/c/d", ("quay.io", "a/b/c/d", "latest", None, "quay.io/a/b/c/d:latest")),
    ("my-reg.example.com:443/x", ("my-reg.example.com:443", "x", "latest", None, "")),
    ("Registry.Example.com/x", ("Registry.Example.com", "x", "latest", None, "")),
    ("reg.io/a__b/c-d/e---f/g.h", ("reg.io", "a__b/c-d/e---f/g.h", "latest", None, "")),
    ("localhost:5000", (HUB, "library/localhost", "5000", None, "")),  # as Docker reads it
    ("localhost", (HUB, "library/localhost", "latest", None, "")),
    ("alpine:_x", (HUB, "library/alpine", "_x", None, "")),
    ("alpine:" + "T" * 128, (HUB, "library/alpine", "T" * 128, None, "")),
    (f"alpine@{SHA}", (HUB, "library/alpine", None, SHA, f"{HUB}/library/alpine@{SHA}")),
    (f"alpine:3@{SHA}", (HUB, "library/alpine", "3", SHA, f"{HUB}/library/alpine:3@{SHA}")),
    (f"127.0.0.1:5000/a@{SHA512}", ("127.0.0.1:5000", "a", None, SHA512, "")),
    (f"[::1]:5000/x:t@{SHA}", ("[::1]:5000", "x", "t", SHA, f"[::1]:5000/x:t@{SHA}")),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[t for t, _ in VALID])
def test_valid_references(
    text: str, expected: tuple[str, str, str | None, str | None, str]
) -> None:
    registry, repository, tag, digest, canonical = expected
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    if canonical:
        assert str(ref) == canonical
    # the canonical form parses back to the same reference
    assert parse_reference(str(ref)) == ref


INVALID: list[tuple[str, str]] = [
    ("", "empty"),
    ("Alpine:3", "repository name must be lowercase"),
    ("user/App", "repository name must be lowercase"),
    ("ghcr.io/Org/x", "repository name must be lowercase"),
    ("alpine:", "tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"),
    (
        "alpine:-x",
        "tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
    ),
    (
        "alpine:.x",
        "tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
    ),
    (
        "alpine:a+b",
        "tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
    ),
    (
        "alpine:" + "t" * 129,
        "tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
    ),
    ("alpine@sha256:abc", "digest must be sha256:<64 lowercase hex digits>"),
    ("alpine@sha256:" + "A" * 64, "digest must be sha256:<64 lowercase hex digits>"),
    ("alpine@sha512:" + "a" * 64, "digest must be sha512:<128 lowercase hex digits>"),
    ("alpine@md5:" + "a" * 32, "digest must be sha256:<64 hex digits> or sha512:<128 hex digits>"),
    ("alpine@" + "a" * 64, "digest must be sha256:<64 hex digits> or sha512:<128 hex digits>"),
    ("alpine@", "digest must be sha256:<64 hex digits> or sha512:<128 hex digits>"),
    (":3", "missing repository name"),
    ("localhost:5000/", "missing repository name"),
    ("a//b", "empty path component in repository name"),
    ("a/", "empty path component in repository name"),
    (
        "-a",
        'invalid repository name component "-a" '
        "(lowercase letters and digits, separated by '.', '_', '__' or '-')",
    ),
    (
        "a..b",
        'invalid repository name component "a..b" '
        "(lowercase letters and digits, separated by '.', '_', '__' or '-')",
    ),
    (
        "a___b",
        'invalid repository name component "a___b" '
        "(lowercase letters and digits, separated by '.', '_', '__' or '-')",
    ),
    (
        "foo:bar:baz",
        'invalid repository name component "foo:bar" '
        "(lowercase letters and digits, separated by '.', '_', '__' or '-')",
    ),
    ("[::1/x", 'invalid registry host "[::1"'),
    ("[zz]:5000/x", 'invalid registry host "[zz]:5000"'),
    ("reg.io:http/x", 'invalid registry host "reg.io:http"'),
    ("-reg.io/x", 'invalid registry host "-reg.io"'),
    ("reg..io/x", 'invalid registry host "reg..io"'),
    ("alpine 3", "must not contain whitespace"),
    ("alpine\n", "must not contain whitespace"),
    ("reg.io/" + "a" * 250, "repository name longer than 255 characters"),
]


@pytest.mark.parametrize(("text", "problem"), INVALID, ids=[t[:40] for t, _ in INVALID])
def test_invalid_references(text: str, problem: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(": " + problem)
    assert message.startswith("invalid image reference ")


def test_message_quotes_the_text_exactly() -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference("Alpine:3")
    assert (
        str(info.value) == 'invalid image reference "Alpine:3": repository name must be lowercase'
    )


def test_control_characters_stay_on_one_line() -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference("a\nb")
    assert str(info.value) == r'invalid image reference "a\nb": must not contain whitespace'


def test_error_family_and_code() -> None:
    with pytest.raises(CoopfileError) as info:
        parse_reference("UPPER")
    assert isinstance(info.value, InvalidReferenceError)
    assert info.value.code == "INVALID_REFERENCE"


def test_target_prefers_digest() -> None:
    assert parse_reference("alpine:3").target == "3"
    assert parse_reference("alpine").target == "latest"
    assert parse_reference(f"alpine:3@{SHA}").target == SHA
    assert parse_reference(f"alpine@{SHA}").target == SHA


def test_with_tag_replaces_tag_and_drops_digest() -> None:
    ref = parse_reference(f"127.0.0.1:5000/coop/env:old@{SHA}")
    new = ref.with_tag("abc123")
    assert new == Reference("127.0.0.1:5000", "coop/env", "abc123", None)
    assert str(new) == "127.0.0.1:5000/coop/env:abc123"
    assert ref.tag == "old"  # frozen: the original is untouched
    with pytest.raises(InvalidReferenceError, match='invalid image tag "bad tag"'):
        ref.with_tag("bad tag")


def test_reference_is_frozen_and_hashable() -> None:
    ref = parse_reference("alpine:3")
    with pytest.raises(AttributeError):
        ref.tag = "4"  # type: ignore[misc]
    assert {ref, parse_reference("docker.io/library/alpine:3")} == {ref}
    assert ref.name == f"{HUB}/library/alpine"


def test_parse_repository() -> None:
    repo = parse_repository("127.0.0.1:5000/ci/prebuilt")
    assert repo == Reference("127.0.0.1:5000", "ci/prebuilt", None, None)
    assert str(repo) == "127.0.0.1:5000/ci/prebuilt"
    assert str(repo.with_tag("k1")) == "127.0.0.1:5000/ci/prebuilt:k1"
    assert parse_repository("user/app").repository == "user/app"
    assert parse_repository("ubuntu").repository == "library/ubuntu"
    for text in ("reg.io/a:tag", f"reg.io/a@{SHA}"):
        with pytest.raises(InvalidReferenceError, match="must name a repository without tag"):
            parse_repository(text)
    with pytest.raises(InvalidReferenceError, match="lowercase"):
        parse_repository("reg.io/A")


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST:5000", True),
        ("127.0.0.1", True),
        ("127.0.0.1:5000", True),
        ("127.8.9.10:443", True),
        ("[::1]", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("128.0.0.1:5000", False),
        ("10.0.0.1:5000", False),
        ("[::2]:5000", False),
        ("registry-1.docker.io", False),
        ("localhost.example.com", False),
        ("127.0.0.1.nip.io:5000", False),
    ],
)
def test_is_loopback_registry(registry: str, loopback: bool) -> None:
    assert is_loopback_registry(registry) is loopback


def test_host_image_constant() -> None:
    assert HOST_IMAGE == "host"
