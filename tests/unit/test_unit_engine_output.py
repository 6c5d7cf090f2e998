"""Splitting Docker's multiplexed log stream into messages, however it is cut."""

from __future__ import annotations

import calendar
import struct
import time

from runnerd.engine import DOCKER_PIECE_BYTES, _FrameSplitter, _LineEnds


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


def mend(batches: list[list[tuple[int, bytes]]]) -> bytes:
    """What _LineEnds gives for batches of (stream, message), stdout joined."""
    ends = _LineEnds()
    out = b""
    for batch in batches:
        records = [(s, i, memoryview(d)) for i, (s, d) in enumerate(batch)]
        ends.feed(records)
        out += b"".join(bytes(d) for s, _, d in records if s == 1)
    return out


PIECE = DOCKER_PIECE_BYTES


def test_a_long_lines_last_piece_gets_back_the_newline_dockers_logs_api_dropped() -> None:
    # 40,000 "a", newline, "next": the local driver's messages as the API gives them.
    messages = [(1, b"a" * PIECE), (1, b"a" * PIECE), (1, b"a" * 7232), (1, b"next\n")]
    assert mend([messages]) == b"a" * 40_000 + b"\nnext\n"
    # The same, whatever batches the stream came in.
    assert mend([[m] for m in messages]) == b"a" * 40_000 + b"\nnext\n"


def test_a_line_of_exactly_one_piece_ends_with_the_empty_message_after_it() -> None:
    assert mend([[(1, b"b" * PIECE), (1, b""), (1, b"x\n")]]) == b"b" * PIECE + b"\nx\n"


def test_short_lines_a_full_sized_line_with_its_newline_and_json_files_ends_are_kept() -> None:
    short = [(1, b"one\n"), (1, b"last without newline")]
    assert mend([short]) == b"one\nlast without newline"
    full = b"c" * (PIECE - 1) + b"\n"  # one message of 16 KiB that is a whole line
    assert mend([[(1, full), (1, b"d\n")]]) == full + b"d\n"
    # json-file's reader keeps a long line's newline on its last piece: not doubled.
    assert mend([[(1, b"e" * PIECE), (1, b"e\n")]]) == b"e" * PIECE + b"e\n"


def test_each_stream_ends_its_own_long_line() -> None:
    ends = _LineEnds()
    records = [
        (1, 1, memoryview(b"o" * PIECE)),
        (2, 2, memoryview(b"err line\n")),  # stderr between stdout's pieces
        (1, 3, memoryview(b"o")),
    ]
    ends.feed(records)
    assert [bytes(d) for _, _, d in records] == [b"o" * PIECE, b"err line\n", b"o\n"]
