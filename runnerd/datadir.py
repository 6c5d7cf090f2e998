"""One daemon per data directory.

Two `runnerd serve` on one data directory would both reconcile the same runs and
adopt each other's containers. `runnerd serve` therefore takes an exclusive
`flock` on `<data_dir>/runnerd.lock` (which holds its pid, for the message the
next one prints) before it opens anything there, and keeps it for the life of the
process: the kernel drops it however the process ends, kill -9 included, so a
restart after a crash needs no clean-up. CLI commands (`runnerd keys ...`) do not
take it: they may run beside the daemon.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "runnerd.lock"

_held: dict[Path, int] = {}  # data dir → the open descriptor that holds its lock


class DataDirInUse(OSError):
    """Another process holds the data directory's lock; the message names both."""


def lock(data_dir: Path) -> None:
    """Hold `data_dir`'s lock until this process exits; DataDirInUse when another
    process holds it."""
    data_dir = data_dir.resolve()
    if data_dir in _held:
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    # No O_TRUNC: the pid of the process that holds the lock must stay readable.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUse(
            f"the data directory {data_dir} is in use by another runnerd (pid {owner}, "
            f"holding {path}); stop it first, or give this one another [storage] data_dir"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[data_dir] = fd
