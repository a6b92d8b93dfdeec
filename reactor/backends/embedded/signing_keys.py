"""The embedded SigningKeyStore: the token-signing key ring in `<data_dir>/signing-keys.json`, 0600, nothing else in it.

    {"version": 1, "current": "<kid>", "keys": [{"kid": "...", "secret": "<hex>", "created_ms": n}, ...]}

A file of its own, not a row in a database other data shares, so that the secrets are
exactly as readable as this one file, and so that `herald keys rotate-secret --offline`
can rewrite it with no server. Written atomically (reactor/files.py), so a crash leaves
the old ring or the new one. `read_signing_keys` and `write_signing_keys` block;
`SigningKeyFile` (the port) calls them through trio.to_thread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import trio

from protocol.keys import SigningKey

from reactor.files import write_atomically

FORMAT_VERSION = 1


class SigningKeysFileError(ValueError):
    """The file exists but is not a key ring this version can read."""


def read_signing_keys(path: Path) -> tuple[list[SigningKey], str] | None:
    """(keys oldest first, the current kid) from the file; None if there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        document = json.loads(raw)
        if document.get("version") != FORMAT_VERSION:
            raise SigningKeysFileError(f"{path}: unknown format version {document.get('version')!r}")
        keys = [SigningKey(str(k["kid"]), bytes.fromhex(k["secret"]), int(k["created_ms"])) for k in document["keys"]]
        current = str(document["current"])
    except SigningKeysFileError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SigningKeysFileError(f"{path}: not a signing key ring ({exc})") from None
    if not keys or current not in {k.kid for k in keys} or len({k.kid for k in keys}) != len(keys):
        raise SigningKeysFileError(f"{path}: the current key {current!r} must be one of its keys, each kid once")
    return keys, current


def write_signing_keys(path: Path, keys: list[SigningKey], current: str) -> None:
    """Replace the file with this ring, durably, 0600."""
    document = {
        "version": FORMAT_VERSION,
        "current": current,
        "keys": [{"kid": k.kid, "secret": k.secret.hex(), "created_ms": k.created_ms} for k in keys],
    }
    write_atomically(path, json.dumps(document, indent=1).encode() + b"\n")


class SigningKeyFile:
    """The SigningKeyStore port on one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def read_ring(self) -> tuple[list[SigningKey], str] | None:
        return await trio.to_thread.run_sync(read_signing_keys, self.path)

    async def write_ring(self, keys: Sequence[SigningKey], current: str) -> None:
        await trio.to_thread.run_sync(write_signing_keys, self.path, list(keys), current)
