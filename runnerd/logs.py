"""The run log file format: the only module that reads or writes `<data_dir>/logs/`.

A log file is a sequence of records, each the bytes one container wrote in one
message, exactly as written (no decoding: a non-UTF-8 byte survives), framed by a
fixed header:

    stream   1 byte   1 = stdout, 2 = stderr, 3 = a note from runnerd
    ts       8 bytes  big-endian signed nanoseconds since the epoch (the engine's)
    length   4 bytes  big-endian payload size
    payload  `length` bytes

Records are appended in the order the engine delivered them, so concatenating
the payloads gives stdout and stderr interleaved as written, and each piece keeps
its time and stream for filtering. Readers stream the file in chunks, so memory
stays bounded whatever the size of the log.

A log is cut, with one marker record, at `max_log_bytes` of output, or earlier
when the engine's own copy of the output (which runnerd reads from, and resumes
from after a restart) could hold no more without rotating: see EngineCopy.

Beside each log, `<run id>.idx` is its sparse index (see _Index), so that a tail, a
page before a cursor, a cursor's check and a writer's resume after a restart read
about what they return, not the whole log. The index is only ever a shortcut: one
missing (a log from before indexes), lagging or torn after a crash is rebuilt or
extended from the log, and a log is read whole when that cannot be done. Reads for
the API run in a bounded thread pool of their own (LogStore.reading), so many
readers queue there and never starve the loop's default executor.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import struct
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

log = logging.getLogger("runnerd.logs")

STDOUT = 1
STDERR = 2
MARKER = 3  # written by runnerd itself (e.g. the log limit notice), shown as text
HEADER = struct.Struct(">BqI")
READ_CHUNK = 256 * 1024  # readers hand out about this much at a time
_BLOCK = 256 * 1024  # files are scanned in blocks of this size
# stdout and stderr are timestamped by separate readers in the engine, so their
# times may be slightly out of order; a resumed stream starts this much earlier.
RESUME_MARGIN_NS = 2_000_000_000
# Followers of a log are woken at most this often: a flood of output is written in
# many small batches, and each wake-up costs a follower a read and a query.
WAKE_INTERVAL_SECONDS = 0.01
_MAX_RECORD = 16 * 1024 * 1024  # no engine message is near this: a sanity bound for cursors
# An index entry marks the first record at or past every this many bytes of log: a
# read guided by the index scans at most about this much beyond what it returns.
INDEX_INTERVAL = 64 * 1024
READ_THREADS = 4  # the default size of the pool API reads of logs run in
_LOCK_STRIPES = 64  # index builds and writer opens of one run are serialised by these

T = TypeVar("T")


class _Default:
    """The type of _DEFAULT: "the store's own", where None means "none"."""


_DEFAULT = _Default()


def _open(path: Path, mode: str = "rb", buffering: int = -1) -> BinaryIO:
    """Every file this module reads or writes is opened here."""
    # typeshed types open() with a str mode as IO[Any]; every mode here is binary.
    return open(path, mode, buffering=buffering)  # type: ignore[return-value]  # binary modes only


def _stream_of(record: Record) -> int:
    """A runnerd note counts as stderr for filtering."""
    return STDERR if record.stream == MARKER else record.stream


@dataclass
class Record:
    stream: int
    ts_ns: int
    data: bytes
    offset: int  # where the record's header starts in the file


@dataclass(frozen=True)
class EngineCopy:
    """The engine's own copy of a run's output: what runnerd reads, and reads again
    after a restart. It holds `max_bytes`, each message taking its length plus
    `per_line` (`per_piece` for one that does not end with a newline). Past that
    the engine rotates its files, and what runnerd reads back may have gaps or
    repeats; so a log is cut before its engine copy could overflow, with a marker
    saying why, like at the log limit. Only many short lines get there first."""

    max_bytes: int
    per_line: int
    per_piece: int


_TRUNCATED = 1  # _Tally.flags: the log limit marker is in


@dataclass
class _Tally:
    """What a log holds before some offset: all a writer needs to go on appending
    to it, and what a filtered page needs to count entries without reading them."""

    output: int = 0  # payload bytes of output (not of runnerd's notes)
    stdout: int = 0  # records of each kind
    stderr: int = 0
    notes: int = 0
    lines: int = 0  # output records ending with a newline (the engine's copy counts them)
    newest: int = 0  # the newest output time; 0: none yet
    flags: int = 0

    def add(self, stream: int, ts_ns: int, data: bytes | memoryview) -> None:
        n = len(data)
        if stream == MARKER:
            self.notes += 1
            if bytes(data[: len(_LIMIT_NOTE)]) == _LIMIT_NOTE:
                self.flags |= _TRUNCATED
            return
        if stream == STDOUT:
            self.stdout += 1
        else:
            self.stderr += 1
        self.output += n
        if n and data[n - 1] == 0x0A:
            self.lines += 1
        if ts_ns > self.newest:
            self.newest = ts_ns

    def update(self, output: int, stdout: int, stderr: int, lines: int, newest: int) -> None:
        """Take the counts a writer kept while appending."""
        self.output, self.stdout, self.stderr, self.lines = output, stdout, stderr, lines
        if newest > self.newest:
            self.newest = newest

    def entries(self, stream: int | None) -> int:
        """How many records of `stream` (all if None) a page would show."""
        if stream is None:
            return self.stdout + self.stderr + self.notes
        return self.stdout if stream == STDOUT else self.stderr + self.notes


@dataclass(frozen=True)
class _Mark:
    """A record boundary the index knows: the record's offset and header, and the
    tally of the log before it."""

    offset: int
    header: bytes  # the record's HEADER bytes; b"" for the start of the log
    tally: _Tally


_START = _Mark(0, b"", _Tally())


class _Damaged(Exception):
    """An index entry does not match its log (bit rot, a stray file): the index is
    dropped and the log read without it."""


class _Index:
    """A log's sparse index `<run id>.idx`: a header, then fixed-size entries in
    log order, one at the first record at or past every `interval` bytes after the
    previous (mark 0, the start of the log, is implied). Each entry holds its
    record's offset and header and the tally before it, and a CRC: a torn or zeroed
    entry is seen as such. The writer appends an entry after the log bytes it
    points to, so every entry points into what is on disk, unless the machine
    itself crashed: hence `trusted()`."""

    HEAD = struct.Struct(">8sI")  # magic, interval
    MAGIC = b"rdlogix1"
    ENTRY = struct.Struct(">QBqIQQQQQqB")  # offset, header, tally; then a CRC-32
    SIZE = ENTRY.size + 4

    def __init__(self, f: BinaryIO, interval: int, count: int) -> None:
        self.f = f
        self.interval = interval
        self.count = count  # entries on disk; marks are 0 (the start) to count

    @classmethod
    def load(cls, f: BinaryIO) -> _Index | None:
        """The index in `f` (unbuffered), or None when it has no valid header."""
        f.seek(0)
        head = f.read(cls.HEAD.size)
        if len(head) < cls.HEAD.size:
            return None
        magic, interval = cls.HEAD.unpack(head)
        if magic != cls.MAGIC or interval <= 0:
            return None
        size = f.seek(0, os.SEEK_END)
        return cls(f, interval, (size - cls.HEAD.size) // cls.SIZE)

    @classmethod
    def header(cls, interval: int) -> bytes:
        return cls.HEAD.pack(cls.MAGIC, interval)

    @classmethod
    def pack(cls, offset: int, header: bytes, tally: _Tally) -> bytes:
        entry = cls.ENTRY.pack(
            offset,
            *HEADER.unpack(header),
            tally.output,
            tally.stdout,
            tally.stderr,
            tally.notes,
            tally.lines,
            tally.newest,
            tally.flags,
        )
        return entry + zlib.crc32(entry).to_bytes(4, "big")

    def mark(self, i: int) -> _Mark:
        if i == 0:
            return _START
        self.f.seek(self.HEAD.size + (i - 1) * self.SIZE)
        raw = self.f.read(self.SIZE)
        if len(raw) < self.SIZE or zlib.crc32(raw[:-4]) != int.from_bytes(raw[-4:], "big"):
            raise _Damaged(f"entry {i}")
        (offset, stream, ts_ns, length, output, stdout, stderr, notes, lines, newest, flags) = (
            self.ENTRY.unpack_from(raw)
        )
        return _Mark(
            offset,
            HEADER.pack(stream, ts_ns, length),
            _Tally(output, stdout, stderr, notes, lines, newest, flags),
        )

    def last(self, key: Callable[[_Mark], int], value: int, hi: int | None = None) -> int:
        """The last mark (up to `hi`) whose key (growing along the log) is at most
        `value`: a binary search, a few small reads."""
        lo, hi = 0, self.count if hi is None else hi
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if key(self.mark(mid)) <= value:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def trusted(self, log_f: BinaryIO, log_size: int) -> int:
        """How many entries, from the first, point at complete records of the log
        as it is: the last ones may not, after a crash of the machine."""
        while self.count:
            try:
                mark = self.mark(self.count)
            except _Damaged:
                mark = None
            if mark is not None and _is_record(log_f, log_size, mark):
                break
            self.count -= 1
        return self.count


class _NoIndex:
    """The index of a log that has none: a log read from its start."""

    count = 0

    def mark(self, i: int) -> _Mark:
        return _START

    def last(self, key: Callable[[_Mark], int], value: int, hi: int | None = None) -> int:
        return 0


def _is_record(f: BinaryIO, size: int, mark: _Mark) -> bool:
    """True when a complete record with the mark's header starts at its offset."""
    f.seek(mark.offset)
    header = f.read(HEADER.size)
    if header != mark.header:
        return False
    length: int = HEADER.unpack(header)[2]
    return mark.offset + HEADER.size + length <= size


