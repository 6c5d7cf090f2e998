"""Splitting Docker's multiplexed log stream into messages, however it is cut."""

from __future__ import annotations

import calendar
import struct
import time

from runnerd.engine import _FrameSplitter


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def stamp_ns(stamp: str) -> int:
    second, frac = stamp.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(second, "%Y-%m-%dT%H:%M:%S")) * 1_000_000_000 + int(
        frac.ljust(9, "0")
    )


MESSAGES = [
    (1, "2026-11-28T19:44:30.123456789Z", b"first line\n"),
    (2, "2026-11-28T19:44:30.000000001Z", b"on stderr\n"),
    (1, "2026-11-28T19:44:31.5Z", b"a short stamp \xff\xfe\n"),  # not the engine's usual
    (1, "2026-11-28T19:44:32.000000000Z", b""),
    (1, "2026-11-28T19:44:32.999999999Z", b"x" * 70_000),
]
STREAM = b"".join(frame(s, f"{t} ".encode() + d) for s, t, d in MESSAGES)


def split(pieces: list[bytes]) -> tuple[list[tuple[int, int, bytes]], list[str], int]:
    splitter = _FrameSplitter()
    records, errors = [], []
    for piece in pieces:
        for batch in splitter.feed(piece):
            records += [(s, ts, bytes(d)) for s, ts, d in batch.records]
            if batch.error is not None:
                errors.append(batch.error)
    return records, errors, splitter.pending


def test_messages_come_out_whole_with_stream_and_time_however_the_stream_is_cut() -> None:
    want = [(s, stamp_ns(t), d) for s, t, d in MESSAGES]
    assert split([STREAM]) == (want, [], 0)
    for cut in list(range(0, 80)) + list(range(len(STREAM) - 80, len(STREAM))) + [5000]:
        assert split([STREAM[:cut], STREAM[cut:]]) == (want, [], 0), cut
    assert split([STREAM[i : i + 7] for i in range(0, len(STREAM), 7)]) == (want, [], 0)


def test_a_stream_cut_inside_a_message_keeps_it_pending() -> None:
    records, _, pending = split([STREAM[:-10]])
    assert len(records) == len(MESSAGES) - 1 and pending > 0


def test_a_message_without_a_stamp_keeps_every_byte() -> None:
    records, _, _ = split([frame(1, b"no stamp here\n")])
    assert [(s, d) for s, _, d in records] == [(1, b"no stamp here\n")]


def test_the_engines_own_error_is_reported_in_place_not_as_output() -> None:
    error = frame(3, b"Error grabbing logs: log decode failed\n")
    before, after = frame(1, b"2026-11-28T19:44:30.1Z a\n"), frame(2, b"2026-11-28T19:44:30.2Z b\n")
    splitter = _FrameSplitter()
    batches = splitter.feed(before + error + after)
    assert [(len(b.records), b.error) for b in batches] == [
        (1, None),
        (0, "Error grabbing logs: log decode failed"),
        (1, None),
    ]
