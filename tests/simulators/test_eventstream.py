"""The event-stream encoder, checked against botocore's own decoder."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from hybridroute.simulators.eventstream import (
    corrupt_frame,
    encode_event,
    encode_exception,
    encode_message,
)


def _decode(*chunks: bytes) -> list[tuple[Any, bytes]]:
    buffer = EventStreamBuffer()
    messages: list[tuple[Any, bytes]] = []  # botocore-stubs mistype .headers
    for chunk in chunks:
        buffer.add_data(chunk)
        messages.extend((message.headers, message.payload) for message in buffer)
    return messages


def test_message_round_trips_through_botocore() -> None:
    frame = encode_message({"a": "1", ":long-name": "value ü"}, b"\x00payload\xff")
    [(headers, payload)] = _decode(frame)
    assert headers == {"a": "1", ":long-name": "value ü"}
    assert payload == b"\x00payload\xff"


def test_prelude_lengths_and_empty_message() -> None:
    frame = encode_message({}, b"")
    assert len(frame) == 16
    assert int.from_bytes(frame[:4], "big") == 16
    assert _decode(frame) == [({}, b"")]


def test_event_headers_and_json_payload() -> None:
    frame = encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hé"}})
    [(headers, payload)] = _decode(frame)
    assert headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(payload) == {"contentBlockIndex": 0, "delta": {"text": "hé"}}


def test_exception_frame() -> None:
    [(headers, payload)] = _decode(encode_exception("throttlingException", "slow down"))
    assert headers == {
        ":exception-type": "throttlingException",
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    assert json.loads(payload) == {"message": "slow down"}


def test_frames_split_across_reads_decode_in_order() -> None:
    stream = b"".join(encode_event(f"e{index}", {"i": index}) for index in range(5))
    chunks = [stream[start : start + 7] for start in range(0, len(stream), 7)]
    decoded = _decode(*chunks)
    assert [headers[":event-type"] for headers, _ in decoded] == [f"e{i}" for i in range(5)]


def test_corrupted_frame_fails_botocore_checksum() -> None:
    frame = encode_event("messageStart", {"role": "assistant"})
    with pytest.raises(ChecksumMismatch):
        _decode(corrupt_frame(frame))
    tampered_prelude = frame[:3] + bytes([frame[3] ^ 0x01]) + frame[4:]
    with pytest.raises(ChecksumMismatch):
        _decode(tampered_prelude)


def test_oversized_header_value_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        encode_message({"h": "x" * 70_000}, b"")
