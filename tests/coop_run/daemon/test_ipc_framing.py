"""The frame decoders are pure: fed any chunking, they give the same frames."""

from __future__ import annotations

import itertools
import json
import random
import struct

import pytest

from coop_run.ipc.framing import (
    MAX_FRAME_SIZE,
    Control,
    Data,
    FrameDecoder,
    FrameTooLargeError,
    MalformedFrameError,
    StreamDecoder,
    encode_control,
    encode_data,
    encode_message,
)

MESSAGES = [
    {"version": 1},
    {"cmd": "ls"},
    {"cmd": "create", "workspace": "/home/u/ünïcødé", "detach": True},
    {},
    {"nested": {"list": [1, 2.5, None, "x" * 300]}},
]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def decode_all(chunks: list[bytes]) -> list[object]:
    decoder = FrameDecoder()
    out: list[object] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    assert decoder.pending == 0
    return out


def test_golden_bytes() -> None:
    assert encode_message({"cmd": "ls"}) == b'\x00\x00\x00\x0c{"cmd":"ls"}'
    assert encode_data(b"hi") == b"\x00\x00\x00\x03\x00hi"
    assert encode_control({"type": "detach"}) == b'\x00\x00\x00\x12\x01{"type":"detach"}'


def test_round_trip_unicode_is_utf8() -> None:
    frame = encode_message({"w": "é"})
    assert frame[4:] == '{"w":"é"}'.encode()
    assert decode_all([frame]) == [{"w": "é"}]


def test_every_single_cut_point() -> None:
    stream = b"".join(encode_message(m) for m in MESSAGES)
    for cut in range(len(stream) + 1):
        assert decode_all(chunked(stream, [cut])) == MESSAGES, cut


def test_every_byte_separately() -> None:
    stream = b"".join(encode_message(m) for m in MESSAGES)
    assert decode_all([stream[i:i + 1] for i in range(len(stream))]) == MESSAGES


def test_every_pair_of_cut_points_on_a_short_stream() -> None:
    stream = encode_message({"a": 1}) + encode_message({"bb": [2]})
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1):
            assert decode_all(chunked(stream, [first, second])) == [{"a": 1}, {"bb": [2]}]


def test_random_chunkings() -> None:
    rng = random.Random(4)
    messages = [{"i": i, "pad": "x" * rng.randrange(0, 5000)} for i in range(40)]
    stream = b"".join(encode_message(m) for m in messages)
    for _ in range(50):
        cuts = [rng.randrange(len(stream) + 1) for _ in range(rng.randrange(1, 200))]
        assert decode_all(chunked(stream, cuts)) == messages


def test_partial_frame_is_kept_until_complete() -> None:
    decoder = FrameDecoder()
    frame = encode_message({"cmd": "ls"})
    assert decoder.feed(frame[:3]) == []
    assert decoder.feed(frame[3:-1]) == []
    assert decoder.pending == len(frame) - 1
    assert decoder.feed(frame[-1:]) == [{"cmd": "ls"}]


def test_exactly_the_limit_is_accepted() -> None:
    payload = json.dumps({"x": "y" * (MAX_FRAME_SIZE - 9)}).encode()
    assert len(payload) == MAX_FRAME_SIZE
    out = FrameDecoder().feed(struct.pack(">I", len(payload)) + payload)
    assert out == [{"x": "y" * (MAX_FRAME_SIZE - 9)}]


def test_oversize_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder()
    before = encode_message({"ok": 1})
    # Header only, no payload at all: refused at once, nothing buffered.
    out = decoder.feed(before + struct.pack(">I", MAX_FRAME_SIZE + 1))
    assert out[0] == {"ok": 1}
    assert isinstance(out[1], FrameTooLargeError)
    assert out[1].code == "MESSAGE_TOO_LARGE"
    assert out[1].size == MAX_FRAME_SIZE + 1
    assert decoder.pending == 0
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"anything")


def test_oversize_header_split_across_feeds() -> None:
    decoder = FrameDecoder()
    header = struct.pack(">I", 0xFFFFFFFF)
    assert decoder.feed(header[:2]) == []
    out = decoder.feed(header[2:] + b"x" * 100)
    assert len(out) == 1 and isinstance(out[0], FrameTooLargeError)
    assert decoder.pending == 0


def test_encoding_oversize_raises() -> None:
    with pytest.raises(FrameTooLargeError):
        encode_message({"x": "y" * MAX_FRAME_SIZE})
    with pytest.raises(FrameTooLargeError):
        encode_data(b"x" * MAX_FRAME_SIZE)  # the tag byte pushes it over


def test_custom_limit() -> None:
    out = FrameDecoder(max_size=8).feed(encode_message({"long": "value"}))
    assert isinstance(out[0], FrameTooLargeError)


@pytest.mark.parametrize(("payload", "words"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'"text"', "expected a JSON object, got str"),
    (b"42", "expected a JSON object, got int"),
    (b"null", "got NoneType"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"", "not JSON"),
    (b"[" * 100_000, "not JSON"),
    (b'{"a": 1', "not JSON"),
])
def test_garbage_payload_is_flagged_and_decoding_continues(payload: bytes, words: str) -> None:
    stream = struct.pack(">I", len(payload)) + payload + encode_message({"after": True})
    for cut in (0, 3, 4, len(stream) // 2, len(stream)):
        out = decode_all(chunked(stream, [cut]))
        assert len(out) == 2
        assert isinstance(out[0], MalformedFrameError)
        assert out[0].code == "MALFORMED_MESSAGE"
        assert words in out[0].message
        assert "\n" not in out[0].message
        assert out[1] == {"after": True}


def test_encode_refuses_non_objects() -> None:
    with pytest.raises(TypeError):
        encode_message([1, 2])  # type: ignore[arg-type]


STREAM = [Data(b"hello\r\n"), Control({"type": "resize", "cols": 80, "rows": 24}), Data(b""),
          Data(bytes(range(256))), Control({"event": "detached"})]


def encode_stream(items: list[Data | Control]) -> bytes:
    return b"".join(encode_data(i.data) if isinstance(i, Data) else encode_control(i.message)
                    for i in items)


def test_stream_mode_every_cut_point() -> None:
    stream = encode_stream(STREAM)
    for cut in range(len(stream) + 1):
        decoder = StreamDecoder()
        out = [*decoder.feed(stream[:cut]), *decoder.feed(stream[cut:])]
        assert out == STREAM, cut


def test_stream_mode_random_chunkings() -> None:
    rng = random.Random(7)
    stream = encode_stream(STREAM * 20)
    for _ in range(30):
        decoder = StreamDecoder()
        out = []
        for chunk in chunked(stream, [rng.randrange(len(stream)) for _ in range(50)]):
            out.extend(decoder.feed(chunk))
        assert out == STREAM * 20


@pytest.mark.parametrize(("payload", "words"), [
    (b"", "empty"),
    (b"\x02abc", "unknown tag 0x02"),
    (b"\x01not json", "not JSON"),
    (b"\x01[1]", "expected a JSON object"),
])
def test_stream_mode_garbage(payload: bytes, words: str) -> None:
    stream = struct.pack(">I", len(payload)) + payload + encode_data(b"ok")
    out = StreamDecoder().feed(stream)
    assert isinstance(out[0], MalformedFrameError) and words in out[0].message
    assert out[1] == Data(b"ok")


def test_stream_mode_oversize() -> None:
    decoder = StreamDecoder()
    out = decoder.feed(encode_data(b"x") + struct.pack(">I", MAX_FRAME_SIZE + 1))
    assert out[0] == Data(b"x")
    assert isinstance(out[1], FrameTooLargeError)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"")
