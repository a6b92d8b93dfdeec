"""The embedded SigningKeyStore: the token-signing key ring in `<data_dir>/signing-keys.json`, 0600, nothing else in it.

    {"version": 1, "generation": 3, "current": "<kid>", "keys": [{"kid": "...", "secret": "<hex>", "created_ms": n}, ...]}

A file of its own, not a row in a database other data shares, so that the secrets are
exactly as readable as this one file, and so that `herald keys rotate-secret --offline`
can rewrite it with no server. This file *is* the embedded backend's shared Store for
the ring: it serves the one node of its data dir and the offline CLI. `version` is the
file format; `generation` the ring's version (KeyRing.version; a file from before it has
none and counts as 1). Written atomically (reactor/files.py), so a crash leaves the old ring
or the new one; a write is compare-and-set under an exclusive flock of
`signing-keys.json.lock`, so two writers (the node and the CLI, or two SigningKeyFiles)
never lose each other's change. `read_signing_keys` and `write_signing_keys` block;
`SigningKeyFile` (the port) calls them through trio.to_thread.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path

import trio

from protocol.keys import SigningKey
from reactor.files import PRIVATE_FILE, write_atomically
from reactor.ports import KeyRing

FORMAT_VERSION = 1


class SigningKeysFileError(ValueError):
    """The file exists but is not a key ring this version can read."""


def read_signing_keys(path: Path) -> KeyRing | None:
    """The ring in the file; None if there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        document = json.loads(raw)
        if document.get("version") != FORMAT_VERSION:
            raise SigningKeysFileError(f"{path}: unknown format version {document.get('version')!r}")
        keys = tuple(SigningKey(str(k["kid"]), bytes.fromhex(k["secret"]), int(k["created_ms"])) for k in document["keys"])
        current = str(document["current"])
        generation = document.get("generation", 1)
        if type(generation) is not int or generation < 1:
            raise SigningKeysFileError(f"{path}: the generation must be a whole number from 1, got {generation!r}")
    except SigningKeysFileError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SigningKeysFileError(f"{path}: not a signing key ring ({exc})") from None
    if not keys or current not in {k.kid for k in keys} or len({k.kid for k in keys}) != len(keys):
        raise SigningKeysFileError(f"{path}: the current key {current!r} must be one of its keys, each kid once")
    return KeyRing(keys, current, generation)


def write_signing_keys(path: Path, keys: Sequence[SigningKey], current: str, expected_version: int | None) -> KeyRing | None:
    """Replace the file with this ring, durably, 0600, if the ring in it is still at `expected_version`
    (None: only if there is no file); the ring written, or None (nothing written) if it is not."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time, in any process; readers need no lock (atomic replace)
        found = read_signing_keys(path)
        if (None if found is None else found.version) != expected_version:
            return None
        ring = KeyRing(tuple(keys), current, 1 if found is None else found.version + 1)
        document = {
            "version": FORMAT_VERSION,
            "generation": ring.version,
            "current": current,
            "keys": [{"kid": k.kid, "secret": k.secret.hex(), "created_ms": k.created_ms} for k in keys],
        }
        write_atomically(path, json.dumps(document, indent=1).encode() + b"\n")
        return ring
    finally:
        os.close(fd)  # releases the lock


class SigningKeyFile:
    """The SigningKeyStore port on one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def read_ring(self) -> KeyRing | None:
        return await trio.to_thread.run_sync(read_signing_keys, self.path)

    async def write_ring(self, keys: Sequence[SigningKey], current: str, expected_version: int | None) -> KeyRing | None:
        return await trio.to_thread.run_sync(write_signing_keys, self.path, list(keys), current, expected_version)
