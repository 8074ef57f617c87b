"""Encoder for the AWS event-stream binary framing (`application/vnd.amazon.eventstream`).

A message is: prelude (total length u32 BE, headers length u32 BE, CRC32 of those 8 bytes),
headers, payload, then a CRC32 over everything before it. Each header here is a string header:
name length u8, name, value type 7, value length u16 BE, value. `botocore.eventstream` decodes
exactly this, which is what the Bedrock simulator's ConverseStream responses are made of.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

import orjson

__all__ = ["corrupt_frame", "encode_event", "encode_exception", "encode_message"]

_STRING_HEADER = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_MAX_HEADER_NAME = 0xFF
_MAX_HEADER_VALUE = 0xFFFF


def _crc32(data: bytes, start: int = 0) -> int:
    return zlib.crc32(data, start) & 0xFFFFFFFF


def _encode_header(name: str, value: str) -> bytes:
    raw_name = name.encode("utf-8")
    raw_value = value.encode("utf-8")
    if len(raw_name) > _MAX_HEADER_NAME:
        raise ValueError(f"event-stream header name too long ({len(raw_name)} bytes): {name!r}")
    if len(raw_value) > _MAX_HEADER_VALUE:
        raise ValueError(f"event-stream header {name!r} value too long ({len(raw_value)} bytes)")
    return (
        bytes([len(raw_name)])
        + raw_name
        + bytes([_STRING_HEADER])
        + struct.pack(">H", len(raw_value))
        + raw_value
    )


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One complete event-stream message with string headers."""
    header_bytes = b"".join(_encode_header(name, value) for name, value in headers.items())
    total_length = _PRELUDE.size + _CRC.size + len(header_bytes) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total_length, len(header_bytes))
    prelude_crc = _CRC.pack(_crc32(prelude))
    body = prelude + prelude_crc + header_bytes + payload
    return body + _CRC.pack(_crc32(body))


def encode_event(event_type: str, payload: Mapping[str, object]) -> bytes:
    """A JSON `event` message, as Bedrock sends `messageStart`, `contentBlockDelta`, …"""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, orjson.dumps(dict(payload)))


def encode_exception(exception_type: str, message: str) -> bytes:
    """A JSON `exception` message (a modelled error raised in the middle of a stream)."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, orjson.dumps({"message": message}))


def corrupt_frame(frame: bytes) -> bytes:
    """The frame with its last payload byte flipped, so the message CRC no longer matches."""
    if len(frame) <= _PRELUDE.size + 2 * _CRC.size:
        raise ValueError("frame too short to corrupt its payload")
    position = len(frame) - _CRC.size - 1
    return frame[:position] + bytes([frame[position] ^ 0xFF]) + frame[position + 1 :]
