"""Length-prefixed frames of the CLI <-> daemon socket (SPEC 6); pure, no I/O.

A frame is a 4-byte big-endian length and that many payload bytes. In message mode the
payload is one UTF-8 JSON object. In stream mode (after ``attach``/``shell``) the payload
starts with a 1-byte tag: ``0x00`` raw terminal bytes, ``0x01`` a JSON control object; the
length counts the tag byte. Decoders are fed whatever ``recv`` returned, in any chunking,
and hand back complete frames; a declared length over the limit is refused from the header
alone, before any of the payload is buffered.
"""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple

from coop_run.errors import FrameTooLargeError, MalformedFrameError

MAX_FRAME_SIZE = 1 << 20  # 1 MiB of payload
HEADER_SIZE = 4
TAG_DATA = 0x00
TAG_CONTROL = 0x01

_HEADER = struct.Struct(">I")

Message = dict[str, Any]


class Data(NamedTuple):
    """Stream mode: raw terminal bytes."""

    data: bytes


class Control(NamedTuple):
    """Stream mode: a JSON control message (resize, detach, pty_exited, ...)."""

    message: Message


DecodeError = MalformedFrameError | FrameTooLargeError
StreamItem = Data | Control | DecodeError


def _dump(message: Message) -> bytes:
    if not isinstance(message, dict):
        raise TypeError("a frame carries a JSON object")
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _header(size: int, limit: int) -> bytes:
    if size > limit:
        raise FrameTooLargeError.over(size, limit)
    return _HEADER.pack(size)


def encode_message(message: Message, *, max_size: int = MAX_FRAME_SIZE) -> bytes:
    """One message-mode frame holding ``message``."""
    payload = _dump(message)
    return _header(len(payload), max_size) + payload


def encode_data(data: bytes, *, max_size: int = MAX_FRAME_SIZE) -> bytes:
    """One stream-mode frame of raw terminal bytes."""
    return _header(len(data) + 1, max_size) + bytes((TAG_DATA,)) + data


def encode_control(message: Message, *, max_size: int = MAX_FRAME_SIZE) -> bytes:
    """One stream-mode frame holding a JSON control message."""
    payload = _dump(message)
    return _header(len(payload) + 1, max_size) + bytes((TAG_CONTROL,)) + payload


def parse_json_object(payload: bytes) -> Message | MalformedFrameError:
    """``payload`` as a JSON object, or the error saying why it is not one."""
    try:
        value = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return MalformedFrameError("malformed message: payload is not UTF-8")
    except json.JSONDecodeError as exc:
        return MalformedFrameError(f"malformed message: not JSON ({exc.msg})")
    except (ValueError, RecursionError):  # huge numbers, absurd nesting
        return MalformedFrameError("malformed message: not JSON")
    if not isinstance(value, dict):
        return MalformedFrameError(
            f"malformed message: expected a JSON object, got {type(value).__name__}"
        )
    return value


class _PayloadSplitter:
    """Turns a byte stream into payloads; the part both decoders share."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._failed: FrameTooLargeError | None = None

    def split(self, data: bytes) -> list[bytes | FrameTooLargeError]:
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        payloads: list[bytes | FrameTooLargeError] = []
        pos = 0
        buf = self._buffer
        while len(buf) - pos >= HEADER_SIZE:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > self.max_size:
                # Refused on the header alone: nothing of the payload is kept, and the
                # stream is out of step for good.
                self._failed = FrameTooLargeError.over(size, self.max_size)
                self._buffer = bytearray()
                payloads.append(self._failed)
                return payloads
            end = pos + HEADER_SIZE + size
            if len(buf) < end:
                break
            payloads.append(bytes(buf[pos + HEADER_SIZE : end]))
            pos = end
        if pos:
            del buf[:pos]
        return payloads

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)


class FrameDecoder:
    """Message mode: ``feed(bytes)`` returns every complete JSON object so far.

    Errors come back in place, as instances in the list: a frame whose payload is not a
    JSON object gives a ``MalformedFrameError`` and the next frames still decode; a
    declared length over ``max_size`` gives a ``FrameTooLargeError`` as the last item, and
    every later ``feed`` raises it (the stream cannot be resynchronised).
    """

    def __init__(self, max_size: int = MAX_FRAME_SIZE) -> None:
        self._splitter = _PayloadSplitter(max_size)

    def feed(self, data: bytes) -> list[Message | DecodeError]:
        return [p if isinstance(p, FrameTooLargeError) else parse_json_object(p)
                for p in self._splitter.split(data)]

    @property
    def pending(self) -> int:
        return self._splitter.pending


class StreamDecoder:
    """Stream mode: ``feed(bytes)`` returns ``Data``/``Control`` items, errors in place."""

    def __init__(self, max_size: int = MAX_FRAME_SIZE) -> None:
        self._splitter = _PayloadSplitter(max_size)

    def feed(self, data: bytes) -> list[StreamItem]:
        return [p if isinstance(p, FrameTooLargeError) else _stream_item(p)
                for p in self._splitter.split(data)]

    @property
    def pending(self) -> int:
        return self._splitter.pending


def _stream_item(payload: bytes) -> Data | Control | MalformedFrameError:
    if not payload:
        return MalformedFrameError("malformed stream frame: empty (no tag byte)")
    tag = payload[0]
    if tag == TAG_DATA:
        return Data(payload[1:])
    if tag == TAG_CONTROL:
        parsed = parse_json_object(payload[1:])
        return parsed if isinstance(parsed, MalformedFrameError) else Control(parsed)
    return MalformedFrameError(f"malformed stream frame: unknown tag 0x{tag:02x}")
