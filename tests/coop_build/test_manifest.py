"""Manifest parsing, platform choice and OCI conversion, on golden documents."""

from __future__ import annotations

import json

import pytest

from coop_build import manifest as m
from coop_build.errors import RegistryError, UnsupportedImageError

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
D4 = "sha256:" + "4" * 64

# As Docker Hub serves a v2s2 image (abridged to one layer plus a foreign one).
DOCKER_V2S2 = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": m.DOCKER_MANIFEST,
        "config": {"mediaType": m.DOCKER_CONFIG, "size": 1469, "digest": D1},
        "layers": [
            {"mediaType": m.DOCKER_LAYER_GZIP, "size": 3370706, "digest": D2},
            {
                "mediaType": m.DOCKER_FOREIGN_LAYER_GZIP,
                "size": 10,
                "digest": D3,
                "urls": ["https://example.invalid/layer"],
            },
        ],
    },
    indent=3,
).encode()

# An OCI index as buildkit writes it: two platforms plus an attestation manifest.
OCI_INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": m.OCI_INDEX,
        "manifests": [
            {
                "mediaType": m.OCI_MANIFEST,
                "digest": D1,
                "size": 480,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": m.OCI_MANIFEST,
                "digest": D2,
                "size": 480,
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
            {
                "mediaType": m.OCI_MANIFEST,
                "digest": D3,
                "size": 566,
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                "platform": {"architecture": "unknown", "os": "unknown"},
            },
        ],
    }
).encode()

# skopeo/umoci omit mediaType in OCI manifests; zstd layers.
OCI_ZSTD_NO_TYPE = json.dumps(
    {
        "schemaVersion": 2,
        "config": {"mediaType": m.OCI_CONFIG, "digest": D1, "size": 300},
        "layers": [{"mediaType": m.OCI_LAYER_ZSTD, "digest": D2, "size": 1000}],
    }
).encode()


def test_parse_docker_manifest_and_convert_to_oci() -> None:
    parsed = m.parse_manifest(DOCKER_V2S2, m.DOCKER_MANIFEST)
    assert isinstance(parsed, m.ImageManifest)
    assert parsed.media_type == m.DOCKER_MANIFEST
    assert parsed.config == m.Descriptor(m.DOCKER_CONFIG, D1, 1469)
    assert [layer.size for layer in parsed.layers] == [3370706, 10]
    oci = m.to_oci(parsed)
    assert oci.media_type == m.OCI_MANIFEST
    assert oci.config.media_type == m.OCI_CONFIG
    assert [(layer.media_type, layer.digest, layer.size) for layer in oci.layers] == [
        (m.OCI_LAYER_GZIP, D2, 3370706),
        (m.OCI_LAYER_ND_GZIP, D3, 10),
    ]
    assert oci.layers[1].urls == ("https://example.invalid/layer",)
    # Golden serialisation of the converted manifest.
    assert json.loads(oci.to_json()) == {
        "schemaVersion": 2,
        "mediaType": m.OCI_MANIFEST,
        "config": {"mediaType": m.OCI_CONFIG, "digest": D1, "size": 1469},
        "layers": [
            {"mediaType": m.OCI_LAYER_GZIP, "digest": D2, "size": 3370706},
            {
                "mediaType": m.OCI_LAYER_ND_GZIP,
                "digest": D3,
                "size": 10,
                "urls": ["https://example.invalid/layer"],
            },
        ],
    }


def test_manifest_without_media_type_is_detected_by_shape() -> None:
    parsed = m.parse_manifest(OCI_ZSTD_NO_TYPE, "application/octet-stream")
    assert isinstance(parsed, m.ImageManifest)
    assert parsed.media_type == m.OCI_MANIFEST
    assert m.layer_compression(parsed.layers[0].media_type) == "zstd"


def test_content_type_header_used_when_document_has_none() -> None:
    doc = json.loads(OCI_INDEX)
    del doc["mediaType"]
    parsed = m.parse_manifest(json.dumps(doc).encode(), m.DOCKER_MANIFEST_LIST + "; charset=x")
    assert isinstance(parsed, m.ImageIndex)
    assert parsed.media_type == m.DOCKER_MANIFEST_LIST


