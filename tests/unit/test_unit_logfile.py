"""The run log file format: what LogWriter writes, LogStore reads back, whole or tailed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from runnerd.logs import (
    HEADER,
    MARKER,
    READ_CHUNK,
    RESUME_MARGIN_NS,
    STDERR,
    STDOUT,
    EngineCopy,
    LogStore,
)

RUN = "0b7c9a52-0000-4000-8000-000000000001"


@pytest.fixture
def logs(tmp_path: Path) -> LogStore:
    store = LogStore(tmp_path / "logs")
    store.prepare()
    return store


def write_records(logs: LogStore, run_id: str, records: list[tuple[int, int, bytes]]) -> None:
    w = logs.writer(run_id)
    try:
        for stream, ts, data in records:
            w.write(stream, ts, data)
    finally:
        w.close()


def read_all(logs: LogStore, run_id: str, tail: int | None = None) -> bytes:
    return b"".join(logs.text(run_id, tail=tail))


def reference_tail(text: bytes, n: int) -> bytes:
    """What `tail` must return; only valid for text without a lone '\\r'."""
    if n <= 0:
        return b""
    return b"".join(text.splitlines(keepends=True)[-n:])


def split_randomly(rng: random.Random, text: bytes, max_pieces: int) -> list[bytes]:
    """Cut text into records at random places; some records empty."""
    cuts = sorted(rng.randrange(0, len(text) + 1) for _ in range(rng.randrange(0, max_pieces)))
    pieces, prev = [], 0
    for c in cuts + [len(text)]:
        pieces.append(text[prev:c])
        prev = c
    return pieces


def random_text(rng: random.Random) -> bytes:
    tokens = [b"a", b"bc", b"\n", b"\n", b"\r\n", b"\xff\xfe", "é".encode(), b" ", b"\t"]
    n = rng.choice([0, 1, 2, 5, 20, 80])
    return b"".join(rng.choice(tokens) for _ in range(n))


# -- round trip ------------------------------------------------------------------


def test_text_is_the_exact_concatenation_of_both_streams_including_non_utf8(logs: LogStore) -> None:
    records = [
        (STDOUT, 1_000, b"hello\n"),
        (STDERR, 2_000, b"warn: \xff\xfe not utf-8\n"),
        (STDOUT, 2_000, b""),
        (STDOUT, 3_000, b"partial "),
        (STDERR, -5, b"line\nmore\n"),
        (STDOUT, 2**62, b"last line without newline"),
    ]
    write_records(logs, RUN, records)
    assert read_all(logs, RUN) == b"".join(r[2] for r in records)


def test_records_keep_stream_and_timestamp_in_the_file_header(logs: LogStore) -> None:
    write_records(logs, RUN, [(STDOUT, 123, b"ab"), (STDERR, -1, b"c")])
    raw = logs.path(RUN).read_bytes()
    assert raw == (HEADER.pack(STDOUT, 123, 2) + b"ab" + HEADER.pack(STDERR, -1, 1) + b"c")


def test_writer_appends_to_an_existing_log(logs: LogStore) -> None:
    write_records(logs, RUN, [(STDOUT, 1, b"one\n")])
    write_records(logs, RUN, [(STDOUT, 2, b"two\n")])
    assert read_all(logs, RUN) == b"one\ntwo\n"


def test_text_of_a_missing_file_yields_nothing(logs: LogStore) -> None:
    assert list(logs.text(RUN)) == []
    assert list(logs.text(RUN, tail=10)) == []


def test_text_of_an_empty_file_yields_nothing(logs: LogStore) -> None:
    logs.path(RUN).write_bytes(b"")
    assert read_all(logs, RUN) == b""
    assert read_all(logs, RUN, tail=3) == b""


def test_text_reads_a_log_written_while_the_writer_is_still_open(logs: LogStore) -> None:
    w = logs.writer(RUN)
    try:
        w.write(STDOUT, 1, b"a\n")
        assert read_all(logs, RUN) == b"a\n"
        w.write(STDOUT, 2, b"b\n")
        assert read_all(logs, RUN, tail=1) == b"b\n"
    finally:
        w.close()


# -- tail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pieces", "n", "expected"),
    [
        # a line spanning records
        ([b"ab", b"c\nde", b"f\n"], 1, b"def\n"),
        ([b"ab", b"c\nde", b"f\n"], 2, b"abc\ndef\n"),
        ([b"ab", b"c", b"\n", b"d", b"ef"], 1, b"def"),
        # several lines in one record
        ([b"1\n2\n3\n4\n"], 2, b"3\n4\n"),
        ([b"1\n2\n3\n4"], 2, b"3\n4"),
        ([b"1\n2\n", b"3\n4\n"], 3, b"2\n3\n4\n"),
        # a newline ending exactly at a record boundary
        ([b"1\n", b"2\n", b"3\n"], 1, b"3\n"),
        ([b"1\n", b"2\n", b"3\n"], 2, b"2\n3\n"),
        ([b"1\n", b"", b"2\n", b""], 1, b"2\n"),
        # N larger than the number of lines
        ([b"1\n2\n"], 5, b"1\n2\n"),
        ([b"1\n2"], 2, b"1\n2"),
        ([b"only"], 1, b"only"),
        # empty lines count as lines
        ([b"\n\n\n"], 2, b"\n\n"),
        ([b"a\n\nb\n"], 2, b"\nb\n"),
        # N = 0
        ([b"1\n2\n"], 0, b""),
        ([b"1\n2"], 0, b""),
    ],
)
def test_tail_returns_the_last_lines_whatever_the_record_split(
    logs: LogStore, pieces: list[bytes], n: int, expected: bytes
) -> None:
    write_records(logs, RUN, [(STDOUT, i, p) for i, p in enumerate(pieces)])
    assert reference_tail(b"".join(pieces), n) == expected  # the case itself is right
    assert read_all(logs, RUN, tail=n) == expected


def test_tail_matches_the_reference_over_random_texts_and_record_splits(tmp_path: Path) -> None:
    rng = random.Random(8420)
    logs = LogStore(tmp_path)
    for case in range(400):
        text = random_text(rng)
        pieces = split_randomly(rng, text, max_pieces=12)
        run_id = f"case-{case}"
        write_records(
            logs, run_id, [(rng.choice((STDOUT, STDERR)), i, p) for i, p in enumerate(pieces)]
        )
        n_lines = len(text.splitlines())
        assert read_all(logs, run_id) == text, (case, pieces)
        for n in {0, 1, 2, 3, max(0, n_lines - 1), n_lines, n_lines + 1, rng.randrange(0, 30)}:
            got = read_all(logs, run_id, tail=n)
            assert got == reference_tail(text, n), (case, pieces, n)


def test_tail_of_many_lines_spanning_a_large_file_is_correct(logs: LogStore) -> None:
    lines = [f"line {i:06d}\n".encode() for i in range(50_000)]
    text = b"".join(lines)
    rng = random.Random(1)
    pieces = split_randomly(rng, text, max_pieces=3000)
    write_records(logs, RUN, [(STDOUT, i, p) for i, p in enumerate(pieces)])
    assert read_all(logs, RUN, tail=3) == b"".join(lines[-3:])
    assert read_all(logs, RUN, tail=20_000) == b"".join(lines[-20_000:])
    assert read_all(logs, RUN, tail=10**6) == text


# -- torn records ----------------------------------------------------------------


def test_a_torn_record_at_the_end_is_ignored_by_readers(logs: LogStore) -> None:
    write_records(logs, RUN, [(STDOUT, 1, b"kept 1\n"), (STDERR, 2, b"kept 2\n")])
    with open(logs.path(RUN), "ab") as f:  # a crash cut this write short
        f.write(HEADER.pack(STDOUT, 3, 100) + b"only ten b")
    assert read_all(logs, RUN) == b"kept 1\nkept 2\n"
    assert read_all(logs, RUN, tail=1) == b"kept 2\n"
    assert read_all(logs, RUN, tail=5) == b"kept 1\nkept 2\n"


def test_a_torn_header_at_the_end_is_ignored_by_readers(logs: LogStore) -> None:
    write_records(logs, RUN, [(STDOUT, 1, b"a\nb")])
    with open(logs.path(RUN), "ab") as f:
        f.write(HEADER.pack(STDOUT, 2, 5)[:7])
    assert read_all(logs, RUN) == b"a\nb"
    assert read_all(logs, RUN, tail=1) == b"b"


def test_a_writer_reopening_a_log_cuts_off_a_torn_record_and_appends_after_it(
    logs: LogStore,
) -> None:
    write_records(logs, RUN, [(STDOUT, 10, b"before crash\n")])
    with open(logs.path(RUN), "ab") as f:
        f.write(HEADER.pack(STDOUT, 11, 100) + b"torn")
    write_records(logs, RUN, [(STDOUT, 12, b"after restart\n")])
    assert read_all(logs, RUN) == b"before crash\nafter restart\n"
    assert logs.path(RUN).stat().st_size == 2 * HEADER.size + len(b"before crash\nafter restart\n")


def test_a_writer_reopening_a_log_cuts_off_a_torn_header(logs: LogStore) -> None:
    write_records(logs, RUN, [(STDOUT, 10, b"a\n")])
    with open(logs.path(RUN), "ab") as f:
        f.write(HEADER.pack(STDOUT, 11, 3)[:5])
    write_records(logs, RUN, [(STDERR, 12, b"b\n")])
    assert read_all(logs, RUN) == b"a\nb\n"
    assert read_all(logs, RUN, tail=1) == b"b\n"


def test_a_reopened_writer_knows_which_resumed_chunks_it_already_has(logs: LogStore) -> None:
    s = 1_000_000_000
    base = 100 * s
    write_records(
        logs,
        RUN,
        [
            (STDOUT, base, b"old"),
            (STDOUT, base + 5 * s, b"a"),
            (STDERR, base + 4 * s, b"late-stamped err"),
            (STDOUT, base + 7 * s, b"b"),
            (STDERR, base + 7 * s, b"c"),
        ],
    )
    w = logs.writer(RUN)
    try:
        # resumes a margin before the newest record: out-of-order stamps are covered
        assert w.since_ns == base + 7 * s - RESUME_MARGIN_NS
        # the engine resends from since_ns: what is on disk is recognised by (time,
        # stream), each exactly once; anything else is new, whatever its time
        assert w.seen(base + 5 * s, STDOUT) is True
        assert w.seen(base + 7 * s, STDOUT) is True
        assert w.seen(base + 7 * s, STDERR) is True
        assert w.seen(base + 7 * s, STDERR) is False
        assert w.seen(base + 6 * s, STDOUT) is False  # never written: new
        assert w.seen(base + 8 * s, STDOUT) is False
    finally:
        w.close()


def test_a_fresh_writer_treats_every_chunk_as_new_even_out_of_time_order(logs: LogStore) -> None:
    w = logs.writer(RUN)
    try:
        assert w.since_ns == 0
        w.write(STDOUT, 10, b"later stamp first\n")
        assert w.seen(9, STDERR) is False  # an earlier stamp arriving after is kept
        w.write(STDERR, 9, b"earlier stamp second\n")
    finally:
        w.close()
    assert read_all(logs, RUN) == b"later stamp first\nearlier stamp second\n"


def test_output_past_the_limit_is_replaced_by_one_marker_and_then_dropped(tmp_path: Path) -> None:
    logs = LogStore(tmp_path, max_log_bytes=10)
    write_records(
        logs,
        RUN,
        [
            (STDOUT, 1, b"12345"),
            (STDOUT, 2, b"678"),
            (STDOUT, 3, b"TOO MUCH"),
            (STDOUT, 4, b"NOT KEPT"),
        ],
    )
    text = read_all(logs, RUN)
    assert text.startswith(b"12345678[runnerd] log limit of 10 bytes reached")
    assert b"NOT KEPT" not in text and b"TOO MUCH" not in text
    assert text.count(b"[runnerd]") == 1
    # a writer reopened after a restart keeps dropping
    write_records(logs, RUN, [(STDOUT, 5, b"x")])
    assert read_all(logs, RUN) == text
    with open(logs.path(RUN), "rb") as f:
        f.seek(2 * HEADER.size + 8)
        assert HEADER.unpack(f.read(HEADER.size))[0] == MARKER


# -- bounded reads ---------------------------------------------------------------


def test_a_large_log_is_read_in_bounded_chunks(logs: LogStore) -> None:
    rng = random.Random(3)
    records, total, max_record = [], 0, 0
    while total < 3 * 1024 * 1024:
        data = rng.randbytes(rng.randrange(0, 20_000))
        records.append((STDOUT, total, data))
        total += len(data)
        max_record = max(max_record, len(data))
    write_records(logs, RUN, records)
    expected = b"".join(r[2] for r in records)
    for tail in (None, 10**6):
        chunks = list(logs.text(RUN, tail=tail))
        assert b"".join(chunks) == expected
        assert len(chunks) > 1
        assert max(len(c) for c in chunks) <= READ_CHUNK + max_record


def test_a_single_record_larger_than_a_chunk_is_yielded_whole(logs: LogStore) -> None:
    big = b"x" * (3 * READ_CHUNK)
    write_records(logs, RUN, [(STDOUT, 1, b"a\n"), (STDOUT, 2, big), (STDOUT, 3, b"\nz")])
    chunks = list(logs.text(RUN))
    assert b"".join(chunks) == b"a\n" + big + b"\nz"
    assert all(len(c) <= READ_CHUNK + len(big) for c in chunks)


# -- paths -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "", "..", "/etc/passwd"])
def test_path_refuses_anything_but_a_plain_run_id(logs: LogStore, bad: str) -> None:
    with pytest.raises(ValueError):
        logs.path(bad)


def test_path_of_a_run_id_is_inside_the_logs_dir(logs: LogStore) -> None:
    assert logs.path(RUN) == logs.dir / f"{RUN}.log"


def test_delete_removes_the_files_and_ignores_missing_ones(logs: LogStore) -> None:
    write_records(logs, "r1", [(STDOUT, 1, b"x")])
    write_records(logs, "r2", [(STDOUT, 1, b"y")])
    write_records(logs, "keep", [(STDOUT, 1, b"z")])
    logs.delete(["r1", "never-existed", "r2"])
    assert not logs.path("r1").exists()
    assert not logs.path("r2").exists()
    assert logs.path("keep").exists()
    assert list(logs.text("r1")) == []


# -- batches, resume points and the engine's copy ---------------------------------


def test_the_resume_point_of_an_open_writer_is_the_one_a_reopened_writer_finds(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    logs = LogStore(tmp_path)
    s = 1_000_000_000
    w = logs.writer(RUN)
    try:
        ts = 100 * s
        for _ in range(300):
            batch = []
            for _ in range(rng.randrange(0, 20)):
                ts += rng.randrange(0, s // 4)
                # stderr stamps may lag behind stdout's a little
                batch.append((rng.choice((STDOUT, STDERR)), ts - rng.randrange(0, s), b"x\n"))
            w.append(batch)
            if rng.random() < 0.1:
                w.prepare_resume()
                fresh = logs.writer(RUN)
                try:
                    assert (w.since_ns, w._on_disk) == (fresh.since_ns, fresh._on_disk)
                    assert (w.output_bytes, w.engine_bytes) == (
                        fresh.output_bytes,
                        fresh.engine_bytes,
                    )
                finally:
                    fresh.close()
    finally:
        w.close()


def test_a_log_is_cut_before_the_engines_copy_of_many_short_lines_could_overflow(
    tmp_path: Path,
) -> None:
    logs = LogStore(
        tmp_path,
        max_log_bytes=1000,
        engine_copy=EngineCopy(max_bytes=400, per_line=30, per_piece=100),
    )
    w = logs.writer(RUN)
    try:
        w.append([(STDOUT, i, b"%d\n" % i) for i in range(20)])  # 10 fit: 10 * (2 + 30)
        w.append([(STDOUT, 99, b"never kept\n")])
    finally:
        w.close()
    text = read_all(logs, RUN)
    kept, marker = text[: text.index(b"[runnerd]")], text[text.index(b"[runnerd]") :]
    assert kept == b"".join(b"%d\n" % i for i in range(12))  # 10 * 32 + 2 * 33 <= 400
    assert marker.startswith(b"[runnerd] log limit of the engine reached after 26 bytes")
    assert b"never kept" not in text
    # a writer reopened after a restart knows the log was cut
    reopened = logs.writer(RUN)
    try:
        assert reopened.truncated and reopened.engine_bytes == 10 * 32 + 2 * 33
    finally:
        reopened.close()


def test_a_piece_of_a_line_counts_more_in_the_engines_copy(tmp_path: Path) -> None:
    logs = LogStore(tmp_path, engine_copy=EngineCopy(max_bytes=10**6, per_line=30, per_piece=100))
    write_records(
        logs,
        RUN,
        [(STDOUT, 1, b"line\n"), (STDOUT, 2, b"no newline"), (MARKER, 3, b"[runnerd] a note\n")],
    )
    w = logs.writer(RUN)
    try:
        assert w.engine_bytes == (5 + 30) + (10 + 100) and not w.truncated
    finally:
        w.close()
