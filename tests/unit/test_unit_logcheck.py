"""A run's log checked against the engine's own copy of the output and repaired from
it (logs.LogCheck): for Podman, whose follow stream drops and repeats data. The
engine's copy is given here as records; against real Podman:
tests/integration/test_big_logs.py and test_live_logs.py on the [podman] engine."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from runnerd.logs import MARKER, STDERR, STDOUT, CheckResult, LogStore

RUN = "0b7c9a52-0000-4000-8000-0000000000c1"
SECOND = 1_796_230_214_000_000_000  # Podman's times are whole seconds

Records = list[tuple[int, int, bytes]]


@pytest.fixture
def logs(tmp_path: Path) -> LogStore:
    store = LogStore(tmp_path / "logs", max_log_bytes=10**6)
    store.prepare()
    return store


def copy_of(n: int, seed: int = 1) -> Records:
    """The engine's copy of an interleaved run: n records of both streams."""
    rng = random.Random(seed)
    return [
        (STDOUT if rng.random() < 0.5 else STDERR, SECOND + i // 100 * 10**9, b"line %d\n" % i)
        for i in range(n)
    ]


def live(records: Records, logs: LogStore, notes: dict[int, str] | None = None) -> None:
    """The log as the live stream wrote it: `records`, with runnerd's notes
    written before the record of each index in `notes`."""
    w = logs.writer(RUN)
    try:
        for i, (stream, ts, data) in enumerate(records):
            if notes and i in notes:
                w.note(notes[i])
            w.write(stream, ts, data)
    finally:
        w.close()


def check(logs: LogStore, copy: Records, batch: int = 7) -> CheckResult:
    """Check the log against `copy`, fed in batches of `batch` records."""
    check = logs.check(RUN, logs.writer(RUN))
    try:
        for start in range(0, len(copy), batch):
            check.feed(list(copy[start : start + batch]))
        return check.finish()
    finally:
        check.writer.close()


def output(logs: LogStore) -> list[tuple[int, bytes]]:
    """The log's output records (stream, bytes), runnerd's notes left out."""
    return [(r.stream, bytes(r.data)) for r in logs.page(RUN, limit=10**6) if r.stream != MARKER]


def notes(logs: LogStore) -> list[bytes]:
    return [bytes(r.data) for r in logs.page(RUN, limit=10**6) if r.stream == MARKER]


def as_output(records: Records) -> list[tuple[int, bytes]]:
    return [(stream, data) for stream, _, data in records]


def test_a_log_that_matches_the_engines_copy_is_left_byte_for_byte_as_it_was(
    logs: LogStore,
) -> None:
    copy = copy_of(500)
    live(copy, logs)
    before = logs.path(RUN).read_bytes()
    result = check(logs, copy)
    assert not result.repaired, result
    assert result.matched == sum(len(d) for _, _, d in copy)
    assert logs.path(RUN).read_bytes() == before


def test_times_that_differ_from_the_engines_copy_are_no_difference(logs: LogStore) -> None:
    copy = copy_of(50)
    live([(s, ts + 123_456, d) for s, ts, d in copy], logs)
    assert not check(logs, copy).repaired


def test_records_the_live_stream_dropped_are_restored_in_their_place(logs: LogStore) -> None:
    copy = copy_of(1000)
    dropped = [r for i, r in enumerate(copy) if i % 97 != 40]  # 10 records lost, as on Podman
    live(dropped, logs)
    result = check(logs, copy)
    assert result.repaired
    assert output(logs) == as_output(copy)
    first_loss = sum(len(d) for _, _, d in copy[:40])
    assert result.matched == first_loss, result


def test_records_the_live_stream_repeated_are_removed(logs: LogStore) -> None:
    copy = copy_of(300)
    repeated = copy[:120] + copy[100:]  # 20 records sent twice
    live(repeated, logs)
    assert check(logs, copy).repaired
    assert output(logs) == as_output(copy)


def test_output_the_live_stream_missed_at_the_end_is_added(logs: LogStore) -> None:
    copy = copy_of(400)
    live(copy[:150], logs)  # the follow stream ended early, as Podman's does at exit
    result = check(logs, copy)
    assert (result.removed, result.added > 0) == (0, True), result
    assert output(logs) == as_output(copy)


def test_a_log_without_any_live_output_is_written_whole_from_the_copy(logs: LogStore) -> None:
    copy = copy_of(60)
    logs.writer(RUN).close()  # a run over before it was followed live: an empty log
    assert check(logs, copy).repaired
    assert output(logs) == as_output(copy)


def test_output_in_the_log_past_the_end_of_the_engines_copy_is_cut_off(logs: LogStore) -> None:
    copy = copy_of(80)
    live(copy + copy[-5:], logs)
    result = check(logs, copy)
    assert (result.added, result.removed) == (0, sum(len(d) for _, _, d in copy[-5:]))
    assert output(logs) == as_output(copy)


def test_a_stream_mix_up_is_a_difference(logs: LogStore) -> None:
    copy = [(STDOUT, SECOND, b"same bytes\n"), (STDERR, SECOND, b"same bytes\n")]
    live([(STDERR, SECOND, b"same bytes\n"), (STDOUT, SECOND, b"same bytes\n")], logs)
    assert check(logs, copy).repaired
    assert output(logs) == as_output(copy)


def test_notes_before_the_first_difference_are_kept_and_later_ones_dropped(
    logs: LogStore,
) -> None:
    copy = copy_of(100)
    live(copy[:50] + copy[51:], logs, notes={10: "before", 70: "after"})
    check(logs, copy)
    assert output(logs) == as_output(copy)
    assert notes(logs) == [b"[runnerd] before\n"]


def test_a_repaired_log_reads_back_whole_and_by_tail_and_page_through_its_index(
    tmp_path: Path,
) -> None:
    # A small index interval: the cut falls between index entries, which must go.
    logs = LogStore(tmp_path / "logs", max_log_bytes=10**7, index_interval=512)
    logs.prepare()
    copy = copy_of(5000, seed=3)
    live(copy[:3000] + copy[3100:4000], logs)
    assert check(logs, copy, batch=64).repaired
    text = b"".join(d for _, _, d in copy)
    assert b"".join(logs.text(RUN)) == text
    assert b"".join(logs.text(RUN, tail=10)) == b"".join(d for _, _, d in copy[-10:])
    last = logs.page(RUN, limit=5, before=logs.path(RUN).stat().st_size)
    assert [bytes(r.data) for r in last] == [d for _, _, d in copy[-5:]]
    # A writer reopened later (a restart) appends after the repaired log, not inside it.
    w = logs.writer(RUN)
    w.write(STDOUT, SECOND + 10**12, b"more\n")
    w.close()
    assert b"".join(logs.text(RUN)) == text + b"more\n"


def test_the_log_limit_cuts_the_repaired_log_where_it_cut_the_live_one(
    tmp_path: Path,
) -> None:
    logs = LogStore(tmp_path / "logs", max_log_bytes=2000)
    logs.prepare()
    copy = copy_of(600)
    live(copy, logs)  # cut at 2000 bytes, with the limit note
    limit_note = notes(logs)
    assert len(limit_note) == 1 and limit_note[0].startswith(b"[runnerd] log limit")
    before = logs.path(RUN).read_bytes()
    assert not check(logs, copy).repaired  # the rest of the copy is past the limit
    assert logs.path(RUN).read_bytes() == before
    # A difference before the limit: repaired, and cut at the limit again, once.
    logs.delete([RUN])
    live(copy[:30] + copy[31:], logs)
    assert check(logs, copy).repaired
    assert notes(logs) == limit_note
    kept = output(logs)
    assert kept == as_output(copy)[: len(kept)]
    assert sum(len(d) for _, d in kept) <= 2000


def test_random_losses_and_repeats_always_end_as_the_engines_copy(tmp_path: Path) -> None:
    rng = random.Random(7)
    for trial in range(30):
        logs = LogStore(tmp_path / f"logs{trial}", index_interval=rng.choice([256, 4096, 65536]))
        logs.prepare()
        copy = copy_of(rng.randrange(0, 400), seed=trial)
        seen: Records = []
        i = 0
        while i < len(copy):  # the live stream: skips ahead, goes back, or reads on
            roll = rng.random()
            if roll < 0.05:
                i += rng.randrange(1, 20)
            elif roll < 0.08:
                i = max(0, i - rng.randrange(1, 20))
            else:
                seen.append(copy[i])
                i += 1
        live(seen, logs)
        check(logs, copy, batch=rng.randrange(1, 50))
        assert output(logs) == as_output(copy), trial


def test_a_cut_is_counted_so_a_follower_past_it_goes_on_from_where_the_log_was_cut(
    logs: LogStore,
) -> None:
    copy = copy_of(200)
    live(copy[:100] + copy[101:], logs)
    assert logs.cuts(RUN) == (0, 0)
    follower_at = logs.path(RUN).stat().st_size  # a follower that read it all
    check(logs, copy)
    count, at = logs.cuts(RUN)
    assert count == 1 and 0 < at < follower_at
    records, _ = logs.read(RUN, min(follower_at, at), max_bytes=10**6)
    assert [bytes(r.data) for r in records] == [d for _, _, d in copy[100:]]
    logs.delete([RUN])
    assert logs.cuts(RUN) == (0, 0)
