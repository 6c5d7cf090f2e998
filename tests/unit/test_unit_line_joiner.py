"""Podman's pieces of lines joined into whole lines per stream (engine._LineJoiner),
so that a line of one stream is never torn by the other in the log. Against real
Podman: tests/integration/test_execution.py's interleaved-streams test on [podman]."""

from __future__ import annotations

from runnerd.engine import LINE_JOIN_BYTES, _LineJoiner


def feed(joiner: _LineJoiner, *records: tuple[int, int, bytes]) -> list[tuple[int, int, bytes]]:
    out = joiner.feed([(s, t, memoryview(d)) for s, t, d in records])
    return [(s, t, bytes(d)) for s, t, d in out]


def test_pieces_of_a_line_become_one_record_where_its_last_piece_came() -> None:
    j = _LineJoiner()
    assert feed(j, (1, 10, b"out 1 fi"), (2, 11, b"err 1\n"), (1, 12, b"rst half\n")) == [
        (2, 11, b"err 1\n"),
        (1, 10, b"out 1 first half\n"),
    ]
    assert not j.pending


def test_both_streams_are_joined_independently_across_batches() -> None:
    j = _LineJoiner()
    assert feed(j, (1, 1, b"a"), (2, 2, b"b")) == []
    assert feed(j, (2, 3, b"B\n")) == [(2, 2, b"bB\n")]
    assert feed(j, (1, 4, b"A\n")) == [(1, 1, b"aA\n")]


def test_whole_lines_pass_through_as_they_are() -> None:
    j = _LineJoiner()
    records = [(1, 1, b"one\n"), (2, 1, b"two\n"), (1, 2, b"three\n")]
    assert feed(j, *records) == records


def test_a_line_longer_than_the_join_size_is_given_in_pieces_of_about_that_size() -> None:
    j = _LineJoiner()
    piece = b"x" * 8192  # what conmon reads from a pipe at a time
    out = feed(j, *[(1, i, piece) for i in range(5)], (1, 9, b"end\n"))
    assert b"".join(d for _, _, d in out) == piece * 5 + b"end\n"
    assert all(len(d) <= LINE_JOIN_BYTES for _, _, d in out[:-1]), [len(d) for _, _, d in out]
    assert len(out) == 3


def test_flush_gives_the_lines_still_without_newline_in_the_order_they_began() -> None:
    j = _LineJoiner()
    assert feed(j, (2, 5, b"err tail"), (1, 7, b"out "), (1, 8, b"tail")) == []
    assert j.pending
    assert [(s, t, bytes(d)) for s, t, d in j.flush()] == [(2, 5, b"err tail"), (1, 7, b"out tail")]
    assert not j.pending and j.flush() == []
