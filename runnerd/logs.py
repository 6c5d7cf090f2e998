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
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

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


class LogStore:
    """Where run logs live on disk: one file per run, named by the run id."""

    def __init__(self, logs_dir: Path, max_log_bytes: int = 100 * 1024 * 1024,
                 engine_copy: EngineCopy | None = None) -> None:
        self.dir = logs_dir
        self.max_log_bytes = max_log_bytes
        self.engine_copy = engine_copy
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._woken: dict[str, float] = {}  # run id -> when its followers were woken
        self._wake_later: dict[str, asyncio.TimerHandle] = {}

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
                delay, self._wake, run_id)
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
        writer knows the last record's time so the caller can skip what it has.
        Reads every record header of an existing log: see open_writer."""
        return LogWriter(self.path(run_id), self.max_log_bytes,
                         on_change=lambda: self.notify(run_id), engine_copy=self.engine_copy)

    async def open_writer(self, run_id: str) -> LogWriter:
        """writer(), scanning an existing log (after a restart) off the event loop."""
        try:
            existing = self.path(run_id).stat().st_size > 0
        except FileNotFoundError:
            existing = False
        if existing:
            return await asyncio.to_thread(self.writer, run_id)
        return self.writer(run_id)

    def delete(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._woken.pop(run_id, None)
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
                for record in _records(f, 0):
                    if record.offset >= before:
                        break
                    if stream is None or _stream_of(record) == stream:
                        last.append(record)
                return list(last)
            out: list[Record] = []
            for record in _records(f, after if after is not None else 0):
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
    per batch, so readers see each batch as soon as it is written.

    Opening a writer on an existing log prepares a resume, as prepare_resume()
    does for an open one: the engine's output is read again from `since_ns` (a
    margin before the newest record on disk, since stdout and stderr timestamps
    can be slightly out of order), and `seen()` tells which of the repeated chunks
    are already on disk, by their exact (time, stream). Past `max_bytes` of output
    (or what `engine_copy` holds) one marker line is written and the rest is
    dropped.
    """

    def __init__(self, path: Path, max_bytes: int,
                 on_change: Callable[[], None] | None = None,
                 engine_copy: EngineCopy | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.engine_copy = engine_copy
        self._on_change = on_change
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
        self.open_error: OSError | None = None
        try:
            self._f: BinaryIO | None = open(path, "a+b")
        except OSError as e:  # e.g. disk full: write() reports it, once, to the caller
            self._f, self.open_error = None, e
            return
        end = 0
        per_line, per_piece = (engine_copy.per_line, engine_copy.per_piece) if engine_copy \
            else (0, 0)
        recent: deque[tuple[int, int]] = deque()  # (time, offset), pruned as in append()
        for offset, stream, ts_ns, block, start, stop in _frames(self._f, 0):
            end = stop - start + offset + HEADER.size
            if stream == MARKER:
                if block[start:stop].startswith(_LIMIT_NOTE):
                    self.truncated = True
                continue
            length = stop - start
            self.output_bytes += length
            self.engine_bytes += length + (
                per_line if length and block[stop - 1] == 0x0A else per_piece)
            if ts_ns > self._newest:
                self._newest = ts_ns
            recent.append((ts_ns, offset))
            while recent and recent[0][0] < self._newest - RESUME_MARGIN_NS:
                recent.popleft()
        self._f.truncate(end)  # drop a torn record left by a crash
        self._f.seek(end)
        self._end = end
        if recent:
            self._batches.append((recent[0][1], self._newest))
        self.prepare_resume()

    def prepare_resume(self) -> None:
        """Get ready for the engine to send the output again from `since_ns`: after
        its stream broke, or for the last read after the container exited. Reads
        only the log's last records (may run in a thread: no write meanwhile)."""
        self._on_disk.clear()
        if not self._newest or self._f is None:
            self.since_ns = 0
            return
        self.since_ns = max(1, self._newest - RESUME_MARGIN_NS)
        if not self._batches:
            return
        with open(self.path, "rb") as f:
            for offset, stream, ts_ns, _, _, _ in _frames(f, self._batches[0][0]):
                if offset >= self._end:
                    break
                if stream != MARKER and ts_ns >= self.since_ns:
                    self._on_disk[(ts_ns, stream)] += 1

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
        newest = 0
        parts: list[bytes | memoryview] = []
        for stream, ts_ns, data in records:
            if on_disk and self.seen(ts_ns, stream):
                continue
            n = len(data)
            cost = n + (per_line if n and data[n - 1] == 0x0A else per_piece)
            if output + n > max_bytes or (max_stored >= 0 and stored + cost > max_stored):
                note = self._limit_note(output, over_engine_copy=output + n <= max_bytes)
                parts += (pack(MARKER, ts_ns, len(note)), note)
                self.truncated = True
                break
            output += n
            stored += cost
            if ts_ns > newest:
                newest = ts_ns
            parts += (pack(stream, ts_ns, n), data)
        self.output_bytes, self.engine_bytes = output, stored
        if newest:
            self._track(newest)
        self._append(parts)

    def note(self, text: str) -> None:
        """Append a note from runnerd (a MARKER record, shown as text)."""
        if self.failed or self.truncated or self._f is None:
            return
        data = f"[runnerd] {text}\n".encode()
        self._append([HEADER.pack(MARKER, time.time_ns(), len(data)), data])

    def _limit_note(self, output: int, *, over_engine_copy: bool) -> bytes:
        if not over_engine_copy:
            return (_LIMIT_NOTE + f" of {self.max_bytes} bytes reached; further output of "
                    "this run is dropped\n".encode())
        assert self.engine_copy is not None
        return (_LIMIT_NOTE + f" of the engine reached after {output} bytes of "
                f"output: the engine keeps {self.engine_copy.max_bytes} bytes of a run's "
                f"output, counting up to {self.engine_copy.per_line} bytes more for each "
                "line, so many short lines fill it first; further output of this run is "
                "dropped\n".encode())

    def _track(self, newest: int) -> None:
        """Remember where this batch starts, for prepare_resume()."""
        if newest > self._newest:
            self._newest = newest
        self._batches.append((self._end, newest))
        while self._batches and self._batches[0][1] < self._newest - RESUME_MARGIN_NS:
            self._batches.popleft()

    def _append(self, parts: list[bytes | memoryview]) -> None:
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


_LIMIT_NOTE = b"[runnerd] log limit"


def _frames(f: BinaryIO, offset: int) -> Iterator[tuple[int, int, int, bytes, int, int]]:
    """(offset, stream, ts, block, start, stop) of each complete record from
    `offset` (a record boundary), its payload being block[start:stop]. The file
    is read in large blocks, not a read per record; a torn record at the end
    (still being written, or cut by a crash) ends the iteration."""
    f.seek(offset)
    block = f.read(_BLOCK)
    pos = 0
    while True:
        if pos + HEADER.size <= len(block):
            stream, ts_ns, length = HEADER.unpack_from(block, pos)
            stop = pos + HEADER.size + length
            if stop <= len(block):
                yield offset, stream, ts_ns, block, pos + HEADER.size, stop
                offset += stop - pos
                pos = stop
                continue
            need = stop - len(block)
        else:
            need = HEADER.size
        more = f.read(max(_BLOCK, need))
        if not more:
            return
        block = block[pos:] + more
        pos = 0


def _records(f: BinaryIO, offset: int) -> Iterator[Record]:
    """Records from `offset` (a record boundary); see _frames."""
    for at, stream, ts_ns, block, start, stop in _frames(f, offset):
        yield Record(stream, ts_ns, block[start:stop], at)


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
    for record in _records(f, 0):
        data = record.data
        if not data:
            continue
        i = data.find(b"\n")
        while i != -1:
            if i + 1 < len(data):
                starts.append((record.offset, i + 1))
            else:  # the next line starts in the next record
                starts.append((record.offset + HEADER.size + len(data), 0))
            i = data.find(b"\n", i + 1)
        ends_with_newline = data.endswith(b"\n")
    if ends_with_newline:
        starts.pop()  # the empty "line" after the final newline
    return starts[0] if len(starts) <= lines else starts[-lines]
