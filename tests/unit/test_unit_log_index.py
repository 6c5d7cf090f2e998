"""The log index: reads guided by it give exactly what a whole-log scan gives, and
read about what they return (bytes counted at the file, no timing); a missing,
lagging, torn or damaged index is rebuilt or read around; the read pool is bounded."""

from __future__ import annotations

import asyncio
import io
import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runnerd import logs as logs_module
from runnerd.config import ConfigError, from_dict
from runnerd.logs import HEADER, INDEX_INTERVAL, MARKER, STDERR, STDOUT, LogStore

RUN = "0b7c9a52-0000-4000-8000-000000000002"
S = 1_000_000_000


# -- a reference: what the old whole-log scan gives -------------------------------


def parse(raw: bytes) -> list[tuple[int, int, int, bytes]]:
    """(offset, stream, ts, data) of every complete record."""
    out, pos = [], 0
    while pos + HEADER.size <= len(raw):
        stream, ts, n = HEADER.unpack_from(raw, pos)
        if pos + HEADER.size + n > len(raw):
            break
        out.append((pos, stream, ts, raw[pos + HEADER.size : pos + HEADER.size + n]))
        pos += HEADER.size + n
    return out


def ref_tail(records: list[tuple[int, int, int, bytes]], n: int) -> bytes:
    text = b"".join(r[3] for r in records)
    return b"".join(text.splitlines(keepends=True)[-n:]) if n > 0 else b""


def matches(stream: int, wanted: int | None) -> bool:
    return wanted is None or (STDERR if stream == MARKER else stream) == wanted


def ref_before(
    records: list[tuple[int, int, int, bytes]], before: int, limit: int, stream: int | None
) -> list[int]:
    return [r[0] for r in records if r[0] < before and matches(r[1], stream)][-limit:]


def ref_after(
    records: list[tuple[int, int, int, bytes]], after: int, limit: int, stream: int | None
) -> list[int]:
    return [r[0] for r in records if r[0] >= after and matches(r[1], stream)][:limit]


def write(logs: LogStore, run_id: str, batches: list[list[tuple[int, int, bytes]]]) -> None:
    w = logs.writer(run_id)
    try:
        for batch in batches:
            w.append(batch)
    finally:
        w.close()


