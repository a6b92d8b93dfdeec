"""One node per data dir: an exclusive flock on `<data_dir>/herald.lock`, held while the embedded backends are open.

Two nodes on one data dir would each take the bus, the Scheduler's entries and the
idempotency records for their own; the second is refused before it reads or writes
anything. The kernel drops the lock with the process (kill -9 included), so a crashed
node never leaves a stale one behind. The file holds the holder's pid, for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from reactor.backends import BackendUnavailable
from reactor.files import PRIVATE_DIR, PRIVATE_FILE, write_all

LOCK_FILE = "herald.lock"


def lock_data_dir(data_dir: Path) -> int:
    """Take the data dir's lock (blocking I/O, quick: call it through trio.to_thread); returns the fd
    that holds it (close it to release). BackendUnavailable if another process holds it."""
    data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        process = f" (pid {holder})" if holder.isdigit() else ""
        raise BackendUnavailable(
            f"the data dir {data_dir.resolve()} is in use by another Herald{process}: two nodes cannot share "
            "the embedded backends; stop that one, or give this one a data dir of its own "
            "(HERALD_DATA_DIR, `data_dir` in the config file, or --data-dir)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        write_all(fd, f"{os.getpid()}\n".encode())
    except BaseException:
        os.close(fd)
        raise
    return fd
