"""Durable, private file writes, for the embedded backends and the sandbox clients.

Everything a node keeps is private to the user it runs as: `private_umask()` at start-up
(the node and the offline CLI) makes every file created afterwards 0600 and every folder
0700 whoever creates it (SQLite and its WAL/SHM, bus segments, sandbox files), and
`private_dir()` makes the data directory 0700, tightening what an older version left
readable. `write_atomically` creates its files 0600 itself, whatever the umask.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def write_all(fd: int, data: bytes | bytearray) -> None:
    """Write all of `data`, however many os.write calls it takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new, renamed or deleted file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_umask() -> None:
    """From now on this process creates files 0600 and folders 0700 (unless a caller asks for less)."""
    os.umask(0o077)


def private_dir(path: Path) -> None:
    """Make `path` (and its parents if needed) a folder only its owner can enter. If it was not (a data
    dir of an older version, or opened up by hand), drop the group and other bits of everything in it."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if os.stat(path).st_mode & 0o777 == PRIVATE_DIR:
        return  # private already, and whatever this process made in it since was made private
    os.chmod(path, PRIVATE_DIR)
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            entry = os.path.join(folder, name)
            mode = os.lstat(entry).st_mode
            if mode & 0o077 and not os.path.islink(entry):
                os.chmod(entry, mode & 0o700)


def write_atomically(path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Replace `path` with `data` all at once, durably: a crash leaves the old file or the new one.

    The new file has `mode` (0600 by default) from its creation on, never wider.
    """
    write_files_atomically([(path, data)], mode)


def write_files_atomically(files: Sequence[tuple[Path, bytes]], mode: int = PRIVATE_FILE) -> None:
    """`write_atomically` for many files at once: each is staged (written and synced), then all are
    renamed into place, then each folder they are in is synced once (one folder sync for the lot).

    A crash leaves each file old or new; when the call returns, every one is new and durable.
    A caller in Trio may stage the files from several threads at once (`stage_file`, then
    `install_files`; `discard_staged` if one fails): concurrent fsyncs share the disk's flushes.
    """
    staged: list[Path] = []
    try:
        for path, data in files:
            staged.append(stage_file(path, data, mode))
    except BaseException:
        discard_staged(staged)
        raise
    install_files([path for path, _ in files])


def staged_path(path: Path) -> Path:
    """Where `stage_file` writes `path`'s next content."""
    return path.with_name(path.name + ".tmp")


def stage_file(path: Path, data: bytes, mode: int = PRIVATE_FILE, sync: bool = True) -> Path:
    """Write `data` beside `path` (its staged file) and sync it; `install_files` puts it in place. The staged file.

    `sync=False` leaves the sync to the caller: `sync_filesystem` once for many staged files, before `install_files`.
    """
    tmp = staged_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # a stale .tmp left by a crash keeps its old mode through O_TRUNC
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        discard_staged([tmp])
        raise
    os.close(fd)
    return tmp


def _syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2) from the C library, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        syncfs: Callable[[int], int] = libc.syncfs
        return syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _syncfs()
CAN_SYNC_FILESYSTEM = _SYNCFS is not None


def sync_filesystem(folder: Path) -> None:
    """Make every file written on `folder`'s filesystem durable with one call (Linux syncfs(2)): one journal
    commit for a batch of files instead of one fsync each. It also flushes what other writers left dirty on that
    filesystem, so it waits for them too. OSError if the sync fails (a write-back error since Linux 5.8)."""
    if _SYNCFS is None:
        raise OSError(errno.ENOSYS, "syncfs is not available here")
    fd = os.open(folder, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs {folder}: {os.strerror(code)}")
    finally:
        os.close(fd)


def install_files(paths: Sequence[Path]) -> None:
    """Rename each path's staged file into place, then sync each folder once."""
    for path in paths:
        os.replace(staged_path(path), path)
    for folder in dict.fromkeys(path.parent for path in paths):
        fsync_dir(folder)


def discard_staged(staged: Sequence[Path]) -> None:
    """Remove staged files that will not be installed (those already gone are fine)."""
    for tmp in staged:
        try:
            os.unlink(tmp)
        except OSError:
            pass