def test_plain_tar_layer_describes_decompressed_zstd() -> None:
    layer = m.Descriptor(m.OCI_LAYER_ZSTD, D2, 1000, annotations={"a": "b"})
    plain = m.plain_tar_layer(layer, D4, 4096)
    assert plain == m.Descriptor(m.OCI_LAYER_TAR, D4, 4096, annotations={"a": "b"})
    nd = m.plain_tar_layer(m.Descriptor(m.OCI_LAYER_ND_ZSTD, D2, 1), D4, 2)
    assert nd.media_type == m.OCI_LAYER_ND_TAR


def test_index_platforms_and_selection() -> None:
    index = m.parse_manifest(OCI_INDEX)
    assert isinstance(index, m.ImageIndex)
    assert index.platforms() == ["linux/amd64", "linux/arm64/v8"]
    assert m.select_platform(index, "linux/amd64").digest == D1
    assert m.select_platform(index, "linux/arm64").digest == D2
    assert m.select_platform(index, "linux/arm64/v8").digest == D2
    with pytest.raises(UnsupportedImageError) as err:
        m.select_platform(index, "linux/s390x")
    assert str(err.value) == (
        "image has no manifest for platform linux/s390x; available: linux/amd64, linux/arm64/v8"
    )
    with pytest.raises(UnsupportedImageError, match="no manifest for platform linux/arm/v7"):
        m.select_platform(index, "linux/arm/v7")


def test_arm64_entry_without_variant_is_v8() -> None:
    entry = m.Descriptor(m.OCI_MANIFEST, D1, 1, platform=m.Platform("linux", "arm64"))
    index = m.ImageIndex(m.OCI_INDEX, (entry,))
    assert m.select_platform(index, "linux/arm64/v8") is entry
    with pytest.raises(UnsupportedImageError):
        m.select_platform(index, "linux/arm64/v9")


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d", ""])
def test_bad_platform_text(text: str) -> None:
    with pytest.raises(UnsupportedImageError, match="invalid platform"):
        m.parse_platform(text)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("armv7l", "linux/arm/v7"),
        ("i686", "linux/386"),
        ("ppc64le", "linux/ppc64le"),
        ("riscv64", "linux/riscv64"),
    ],
)
def test_host_platform_uses_goarch_names(machine: str, expected: str) -> None:
    assert m.host_platform(machine) == expected


def test_host_platform_of_this_machine_is_selectable() -> None:
    parsed = m.parse_platform(m.host_platform())
    assert str(parsed) == m.host_platform()
    assert parsed.os == "linux"


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (b"{nope", RegistryError, "not valid JSON"),
        (b"[]", RegistryError, "not a JSON object"),
        (b'{"schemaVersion": 1, "fsLayers": []}', UnsupportedImageError, "schema 1"),
        (b'{"schemaVersion": 3, "layers": []}', RegistryError, "schemaVersion is not 2"),
        (
            b'{"schemaVersion": 2, "mediaType": "application/x-foo"}',
            UnsupportedImageError,
            "unsupported manifest media type",
        ),
        (
            json.dumps(
                {"schemaVersion": 2, "config": {}, "layers": [], "mediaType": m.OCI_MANIFEST}
            ).encode(),
            RegistryError,
            "manifest config: size missing",
        ),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": m.OCI_MANIFEST,
                    "config": {"mediaType": m.OCI_CONFIG, "digest": "sha256:../../x", "size": 1},
                    "layers": [],
                }
            ).encode(),
            UnsupportedImageError,
            "malformed digest",
        ),
        (
            json.dumps({"schemaVersion": 2, "mediaType": m.OCI_INDEX, "manifests": {}}).encode(),
            RegistryError,
            "'manifests' is not a list",
        ),
    ],
)
def test_invalid_documents(raw: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as err:
        m.parse_manifest(raw)
    assert "\n" not in str(err.value)


def test_unsupported_layer_type_is_refused_in_conversion() -> None:
    manifest = m.ImageManifest(
        m.OCI_MANIFEST,
        m.Descriptor(m.OCI_CONFIG, D1, 1),
        (m.Descriptor("application/vnd.example.helm.chart", D2, 1),),
    )
    with pytest.raises(UnsupportedImageError, match=r"unsupported layer media type"):
        m.to_oci(manifest)
    with pytest.raises(UnsupportedImageError):
        m.layer_compression("application/json")
