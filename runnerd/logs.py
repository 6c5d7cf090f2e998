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
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

STDOUT = 1
STDERR = 2
MARKER = 3  # written by runnerd itself (e.g. the log limit notice), shown as text
HEADER = struct.Struct(">BqI")
READ_CHUNK = 64 * 1024
# stdout and stderr are timestamped by separate readers in the engine, so their
# times may be slightly out of order; a resumed stream starts this much earlier.
RESUME_MARGIN_NS = 2_000_000_000
_MAX_RECORD = 16 * 1024 * 1024  # no engine message is near this: a sanity bound for cursors


def _stream_of(record: Record) -> int:
    """A runnerd note counts as stderr for filtering."""
    return STDERR if record.stream == MARKER else record.stream


@dataclass
class Record:
    stream: int
    ts_ns: int
    data: bytes
    offset: int  # where the record's header starts in the file


class LogStore:
    """Where run logs live on disk: one file per run, named by the run id."""

    def __init__(self, logs_dir: Path, max_log_bytes: int = 100 * 1024 * 1024) -> None:
        self.dir = logs_dir
        self.max_log_bytes = max_log_bytes
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

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
        for fut in list(self._waiters.get(run_id, ())):
            if not fut.done():
                fut.set_result(None)

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, run_id: str) -> Path:
        # Run ids are UUIDs the store handed out; never a user-given path.
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.dir / f"{run_id}.log"

    def writer(self, run_id: str) -> LogWriter:
        """Open a run's log for appending. After a restart this resumes where the
        file ends: a torn last record (a write cut by a crash) is cut off, and the
        writer knows the last record's time so the caller can skip what it has."""
        return LogWriter(self.path(run_id), self.max_log_bytes,
                         on_change=lambda: self.notify(run_id))

    def delete(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            try:
                self.path(run_id).unlink()
            except FileNotFoundError:
                pass

    def read(self, run_id: str, offset: int, max_bytes: int = READ_CHUNK) -> tuple[list[Record], int]:
        """Complete records from `offset` (a record boundary), about `max_bytes` of
        them; and the offset to read on from."""
        records: list[Record] = []
        try:
            f = open(self.path(run_id), "rb")
        except FileNotFoundError:
            return records, offset
        with f:
            f.seek(offset)
            size = 0
            for record in _records(f):
                records.append(record)
                size += len(record.data)
                offset = record.offset + HEADER.size + len(record.data)
                if size >= max_bytes:
                    break
        return records, offset

    def after(self, run_id: str, cursor: int) -> int:
        """The offset of the record after the one at `cursor`; ValueError when
        `cursor` is not where a record of this log starts."""
        try:
            with open(self.path(run_id), "rb") as f:
                f.seek(cursor)
                header = f.read(HEADER.size)
                if cursor < 0 or len(header) < HEADER.size:
                    raise ValueError(cursor)
                stream, ts_ns, length = HEADER.unpack(header)
                if stream not in (STDOUT, STDERR, MARKER) or length > _MAX_RECORD:
                    raise ValueError(cursor)
                return cursor + HEADER.size + length
        except FileNotFoundError:
            raise ValueError(cursor) from None

    def page(self, run_id: str, *, limit: int, after: int | None = None,
             before: int | None = None, stream: int | None = None) -> list[Record]:
        """Up to `limit` records (of `stream` only, if given): the first ones after
        the cursor `after`, or the last ones before the cursor `before`, or the
        first ones of the log."""
        try:
            f = open(self.path(run_id), "rb")
        except FileNotFoundError:
            return []
        with f:
            if before is not None:
                last: deque[Record] = deque(maxlen=limit)
                for record in _records(f):
                    if record.offset >= before:
                        break
                    if stream is None or _stream_of(record) == stream:
                        last.append(record)
                return list(last)
            f.seek(after if after is not None else 0)
            out: list[Record] = []
            for record in _records(f):
                if stream is None or _stream_of(record) == stream:
                    out.append(record)
                    if len(out) >= limit:
                        break
            return out

    def tail_start(self, run_id: str, tail: int) -> tuple[int, int]:
        """(record offset, bytes to skip in it) where the last `tail` lines begin."""
        try:
            with open(self.path(run_id), "rb") as f:
                return _tail_start(f, tail)
        except FileNotFoundError:
            return 0, 0

    def text(self, run_id: str, tail: int | None = None) -> Iterator[bytes]:
        """The run's output as written, in chunks; with `tail`, only its last lines."""
        try:
            f = open(self.path(run_id), "rb")
        except FileNotFoundError:
            return
        with f:
            start = _tail_start(f, tail) if tail is not None else (0, 0)
            f.seek(start[0])
            skip = start[1]
            pending: list[bytes] = []
            size = 0
            for record in _records(f):
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
    """Appends records for one run; flushed after every record so readers see it.

    Opening a writer on an existing log prepares a resume: the engine's output is
    read again from `since_ns` (a margin before the newest record on disk, since
    stdout and stderr timestamps can be slightly out of order), and `seen()` tells
    which of the repeated chunks are already on disk, by their exact (time,
    stream). Past `max_bytes` of output one marker line is written and the rest
    is dropped.
    """

    def __init__(self, path: Path, max_bytes: int,
                 on_change: Callable[[], None] | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._on_change = on_change
        self.since_ns = 0
        self.output_bytes = 0
        self.truncated = False
        self.failed = False
        self._on_disk: Counter[tuple[int, int]] = Counter()
        self.open_error: OSError | None = None
        try:
            self._f: BinaryIO | None = open(path, "a+b")
        except OSError as e:  # e.g. disk full: write() reports it, once, to the caller
            self._f, self.open_error = None, e
            return
        end = 0
        newest = 0
        recent: deque[tuple[int, int]] = deque()
        for stream, ts_ns, length, end in _headers(self._f):
            if stream == MARKER:
                self.truncated = True
                continue
            self.output_bytes += length
            newest = max(newest, ts_ns)
            recent.append((ts_ns, stream))
            while recent and recent[0][0] < newest - 2 * RESUME_MARGIN_NS:
                recent.popleft()
        self._f.truncate(end)  # drop a torn record left by a crash
        self._f.seek(end)
        if newest:
            self.since_ns = max(1, newest - RESUME_MARGIN_NS)
            self._on_disk.update(r for r in recent if r[0] >= self.since_ns)

    def seen(self, ts_ns: int, stream: int) -> bool:
        """True for a chunk of a resumed stream that is already on disk."""
        key = (ts_ns, stream)
        if self._on_disk.get(key, 0) > 0:
            self._on_disk[key] -= 1
            return True
        return False

    def write(self, stream: int, ts_ns: int, data: bytes) -> None:
        """Append a record. The first failed write raises OSError (e.g. disk full);
        after it, output is dropped silently, so the caller reports it once."""
        if self.failed or self.truncated:
            return
        try:
            self._write(stream, ts_ns, data)
        except OSError:
            self.failed = True
            raise

    def _write(self, stream: int, ts_ns: int, data: bytes) -> None:
        if self._f is None:
            raise self.open_error or OSError("log file is not open")
        if self.output_bytes + len(data) > self.max_bytes:
            self.truncated = True
            stream, data = MARKER, (f"[runnerd] log limit of {self.max_bytes} bytes reached; "
                                    "further output of this run is dropped\n").encode()
        else:
            self.output_bytes += len(data)
        self._f.write(HEADER.pack(stream, ts_ns, len(data)) + data)
        self._f.flush()
        if self._on_change is not None:
            self._on_change()

    def close(self) -> None:
        if self._f is None or self._f.closed:
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
            if self._on_change is not None:
                self._on_change()


def _headers(f: BinaryIO) -> Iterator[tuple[int, int, int, int]]:
    """(stream, ts, length, end offset) of each complete record, reading headers only."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    offset = 0
    while offset + HEADER.size <= size:
        f.seek(offset)
        stream, ts_ns, length = HEADER.unpack(f.read(HEADER.size))
        end = offset + HEADER.size + length
        if end > size:
            return
        yield stream, ts_ns, length, end
        offset = end


def _records(f: BinaryIO) -> Iterator[Record]:
    """Records from the current position; a torn record at the end (still being
    written, or cut by a crash) ends the iteration."""
    while True:
        offset = f.tell()
        header = f.read(HEADER.size)
        if len(header) < HEADER.size:
            return
        stream, ts_ns, length = HEADER.unpack(header)
        data = f.read(length)
        if len(data) < length:
            return
        yield Record(stream, ts_ns, data, offset)


def _tail_start(f: BinaryIO, lines: int) -> tuple[int, int]:
    """(record offset, byte within its payload) where the last `lines` lines begin.

    One pass keeping at most lines+1 line starts: time grows with the file,
    memory does not."""
    if lines <= 0:
        f.seek(0, os.SEEK_END)
        return f.tell(), 0
    starts: deque[tuple[int, int]] = deque(maxlen=lines + 1)
    starts.append((0, 0))
    ends_with_newline = False
    f.seek(0)
    for record in _records(f):
        data = record.data
        if not data:
            continue
        i = data.find(b"\n")
        while i != -1:
            if i + 1 < len(data):
                starts.append((record.offset, i + 1))
            else:  # the next line starts in the next record
                starts.append((f.tell(), 0))
            i = data.find(b"\n", i + 1)
        ends_with_newline = data.endswith(b"\n")
    if ends_with_newline:
        starts.pop()  # the empty "line" after the final newline
    return starts[0] if len(starts) <= lines else starts[-lines]
