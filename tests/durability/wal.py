"""Count the transactions SQLite committed to a WAL file: each is one fsync of the WAL under synchronous=FULL.

A WAL frame's header holds, at bytes 4-7, the database size after the commit for the last
frame of a transaction and 0 for the others; frames whose salts differ from the file
header's are left over from before a checkpoint reset and do not count. Reading the file
counts what SQLite really did, whatever the code above it believes.
"""

from __future__ import annotations

import struct
from pathlib import Path

_WAL_HEADER = 32
_FRAME_HEADER = 24


def wal_commits(db_path: Path) -> int:
    """How many transactions the WAL of `db_path` holds (0 if it has none)."""
    wal = db_path.with_name(db_path.name + "-wal")
    if not wal.exists():
        return 0
    data = wal.read_bytes()
    if len(data) < _WAL_HEADER:
        return 0
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    commits, offset = 0, _WAL_HEADER
    while offset + _FRAME_HEADER + page_size <= len(data):
        header = data[offset : offset + _FRAME_HEADER]
        if header[8:16] != salts:
            break
        if struct.unpack(">I", header[4:8])[0] != 0:
            commits += 1
        offset += _FRAME_HEADER + page_size
    return commits