def random_batches(rng: random.Random, n_records: int) -> list[list[tuple[int, int, bytes]]]:
    tokens = [b"a", b"bc", b"\n", b"\n", b"\r\n", b"\xff", b" "]
    batches, batch, ts = [], [], S
    for _ in range(n_records):
        ts += rng.randrange(0, S // 10)
        data = b"".join(rng.choice(tokens) for _ in range(rng.choice([0, 1, 3, 10, 40])))
        batch.append((rng.choice((STDOUT, STDOUT, STDERR)), ts - rng.randrange(0, S), data))
        if rng.random() < 0.3:
            batches.append(batch)
            batch = []
    return batches + [batch]


# -- exactness -------------------------------------------------------------------


@pytest.mark.parametrize("interval", [1, 16, 100, INDEX_INTERVAL])
def test_guided_reads_give_what_a_whole_log_scan_gives(
    tmp_path: Path, interval: int, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(interval)
    for case in range(25):
        logs = LogStore(tmp_path / f"{interval}-{case}", index_interval=interval)
        logs.prepare()
        write(logs, RUN, random_batches(rng, rng.randrange(0, 120)))
        if rng.random() < 0.3:
            w = logs.writer(RUN)
            w.note("a note\nof two lines")
            w.close()
        records = parse(logs.path(RUN).read_bytes())
        text = b"".join(r[3] for r in records)
        assert b"".join(logs.text(RUN)) == text
        for n in (0, 1, 2, 3, 7, 50, 10**6):
            assert b"".join(logs.text(RUN, tail=n)) == ref_tail(records, n), (case, n)
        offsets = [r[0] for r in records]
        ends = {r[0]: r[0] + HEADER.size + len(r[3]) for r in records}
        size = logs.path(RUN).stat().st_size
        for cursor in set(offsets) | {rng.randrange(0, size + 20) for _ in range(20)}:
            if cursor in ends:
                assert logs.after(RUN, cursor) == ends[cursor]
            else:
                with pytest.raises(ValueError):
                    logs.after(RUN, cursor)
        for stream in (None, STDOUT, STDERR):
            for limit in (1, 3, 1000):
                for cursor in rng.sample(offsets, min(10, len(offsets))) + [0]:
                    got = [
                        r.offset for r in logs.page(RUN, limit=limit, before=cursor, stream=stream)
                    ]
                    assert got == ref_before(records, cursor, limit, stream), (case, cursor)
                    got = [
                        r.offset for r in logs.page(RUN, limit=limit, after=cursor, stream=stream)
                    ]
                    assert got == ref_after(records, cursor, limit, stream), (case, cursor)
    assert "damaged" not in caplog.text  # the index was used, not read around


def test_a_reopened_writer_resumes_exactly_like_the_open_one_with_a_small_interval(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    logs = LogStore(tmp_path, index_interval=40)
    w = logs.writer(RUN)
    try:
        ts = 100 * S
        for _ in range(300):
            batch = []
            for _ in range(rng.randrange(0, 20)):
                ts += rng.randrange(0, S // 4)
                batch.append((rng.choice((STDOUT, STDERR)), ts - rng.randrange(0, S), b"x\n"))
            w.append(batch)
            if rng.random() < 0.1:
                w.prepare_resume()
                fresh = logs.writer(RUN)
                try:
                    assert (w.since_ns, w._on_disk) == (fresh.since_ns, fresh._on_disk)
                    assert (w.output_bytes, w.engine_bytes, w.truncated) == (
                        fresh.output_bytes,
                        fresh.engine_bytes,
                        fresh.truncated,
                    )
                finally:
                    fresh.close()
    finally:
        w.close()


# -- cost: bytes read from the files, counted where they are opened ----------------


class CountingFile(io.FileIO):
    read_bytes = 0

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        data = super().read(size)
        CountingFile.read_bytes += len(data or b"")
        return data  # type: ignore[return-value]

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        n = super().readinto(buffer)
        CountingFile.read_bytes += n or 0
        return n  # type: ignore[return-value]

    def readall(self) -> bytes:
        data = super().readall()
        CountingFile.read_bytes += len(data)
        return data


def counting_open(path: Path, mode: str = "rb", buffering: int = -1) -> Any:
    raw = CountingFile(path, mode.replace("b", ""))
    if buffering == 0:
        return raw
    return (
        io.BufferedRandom(raw)
        if "+" in mode
        else (io.BufferedReader(raw) if "r" in mode else io.BufferedWriter(raw))
    )


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(logs_module, "_open", counting_open)
    yield


def bytes_read(fn: Any) -> int:
    CountingFile.read_bytes = 0
    fn()
    return CountingFile.read_bytes


def short_lines_log(logs: LogStore, run_id: str, n: int) -> None:
    """n records of one short line each, a millisecond apart, in batches as the engine
    sends them: 2000 of them within the resume margin."""
    w = logs.writer(run_id)
    try:
        for start in range(0, n, 1000):
            w.append(
                [
                    (STDOUT if i % 7 else STDERR, S + i * 1_000_000, b"line %07d\n" % i)
                    for i in range(start, min(n, start + 1000))
                ]
            )
    finally:
        w.close()


def test_tail_before_cursor_check_and_resume_read_a_bounded_amount_whatever_the_log_size(
    tmp_path: Path, counted: None
) -> None:
    logs = LogStore(tmp_path)
    sizes = {"small": 100_000, "large": 400_000}
    costs: dict[str, dict[str, int]] = {}
    for name, n in sizes.items():
        run_id = f"{name}-run"
        short_lines_log(logs, run_id, n)
        size = logs.path(run_id).stat().st_size
        tail = b"".join(logs.text(run_id, tail=5))
        assert tail == b"".join(b"line %07d\n" % i for i in range(n - 5, n))
        last_offset = size - (HEADER.size + len(b"line 0000000\n"))
        middle = (n // 2) * (HEADER.size + len(b"line 0000000\n"))
        costs[name] = {
            "tail": bytes_read(lambda: b"".join(logs.text(run_id, tail=5))),
            "before end": bytes_read(lambda: logs.page(run_id, limit=5, before=last_offset)),
            "before middle": bytes_read(lambda: logs.page(run_id, limit=5, before=middle)),
            "before, stderr": bytes_read(
                lambda: logs.page(run_id, limit=5, before=middle, stream=STDERR)
            ),
            "cursor check": bytes_read(lambda: logs.after(run_id, middle)),
            "resume": bytes_read(lambda: logs.writer(run_id).close()),
        }
        assert logs.page(run_id, limit=1, before=middle)[0].data == b"line %07d\n" % (n // 2 - 1)
        assert size > 4 * 1024 * 1024 if name == "large" else size > 1024 * 1024
    # What a whole-log scan would read is the file: 2.3 and 9 MiB here.
    bound = 4 * INDEX_INTERVAL + 64 * 1024
    for name, cost in costs.items():
        for what, n_bytes in cost.items():
            assert n_bytes <= bound, (name, what, n_bytes)
    # and four times the log does not read more (up to a few index entries)
    for what in costs["small"]:
        assert costs["large"][what] <= costs["small"][what] + 4096, (what, costs)


def test_a_log_without_an_index_is_read_whole_once_and_indexed_for_the_next_reads(
    tmp_path: Path, counted: None
) -> None:
    logs = LogStore(tmp_path)
    short_lines_log(logs, RUN, 100_000)
    expected = b"".join(logs.text(RUN, tail=3))
    logs.index_path(RUN).unlink()  # a log from before there were indexes
    size = logs.path(RUN).stat().st_size
    assert bytes_read(lambda: b"".join(logs.text(RUN, tail=3))) >= size
    assert logs.index_path(RUN).exists()
    assert bytes_read(lambda: b"".join(logs.text(RUN, tail=3))) < size // 10
    assert b"".join(logs.text(RUN, tail=3)) == expected


def test_a_writer_reopening_a_log_without_index_builds_it_and_resumes_right(tmp_path: Path) -> None:
    logs = LogStore(tmp_path, index_interval=64)
    write(logs, RUN, [[(STDOUT, S * i, b"%d\n" % i) for i in range(200)]])
    logs.index_path(RUN).unlink()
    w = logs.writer(RUN)
    try:
        assert w.since_ns == 199 * S - logs_module.RESUME_MARGIN_NS
        assert [w.seen(i * S, STDOUT) for i in (199, 198, 197, 196)] == [True, True, True, False]
        w.append([(STDOUT, 200 * S, b"200\n")])
    finally:
        w.close()
    assert b"".join(logs.text(RUN, tail=2)) == b"199\n200\n"
    assert logs.index_path(RUN).stat().st_size > 16


def test_an_index_lagging_behind_its_log_is_extended_by_the_next_read(tmp_path: Path) -> None:
    logs = LogStore(tmp_path, index_interval=32)
    write(logs, RUN, [[(STDOUT, i, b"line %d\n" % i) for i in range(300)]])
    full = logs.index_path(RUN).read_bytes()
    logs.index_path(RUN).write_bytes(full[: len(full) // 3])  # entries lost in a crash
    assert b"".join(logs.text(RUN, tail=2)) == b"line 298\nline 299\n"
    assert logs.index_path(RUN).read_bytes() == full


def test_a_torn_index_entry_is_cut_off_by_the_writer(tmp_path: Path) -> None:
    logs = LogStore(tmp_path, index_interval=32)
    write(logs, RUN, [[(STDOUT, i, b"line %d\n" % i) for i in range(100)]])
    full = logs.index_path(RUN).read_bytes()
    logs.index_path(RUN).write_bytes(full[:-5])  # the last entry's write was cut short
    write(logs, RUN, [[(STDOUT, 1000, b"after\n")]])
    assert logs.index_path(RUN).read_bytes()[: len(full) - 100] == full[: len(full) - 100]
    assert b"".join(logs.text(RUN, tail=2)) == b"line 99\nafter\n"
    records = parse(logs.path(RUN).read_bytes())
    assert [r.offset for r in logs.page(RUN, limit=3, before=records[-1][0])] == [
        r[0] for r in records[-4:-1]
    ]


def test_index_entries_past_a_log_cut_by_a_machine_crash_are_dropped(tmp_path: Path) -> None:
    """The index reached the disk, the end of the log did not."""
    logs = LogStore(tmp_path, index_interval=32)
    write(logs, RUN, [[(STDOUT, i * S, b"line %d\n" % i) for i in range(100)]])
    raw = logs.path(RUN).read_bytes()
    cut = len(raw) // 2 + 3  # mid-record
    logs.path(RUN).write_bytes(raw[:cut])
    kept = parse(raw[:cut])
    text = b"".join(r[3] for r in kept)
    assert b"".join(logs.text(RUN, tail=1)) == text.splitlines(keepends=True)[-1]
    w = logs.writer(RUN)
    try:
        assert w.since_ns == kept[-1][2] - logs_module.RESUME_MARGIN_NS
        w.append([(STDOUT, 500 * S, b"again\n")])
    finally:
        w.close()
    assert b"".join(logs.text(RUN)) == text + b"again\n"
    assert b"".join(logs.text(RUN, tail=2)) == text.splitlines(keepends=True)[-1] + b"again\n"


def test_a_damaged_index_is_read_around_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = LogStore(tmp_path, index_interval=32)
    write(logs, RUN, [[(STDOUT, i, b"line %d\n" % i) for i in range(300)]])
    good = logs.index_path(RUN).read_bytes()
    damaged = bytearray(good)
    for at in range(40, len(good) - 200, 97):
        damaged[at] ^= 0xFF  # bit rot in the middle; the last entry is intact
    logs.index_path(RUN).write_bytes(bytes(damaged))
    records = parse(logs.path(RUN).read_bytes())
    assert b"".join(logs.text(RUN, tail=250)) == ref_tail(records, 250)
    assert "damaged" in caplog.text
    assert [r.offset for r in logs.page(RUN, limit=5, before=records[100][0])] == [
        r[0] for r in records[95:100]
    ]
    assert logs.index_path(RUN).read_bytes() == good


def test_a_torn_log_record_is_cut_with_an_index_and_its_line_written_again(tmp_path: Path) -> None:
    logs = LogStore(tmp_path, index_interval=32)
    write(logs, RUN, [[(STDOUT, i * S, b"line %d\n" % i) for i in range(50)]])
    with open(logs.path(RUN), "ab") as f:
        f.write(HEADER.pack(STDOUT, 50 * S, 100) + b"torn")
    assert b"".join(logs.text(RUN, tail=1)) == b"line 49\n"
    with pytest.raises(ValueError):
        logs.after(RUN, parse(logs.path(RUN).read_bytes())[-1][0] + HEADER.size + 8)
    write(logs, RUN, [[(STDOUT, 50 * S, b"line 50\n")]])
    assert b"".join(logs.text(RUN)) == b"".join(b"line %d\n" % i for i in range(51))


def test_delete_removes_the_index_too(tmp_path: Path) -> None:
    logs = LogStore(tmp_path)
    write(logs, RUN, [[(STDOUT, 1, b"x\n")]])
    assert logs.index_path(RUN).exists()
    logs.delete([RUN])
    assert not logs.index_path(RUN).exists() and not logs.path(RUN).exists()


# -- the read pool ---------------------------------------------------------------


async def test_reads_past_the_pools_size_queue_and_all_complete(tmp_path: Path) -> None:
    logs = LogStore(tmp_path, read_threads=2)
    release = threading.Event()
    lock = threading.Lock()
    running, most, threads = 0, 0, Counter[str]()

    def read(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads[threading.current_thread().name] += 1
        release.wait(30)
        with lock:
            running -= 1
        return i

    jobs = [asyncio.ensure_future(logs.reading(read, i)) for i in range(10)]
    while running < 2:
        await asyncio.sleep(0.01)
    assert not any(job.done() for job in jobs)  # the rest wait their turn
    release.set()
    assert await asyncio.wait_for(asyncio.gather(*jobs), 30) == list(range(10))
    assert most == 2
    assert all(name.startswith("runnerd-log-read") for name in threads), threads
    logs.close()


# -- config ------------------------------------------------------------------------


def test_the_log_read_pool_and_follower_cap_come_from_the_config() -> None:
    c = from_dict({"storage": {"log_read_threads": 3}, "server": {"max_log_followers": 7}})
    assert (c.storage.log_read_threads, c.server.max_log_followers) == (3, 7)
    assert (from_dict({}).storage.log_read_threads, from_dict({}).server.max_log_followers) == (
        4,
        200,
    )


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"storage": {"log_read_threads": 0}}, "storage.log_read_threads"),
        ({"storage": {"log_read_threads": "4"}}, "storage.log_read_threads"),
        ({"server": {"max_log_followers": 0}}, "server.max_log_followers"),
        ({"server": {"max_log_followers": 1.5}}, "server.max_log_followers"),
    ],
)
def test_a_bad_log_read_pool_or_follower_cap_names_its_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    assert str(info.value).startswith(f"{key}:"), str(info.value)