class LogStore:
    """Where run logs live on disk: one file per run, named by the run id, and its
    index beside it."""

    def __init__(
        self,
        logs_dir: Path,
        max_log_bytes: int = 100 * 1024 * 1024,
        engine_copy: EngineCopy | None = None,
        *,
        read_threads: int = READ_THREADS,
        index_interval: int = INDEX_INTERVAL,
    ) -> None:
        self.dir = logs_dir
        self.max_log_bytes = max_log_bytes
        self.engine_copy = engine_copy
        self.index_interval = index_interval
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._woken: dict[str, float] = {}  # run id -> when its followers were woken
        self._wake_later: dict[str, asyncio.TimerHandle] = {}
        # Its own threads: a burst of readers queues here, and the loop's default
        # executor (the writers' resumes, retention, ...) stays free.
        self._pool = ThreadPoolExecutor(
            max_workers=read_threads, thread_name_prefix="runnerd-log-read"
        )
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._writing: Counter[str] = Counter()  # run id -> writers open on its log
        self._cuts: dict[str, tuple[int, int]] = {}  # run id -> see cuts()

    # -- change notification: followers wait, writers wake them ------------------

    def changed(self, run_id: str) -> asyncio.Future[None]:
        """A future done at the next write to (or close of) the run's log. Take it
        *before* reading, so a write in between is not missed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, set()).add(fut)
        fut.add_done_callback(lambda f: self._forget(run_id, f))
        return fut

    def _forget(self, run_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(run_id)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                del self._waiters[run_id]

    def notify(self, run_id: str) -> None:
        """Wake the run's followers: now, or WAKE_INTERVAL_SECONDS after the last
        time, for all the writes in between."""
        if run_id in self._wake_later:
            return
        delay = self._woken.get(run_id, 0.0) + WAKE_INTERVAL_SECONDS - time.monotonic()
        if run_id not in self._waiters:
            if delay <= 0:
                self._woken.pop(run_id, None)
            return
        if delay > 0:
            self._wake_later[run_id] = asyncio.get_running_loop().call_later(
                delay, self._wake, run_id
            )
        else:
            self._wake(run_id)

    def _wake(self, run_id: str) -> None:
        self._wake_later.pop(run_id, None)
        waiters = self._waiters.get(run_id)
        if not waiters:
            return
        self._woken[run_id] = time.monotonic()
        for fut in list(waiters):
            if not fut.done():
                fut.set_result(None)

    # -- the read pool -----------------------------------------------------------

    async def reading(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` in the log read pool: every API read of a log goes
        through here. Past the pool's size, reads wait their turn."""
        return await asyncio.wrap_future(self._pool.submit(functools.partial(fn, *args, **kwargs)))

    async def text_chunks(
        self, run_id: str, tail: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """text(), each chunk read in the pool. Close it (contextlib.aclosing) when
        the client goes away mid-way."""
        chunks = self.text(run_id, tail)
        job: Future[bytes | None] | None = None
        try:
            while True:
                job = self._pool.submit(next, chunks, None)
                chunk = await asyncio.wrap_future(job)
                if chunk is None:
                    return
                yield chunk
        finally:
            # A read still running in its thread finishes before the file is closed.
            if job is None:
                chunks.close()
            else:
                job.add_done_callback(lambda _: chunks.close())

    def close(self) -> None:
        """Stop the read pool (reads queued and not started are dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- files -------------------------------------------------------------------

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, run_id: str) -> Path:
        # Run ids are UUIDs the store handed out; never a user-given path.
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.dir / f"{run_id}.log"

    def index_path(self, run_id: str) -> Path:
        return self.path(run_id).with_suffix(".idx")

    def _lock(self, run_id: str) -> threading.Lock:
        return self._locks[hash(run_id) % _LOCK_STRIPES]

    def writer(
        self, run_id: str, engine_copy: EngineCopy | None | _Default = _DEFAULT
    ) -> LogWriter:
        """Open a run's log for appending. After a restart this resumes where the
        file ends: a torn last record (a write cut by a crash) is cut off, and the
        writer knows the last record's time so the caller can skip what it has.
        With the log's index this reads about the last index interval and the
        resume margin; a log without one is read whole, once, to build it.
        `engine_copy`: what the engine running it keeps (the store's by default)."""
        path = self.path(run_id)
        with self._lock(run_id):
            self._writing[run_id] += 1
            try:
                return LogWriter(
                    path,
                    self.max_log_bytes,
                    on_change=lambda: self.notify(run_id),
                    engine_copy=self.engine_copy
                    if isinstance(engine_copy, _Default)
                    else engine_copy,
                    index_path=self.index_path(run_id),
                    index_interval=self.index_interval,
                    on_close=lambda: self._closed(run_id),
                )
            except BaseException:
                self._closed(run_id)
                raise

    def _closed(self, run_id: str) -> None:
        self._writing[run_id] -= 1
        if self._writing[run_id] <= 0:
            del self._writing[run_id]

    async def open_writer(
        self, run_id: str, engine_copy: EngineCopy | None | _Default = _DEFAULT
    ) -> LogWriter:
        """writer(), reading an existing log (after a restart) off the event loop."""
        try:
            existing = self.path(run_id).stat().st_size > 0
        except FileNotFoundError:
            existing = False
        if existing:
            return await asyncio.to_thread(self.writer, run_id, engine_copy)
        return self.writer(run_id, engine_copy)

    def rewind(self, run_id: str, writer: LogWriter, offset: int) -> LogWriter:
        """Cut the run's log at `offset` (a record boundary) and go on writing from
        there: `writer` is closed, and a writer on the shortened log (with the same
        engine copy, no resume pending) is returned. The index loses its entries
        past the cut when the new writer opens it."""
        engine_copy = writer.engine_copy
        writer.close()
        with _open(self.path(run_id), "r+b") as f:
            f.truncate(offset)
        count, lowest = self._cuts.get(run_id, (0, offset))
        self._cuts[run_id] = (count + 1, min(lowest, offset))
        rewound = self.writer(run_id, engine_copy)
        rewound.prepare_resume(since_ns=0)
        return rewound

    def cuts(self, run_id: str) -> tuple[int, int]:
        """(how many times the run's log was cut by rewind(), the lowest offset cut
        at): a follower that read past a cut goes on from there, not from inside a
        record that is no longer there."""
        return self._cuts.get(run_id, (0, 0))

    def check(self, run_id: str, writer: LogWriter) -> LogCheck:
        """A check of the run's log against the engine's copy of its output: see LogCheck."""
        return LogCheck(self, run_id, writer)

    def delete(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._woken.pop(run_id, None)
            self._cuts.pop(run_id, None)
            for path in (self.path(run_id), self.index_path(run_id)):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass

    def _index(self, run_id: str, f: BinaryIO) -> _Index | _NoIndex:
        """The run's index, for reading its log `f` as it is now. With no writer
        on the log, one that is missing, damaged or lagging is first built or
        brought up to date (a writer keeps its own log's index)."""
        size = os.fstat(f.fileno()).st_size
        with self._lock(run_id):
            writing = run_id in self._writing
            path = self.index_path(run_id)
            try:
                index_f = _open(path, "rb", buffering=0)
            except FileNotFoundError:
                index_f = None
            except OSError as e:
                log.warning(
                    "cannot open the log index %s: %s; reading the log whole", path, e.strerror or e
                )
                return _NoIndex()
            index = _Index.load(index_f) if index_f is not None else None
            if index is not None:
                index.trusted(f, size)
            elif index_f is not None:  # no valid header: as if there were none
                index_f.close()
                index_f = None
            if writing or size == 0:
                return index if index is not None else _NoIndex()
            last = index.mark(index.count) if index is not None else _START
            if index is not None and size - last.offset <= 2 * index.interval:
                return index
            # Missing, or entries missing at its end: scan from the last mark on.
            interval = index.interval if index is not None else self.index_interval
            entries: list[bytes] = []
            _scan(f, last, interval, entries)
            if index is not None and not entries:
                return index
            tmp = path.with_suffix(".idx.tmp")
            try:
                if index is None:
                    try:
                        with _open(tmp, "wb") as out:
                            out.write(_Index.header(interval) + b"".join(entries))
                        os.replace(tmp, path)
                    finally:
                        tmp.unlink(missing_ok=True)
                else:
                    with _open(path, "r+b") as out:
                        out.truncate(_Index.HEAD.size + index.count * _Index.SIZE)
                        out.seek(0, os.SEEK_END)
                        out.write(b"".join(entries))
            except OSError as e:  # e.g. disk full (the writer said so): reads scan more
                log.debug("cannot write the log index %s: %s", path, e.strerror or e)
                if index_f is not None:
                    index_f.close()
                return index if index is not None else _NoIndex()
            if index_f is not None:
                index_f.close()
            index = _Index.load(_open(path, "rb", buffering=0))
            return index if index is not None else _NoIndex()

    def _guided(self, run_id: str, fn: Callable[[BinaryIO, _Index | _NoIndex], T]) -> T | None:
        """fn(log file, its index); None when there is no log. A damaged index is
        dropped (rebuilt at the next read without writer) and the log read without."""
        try:
            f = _open(self.path(run_id), "rb")
        except FileNotFoundError:
            return None
        with f:
            index = self._index(run_id, f)
            try:
                try:
                    return fn(f, index)
                except _Damaged as e:
                    log.warning(
                        "the log index of run %s is damaged (%s); reading the log without it",
                        run_id,
                        e,
                    )
                    self._drop_index(run_id)
                    return fn(f, _NoIndex())
            finally:
                if isinstance(index, _Index):
                    index.f.close()

    def _drop_index(self, run_id: str) -> None:
        with self._lock(run_id):
            if run_id not in self._writing:
                try:
                    self.index_path(run_id).unlink()
                except FileNotFoundError:
                    pass

    # -- reads ---------------------------------------------------------------------

    def read(
        self, run_id: str, offset: int, max_bytes: int = READ_CHUNK
    ) -> tuple[list[Record], int]:
        """Complete records from `offset` (a record boundary), about `max_bytes` of
        them; and the offset to read on from."""
        records: list[Record] = []
        try:
            f = _open(self.path(run_id), "rb")
        except FileNotFoundError:
            return records, offset
        with f:
            size = 0
            for record in _records(f, offset):
                records.append(record)
                size += len(record.data)
                offset = record.offset + HEADER.size + len(record.data)
                if size >= max_bytes:
                    break
        return records, offset

    def after(self, run_id: str, cursor: int) -> int:
        """The offset of the record after the one at `cursor`; ValueError when
        `cursor` is not where a record of this log starts."""
        if cursor < 0:
            raise ValueError(cursor)
        found = self._guided(run_id, lambda f, index: _after(f, index, cursor))
        if found is None:
            raise ValueError(cursor)
        return found

    def page(
        self,
        run_id: str,
        *,
        limit: int,
        after: int | None = None,
        before: int | None = None,
        stream: int | None = None,
    ) -> list[Record]:
        """Up to `limit` records (of `stream` only, if given): the first ones after
        the cursor `after`, or the last ones before the cursor `before`, or the
        first ones of the log."""
        if before is not None:
            found = self._guided(
                run_id, lambda f, index: _page_before(f, index, before, limit, stream)
            )
        else:
            found = self._guided(
                run_id, lambda f, index: _page_after(f, index, after or 0, limit, stream)
            )
        return found or []

    def tail_start(self, run_id: str, tail: int) -> tuple[int, int]:
        """(record offset, bytes to skip in it) where the last `tail` lines begin."""
        return self._guided(run_id, lambda f, index: _tail_start(f, index, tail)) or (0, 0)

    def text(self, run_id: str, tail: int | None = None) -> Generator[bytes, None, None]:
        """The run's output as written, in chunks; with `tail`, only its last lines."""
        start = self.tail_start(run_id, tail) if tail is not None else (0, 0)
        try:
            f = _open(self.path(run_id), "rb")
        except FileNotFoundError:
            return
        with f:
            skip = start[1]
            pending: list[bytes] = []
            size = 0
            for record in _records(f, start[0]):
                data = record.data[skip:] if skip else record.data
                skip = 0
                pending.append(data)
                size += len(data)
                if size >= READ_CHUNK:
                    yield b"".join(pending)
                    pending, size = [], 0
            if pending:
                yield b"".join(pending)


class LogWriter:
    """Appends records for one run, a batch at a time: one write and one flush
    per batch, so readers see each batch as soon as it is written; then the index
    entries the batch brought, after the bytes they point to.

    Opening a writer on an existing log prepares a resume, as prepare_resume()
    does for an open one: the engine's output is read again from `since_ns` (a
    margin before the newest record on disk, since stdout and stderr timestamps
    can be slightly out of order), and `seen()` tells which of the repeated chunks
    are already on disk, by their exact (time, stream). Past `max_bytes` of output
    (or what `engine_copy` holds) one marker line is written and the rest is
    dropped.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        on_change: Callable[[], None] | None = None,
        engine_copy: EngineCopy | None = None,
        *,
        index_path: Path | None = None,
        index_interval: int = INDEX_INTERVAL,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.engine_copy = engine_copy
        self._on_change = on_change
        self._on_close = on_close
        self.since_ns = 0
        self.output_bytes = 0
        self.engine_bytes = 0  # the engine's copy of the output kept so far, at most
        self.truncated = False
        self.failed = False
        self._on_disk: Counter[tuple[int, int]] = Counter()
        self._newest = 0  # the newest output time on disk
        # (offset, newest time) of the batches that may hold records within the
        # resume margin of the newest: where prepare_resume() starts reading.
        self._batches: deque[tuple[int, int]] = deque()
        self._tally = _Tally()  # the whole log's
        self._index: BinaryIO | None = None
        self._interval = index_interval
        self._next_mark = index_interval  # the offset from which a record gets an entry
        self.open_error: OSError | None = None
        try:
            self._f: BinaryIO | None = _open(path, "a+b")
        except OSError as e:  # e.g. disk full: write() reports it, once, to the caller
            self._f, self.open_error = None, e
            return
        size = os.fstat(self._f.fileno()).st_size
        index, base = self._open_index(index_path, size)
        entries: list[bytes] = []
        end = _scan(self._f, base, self._interval, entries, self._tally)
        self._next_mark = (
            _Index.ENTRY.unpack_from(entries[-1])[0] if entries else base.offset
        ) + self._interval
        self._write_entries(entries)
        self._f.truncate(end)  # drop a torn record left by a crash
        self._f.seek(end)
        self._end = end
        tally = self._tally
        per_line, per_piece = (
            (engine_copy.per_line, engine_copy.per_piece) if engine_copy else (0, 0)
        )
        self.output_bytes = tally.output
        self.engine_bytes = (
            tally.output
            + tally.lines * per_line
            + (tally.stdout + tally.stderr - tally.lines) * per_piece
        )
        self.truncated = bool(tally.flags & _TRUNCATED)
        self._newest = tally.newest
        if self._newest:
            self._batches.append((self._resume_start(index, base, entries), self._newest))
        if index is not None:
            index.f.close()
        self.prepare_resume()

    def _resume_start(self, index: _Index | None, base: _Mark, entries: list[bytes]) -> int:
        """Where the records within the resume margin begin, at the latest: the last
        mark whose every record before is older than the resume point."""
        since = max(1, self._newest - RESUME_MARGIN_NS)
        newest_at = 9  # the tally's `newest` in an unpacked entry
        for entry in reversed(entries):  # the marks the scan from `base` added
            fields = _Index.ENTRY.unpack_from(entry)
            if fields[newest_at] < since:
                offset: int = fields[0]
                return offset
        if index is None:
            return base.offset if base.tally.newest < since else 0
        try:
            return index.mark(index.last(lambda m: m.tally.newest, since - 1)).offset
        except _Damaged:
            return 0

    def _open_index(self, index_path: Path | None, size: int) -> tuple[_Index | None, _Mark]:
        """Open the log's index for appending, its entries that do not point at a
        complete record cut off; (a reader of it, the last mark to scan from)."""
        assert self._f is not None
        if index_path is None:
            return None, _START
        try:
            f = _open(index_path, "a+b", buffering=0)
            index = _Index.load(f)
            if index is None or (size == 0 and index.count):
                f.truncate(0)
                f.write(_Index.header(self._interval))
                index = _Index.load(f)
                assert index is not None
            self._interval = index.interval
            count = index.count
            index.trusted(self._f, size)
            if index.count != count:
                f.truncate(_Index.HEAD.size + index.count * _Index.SIZE)
            self._index = f
            reader = _Index(_open(index_path, "rb", buffering=0), index.interval, index.count)
            return reader, reader.mark(reader.count)
        except OSError as e:
            log.warning(
                "cannot open the log index %s: %s; the log is read whole",
                index_path,
                e.strerror or e,
            )
            self._drop_index_file()
            return None, _START

    def _write_entries(self, entries: list[bytes]) -> None:
        if not entries or self._index is None:
            return
        try:
            self._index.write(b"".join(entries))
        except OSError as e:  # e.g. disk full: readers scan from its last entry
            log.debug("cannot append to the log index of %s: %s", self.path, e)
            self._drop_index_file()

    def _drop_index_file(self) -> None:
        if self._index is not None:
            try:
                self._index.close()
            except OSError:
                pass
        self._index = None

    def prepare_resume(self, since_ns: int | None = None) -> None:
        """Get ready for the engine to send the output again from `since_ns`: after
        its stream broke, or for the last read after the container exited. Reads
        only the log's last records (may run in a thread: no write meanwhile).
        `since_ns=0`: nothing is sent again; every record given is new."""
        self._on_disk.clear()
        if since_ns == 0:
            self.since_ns = 0
            return
        if not self._newest or self._f is None:
            self.since_ns = 0
            return
        self.since_ns = max(1, self._newest - RESUME_MARGIN_NS)
        if not self._batches:
            return
        with _open(self.path, "rb") as f:
            for offset, stream, ts_ns, _, _, _ in _frames(f, self._batches[0][0]):
                if offset >= self._end:
                    break
                if stream != MARKER and ts_ns >= self.since_ns:
                    self._on_disk[(ts_ns, stream)] += 1

    @property
    def end(self) -> int:
        """The size of the log: where the next record goes."""
        return self._end if self._f is not None else 0

    def seen(self, ts_ns: int, stream: int) -> bool:
        """True for a chunk of a resumed stream that is already on disk."""
        key = (ts_ns, stream)
        if self._on_disk.get(key, 0) > 0:
            self._on_disk[key] -= 1
            return True
        return False

    def write(self, stream: int, ts_ns: int, data: bytes) -> None:
        """Append one record: append() with a batch of one."""
        self.append([(stream, ts_ns, data)])

    def append(self, records: list[tuple[int, int, bytes | memoryview]]) -> None:
        """Append records (stream, time, bytes) the engine sent, in one write,
        skipping those seen() on disk. The first failed write raises OSError (e.g.
        disk full); after it, output is dropped silently, so the caller reports it
        once."""
        if self.failed or self.truncated or not records:
            return
        if self._f is None:
            self.failed = True
            raise self.open_error or OSError("log file is not open")
        pack = HEADER.pack
        on_disk = self._on_disk
        max_bytes = self.max_bytes
        output = self.output_bytes
        stored = self.engine_bytes
        if self.engine_copy is not None:
            max_stored = self.engine_copy.max_bytes
            per_line, per_piece = self.engine_copy.per_line, self.engine_copy.per_piece
        else:
            max_stored, per_line, per_piece = -1, 0, 0
        tally = self._tally
        # Only stdout records are counted in the loop; stderr ones are the rest.
        n_out, lines, out_before, err_before = tally.stdout, tally.lines, tally.stdout, tally.stderr
        pos, next_mark, header_size = self._end, self._next_mark, HEADER.size
        entries: list[bytes] = []
        newest = 0
        cut: tuple[int, bytes] | None = None  # (time, the limit note) when the log is cut
        parts: list[bytes | memoryview] = []
        for stream, ts_ns, data in records:
            if on_disk and self.seen(ts_ns, stream):
                continue
            n = len(data)
            line = n and data[n - 1] == 0x0A
            cost = n + (per_line if line else per_piece)
            if output + n > max_bytes or (max_stored >= 0 and stored + cost > max_stored):
                cut = (ts_ns, self._limit_note(output, over_engine_copy=output + n <= max_bytes))
                break
            header = pack(stream, ts_ns, n)
            if pos >= next_mark:
                tally.update(
                    output,
                    n_out,
                    err_before + len(parts) // 2 - (n_out - out_before),
                    lines,
                    newest,
                )
                entries.append(_Index.pack(pos, header, tally))
                next_mark = pos + self._interval
            output += n
            stored += cost
            if stream == 1:  # STDOUT
                n_out += 1
            if line:
                lines += 1
            if ts_ns > newest:
                newest = ts_ns
            parts += (header, data)
            pos += header_size + n
        tally.update(
            output, n_out, err_before + len(parts) // 2 - (n_out - out_before), lines, newest
        )
        self._next_mark = next_mark
        self.output_bytes, self.engine_bytes = output, stored
        if newest:
            self._track(newest)
        if cut is not None:  # the limit note ends the log
            entries += self._note_record(parts, pos, *cut)
            self.truncated = True
        self._append(parts, entries)

    def note(self, text: str) -> None:
        """Append a note from runnerd (a MARKER record, shown as text)."""
        if self.failed or self.truncated or self._f is None:
            return
        parts: list[bytes | memoryview] = []
        entries = self._note_record(
            parts, self._end, time.time_ns(), f"[runnerd] {text}\n".encode()
        )
        self._append(parts, entries)

    def _note_record(
        self, parts: list[bytes | memoryview], pos: int, ts_ns: int, data: bytes
    ) -> list[bytes]:
        """Add a MARKER record at `pos` to `parts`; the index entry it needs, if any."""
        header = HEADER.pack(MARKER, ts_ns, len(data))
        entries = []
        if pos >= self._next_mark:
            entries.append(_Index.pack(pos, header, self._tally))
            self._next_mark = pos + self._interval
        self._tally.add(MARKER, 0, data)
        parts += (header, data)
        return entries

    def _limit_note(self, output: int, *, over_engine_copy: bool) -> bytes:
        if not over_engine_copy:
            return (
                _LIMIT_NOTE
                + f" of {self.max_bytes} bytes reached; further output of "
                "this run is dropped\n".encode()
            )
        assert self.engine_copy is not None
        return (
            _LIMIT_NOTE
            + f" of the engine reached after {output} bytes of "
            f"output: the engine keeps {self.engine_copy.max_bytes} bytes of a run's "
            f"output, counting up to {self.engine_copy.per_line} bytes more for each "
            "line, so many short lines fill it first; further output of this run is "
            "dropped\n".encode()
        )

    def _track(self, newest: int) -> None:
        """Remember where this batch starts, for prepare_resume()."""
        if newest > self._newest:
            self._newest = newest
        self._batches.append((self._end, newest))
        while self._batches and self._batches[0][1] < self._newest - RESUME_MARGIN_NS:
            self._batches.popleft()

    def _append(self, parts: list[bytes | memoryview], entries: list[bytes]) -> None:
        if not parts:
            return
        assert self._f is not None
        blob = b"".join(parts)
        try:
            self._f.write(blob)
            self._f.flush()
        except OSError:
            self.failed = True
            raise
        self._end += len(blob)
        self._write_entries(entries)
        if self._on_change is not None:
            self._on_change()

    def close(self) -> None:
        if self._f is None or self._f.closed:
            if self._on_close is not None:
                self._on_close()
                self._on_close = None
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError:
            pass  # the writer already reported the failed write
        finally:
            try:
                self._f.close()
            except OSError:
                pass
            self._drop_index_file()
            if self._on_close is not None:
                self._on_close()
                self._on_close = None
            if self._on_change is not None:
                self._on_change()


_LIMIT_NOTE = b"[runnerd] log limit"


@dataclass(frozen=True)
class CheckResult:
    """What a LogCheck found: bytes of output the log had right from its start,
    bytes it then wrote from the engine's copy, and bytes of output it cut from
    the log (repeated, or out of their place)."""

    matched: int
    added: int
    removed: int

    @property
    def repaired(self) -> bool:
        return bool(self.added or self.removed)


class LogCheck:
    """A run's log, checked against the engine's own copy of the output read again
    in full after the run ended, and repaired from it: for an engine whose follow
    stream is not a faithful copy (Podman's drops and repeats data, and its times
    are whole seconds, so no resume by time can be trusted either).

    The engine's records are compared in order with the log's output records
    (runnerd's notes are passed over) by stream and bytes, never by time. At the
    first difference the log is cut there and the rest is written from the
    engine's copy; output the log holds past the end of the engine's copy is cut
    off. The log before the first difference stays as it was, so readers' cursors
    up to there stay valid. Feed it the engine's records (`feed`), then `finish`."""

    def __init__(self, store: LogStore, run_id: str, writer: LogWriter) -> None:
        self._store = store
        self._run_id = run_id
        self.writer = writer  # the writer to go on with: a new one after a cut
        self._output_before = writer.output_bytes
        self.matched = 0
        self._cut_at: int | None = None
        self._f: BinaryIO | None = None
        self._disk: Iterator[tuple[int, int, int, bytes, int, int]] = iter(())
        if writer.end:
            self._f = _open(store.path(run_id), "rb")
            self._disk = _frames(self._f, 0, writer.end)

    def _next_output(self) -> tuple[int, int, bytes, int, int] | None:
        """(offset, stream, block, start, stop) of the log's next output record."""
        for offset, stream, _, block, start, stop in self._disk:
            if stream != MARKER:
                return offset, stream, block, start, stop
        return None

    def _cut(self, offset: int) -> None:
        """From `offset` on, the log is the engine's copy."""
        self._close()
        self._cut_at = offset
        if offset < self.writer.end:
            self.writer = self._store.rewind(self._run_id, self.writer, offset)
        else:
            self.writer.prepare_resume(since_ns=0)

    def _close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self._disk = iter(())

    def feed(self, records: list[tuple[int, int, bytes | memoryview]]) -> None:
        """The engine's next records (stream, time, bytes), in its order. After a
        cut they are appended (OSError from the write, as LogWriter.append)."""
        if self._cut_at is None:
            for i, (stream, _, data) in enumerate(records):
                found = self._next_output()
                if found is not None:
                    offset, on_disk, block, start, stop = found
                    if on_disk == stream and block[start:stop] == data:
                        self.matched += stop - start
                        continue
                    self._cut(offset)
                else:  # the log ends here: the rest is missing from it
                    self._cut(self.writer.end)
                records = records[i:]
                break
            else:
                return
        self.writer.append(records)

    def finish(self) -> CheckResult:
        """The engine's copy has been fed in full: output the log holds past it is
        cut off. What was found."""
        if self._cut_at is None:
            found = self._next_output()
            if found is not None:  # more in the log than in the engine's copy
                self._cut(found[0])
            self._close()
        if self._cut_at is None:
            return CheckResult(self.matched, 0, 0)
        return CheckResult(
            self.matched,
            self.writer.output_bytes - self.matched,
            self._output_before - self.matched,
        )


def _frames(
    f: BinaryIO, offset: int, stop: int | None = None, block_size: int = _BLOCK
) -> Iterator[tuple[int, int, int, bytes, int, int]]:
    """(offset, stream, ts, block, start, stop) of each complete record from
    `offset` (a record boundary), its payload being block[start:stop]. The file
    is read in large blocks, not a read per record, and not past `stop`; a torn
    record at the end (still being written, or cut by a crash) ends the iteration."""
    f.seek(offset)
    left = -1 if stop is None else stop - offset  # bytes still to read; -1: all
    if left == 0:
        return
    block = f.read(block_size if left < 0 else min(block_size, left))
    left = left if left < 0 else left - len(block)
    pos = 0
    while True:
        if pos + HEADER.size <= len(block):
            stream, ts_ns, length = HEADER.unpack_from(block, pos)
            end = pos + HEADER.size + length
            if end <= len(block):
                yield offset, stream, ts_ns, block, pos + HEADER.size, end
                offset += end - pos
                pos = end
                continue
            need = end - len(block)
        else:
            need = HEADER.size
        if left == 0:
            return
        want = max(block_size, need)
        more = f.read(want if left < 0 else min(want, left))
        if not more:
            return
        left = left if left < 0 else left - len(more)
        block = block[pos:] + more
        pos = 0


def _records(
    f: BinaryIO, offset: int, stop: int | None = None, block_size: int = _BLOCK
) -> Iterator[Record]:
    """Records from `offset` (a record boundary); see _frames."""
    for at, stream, ts_ns, block, start, end in _frames(f, offset, stop, block_size):
        yield Record(stream, ts_ns, block[start:end], at)


def _scan(
    f: BinaryIO, base: _Mark, interval: int, entries: list[bytes], tally: _Tally | None = None
) -> int:
    """Read the log from the mark `base` to its last complete record, adding the
    index entries due on the way to `entries` and what it holds to `tally` (which
    starts as the mark's); the end of the last complete record."""
    if tally is None:
        tally = _Tally()
    for name in vars(base.tally):
        setattr(tally, name, getattr(base.tally, name))
    end = base.offset
    next_mark = base.offset + interval
    for at, stream, ts_ns, block, start, stop in _frames(f, base.offset):
        if at >= next_mark:
            entries.append(_Index.pack(at, HEADER.pack(stream, ts_ns, stop - start), tally))
            next_mark = at + interval
        tally.add(stream, ts_ns, memoryview(block)[start:stop])
        end = stop - start + at + HEADER.size
    return end


def _segment(index: _Index | _NoIndex, i: int) -> int | None:
    """Where mark i's segment of the log ends: the next mark; None for the last."""
    return index.mark(i + 1).offset if i < index.count else None


def _checked(
    f: BinaryIO, mark: _Mark, stop: int | None = None, block_size: int = _BLOCK
) -> Iterator[tuple[int, int, int, bytes, int, int]]:
    """_frames from a mark, which must be where its record starts."""
    frames = _frames(f, mark.offset, stop, block_size)
    if mark.offset and (stop is None or stop > mark.offset):
        first = next(frames, None)
        if first is None or HEADER.pack(first[1], first[2], first[5] - first[4]) != mark.header:
            raise _Damaged(f"no record at offset {mark.offset}")
        yield first
    yield from frames


def _after(f: BinaryIO, index: _Index | _NoIndex, cursor: int) -> int:
    """The offset after the record at `cursor`, found from the last mark before it."""
    mark = index.mark(index.last(lambda m: m.offset, cursor))
    for at, _, _, _, start, stop in _checked(f, mark, block_size=index_block(index)):
        if at >= cursor:
            if at == cursor:
                return at + HEADER.size + (stop - start)
            break
    raise ValueError(cursor)


def index_block(index: _Index | _NoIndex) -> int:
    """How much to read at a time when reading a segment of a log."""
    return min(_BLOCK, index.interval) if isinstance(index, _Index) else _BLOCK


def _matching(
    f: BinaryIO, index: _Index | _NoIndex, i: int, offset: int, stop: int | None, stream: int | None
) -> Iterator[Record]:
    """Records of `stream` (all if None) from `offset` (a record boundary in mark
    i's segment) to `stop`; filtered, segments that hold none are not read."""
    block = index_block(index)
    while True:
        end = _segment(index, i)
        mark = index.mark(i)
        skip = (
            stream is not None
            and end is not None
            and index.mark(i + 1).tally.entries(stream) == mark.tally.entries(stream)
        )
        if not skip:
            limit = end if stop is None or (end is not None and end < stop) else stop
            frames = (
                _checked(f, mark, limit, block)
                if offset == mark.offset
                else _frames(f, offset, limit, block)
            )
            for at, s, ts_ns, data, start, stop_ in frames:
                if stream is None or (STDERR if s == MARKER else s) == stream:
                    yield Record(s, ts_ns, data[start:stop_], at)
        if end is None or (stop is not None and end >= stop):
            return
        i += 1
        offset = end


def _page_after(
    f: BinaryIO, index: _Index | _NoIndex, after: int, limit: int, stream: int | None
) -> list[Record]:
    i = index.last(lambda m: m.offset, after)
    out: list[Record] = []
    for record in _matching(f, index, i, after, None, stream):
        out.append(record)
        if len(out) >= limit:
            break
    return out


def _page_before(
    f: BinaryIO, index: _Index | _NoIndex, before: int, limit: int, stream: int | None
) -> list[Record]:
    """The last `limit` records of `stream` before `before`: counted from the
    marks, then read from just before the first of them."""
    last = index.last(lambda m: m.offset, before)
    mark = index.mark(last)
    total = mark.tally.entries(stream) + sum(
        1 for _ in _matching(f, index, last, mark.offset, before, stream)
    )
    first = max(0, total - limit)  # the entry number (of `stream`) of the first to give
    i = index.last(lambda m: m.tally.entries(stream), first, hi=last)
    mark = index.mark(i)
    n = mark.tally.entries(stream)
    out: list[Record] = []
    for record in _matching(f, index, i, mark.offset, before, stream):
        if n >= first:
            out.append(record)
        n += 1
    return out


def _tail_start(f: BinaryIO, index: _Index | _NoIndex, lines: int) -> tuple[int, int]:
    """(record offset, byte within its payload) where the last `lines` lines begin.

    Segments of the log are read from its end backwards, each scanned forward for
    where its lines start, until enough lines are found: about what is returned."""
    if lines <= 0:
        return f.seek(0, os.SEEK_END), 0
    block = index_block(index)
    found: deque[tuple[int, int]] = deque()  # line starts (after a newline) in log order
    ends_with_newline: bool | None = None  # of the log's last non-empty record
    for i in range(index.count, -1, -1):
        starts: list[tuple[int, int]] = []
        last_nonempty: bool | None = None
        for at, _, _, data, start, stop in _checked(f, index.mark(i), _segment(index, i), block):
            if start == stop:
                continue
            j = data.find(b"\n", start, stop)
            while j != -1:
                if j + 1 < stop:
                    starts.append((at, j + 1 - start))
                else:  # the next line starts in the next record
                    starts.append((at + HEADER.size + (stop - start), 0))
                j = data.find(b"\n", j + 1, stop)
            last_nonempty = data[stop - 1] == 0x0A
        if ends_with_newline is None and last_nonempty is not None:
            ends_with_newline = last_nonempty
            if ends_with_newline:
                starts.pop()  # the empty "line" after the final newline
        found.extendleft(reversed(starts))
        if len(found) >= lines:
            return found[-lines]
    return 0, 0
