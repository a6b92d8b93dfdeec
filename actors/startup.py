"""What a failed start says: one line naming the cause and the setting that changes it.

A node that cannot start (its port taken, its data dir unusable, a package missing)
fails deep inside the supervision tree, so the error reaches the CLI wrapped in nested
ExceptionGroups, one per nursery. `explain` walks them to the error that matters and
says it in one line; an error it does not recognise is a bug, and keeps its traceback.
"""

from __future__ import annotations

import errno
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time this module imports the standard library only (it reports a missing package)
    from .config import Config

OWN_PACKAGES = frozenset({"actors", "protocol", "reactor"})
INSTALL_HINT = (
    "install Herald's dependencies: `make run` does, or `pip install --require-hashes -r requirements/run.txt` "
    "then `pip install --no-deps -e .`"
)
_PORT_SETTING = "set HERALD_PORT (or `port` in the config file, or --port)"
_HOST_SETTING = "set HERALD_HOST (or `host` in the config file, or --host)"
_DATA_SETTING = "set HERALD_DATA_DIR (or `data_dir` in the config file, or --data-dir) to a writable directory"
# sqlite3's words for a database file it cannot open or write
_SQLITE_FILE_ERRORS = ("unable to open database file", "readonly database", "disk i/o error", "database or disk is full")


def leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, depth first; an exception that is not a group is its own leaf."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


def missing_dependency(error: ModuleNotFoundError) -> str | None:
    """One line for a package that is not installed; None if the missing module is Herald's own (a bug)."""
    top = (error.name or "").partition(".")[0]
    if not top or top in OWN_PACKAGES:
        return None
    return f"a required package is missing: {top} ({error}); {INSTALL_HINT}"


def explain(error: BaseException, config: Config) -> str | None:
    """One line for an error that stopped the node from starting, or None when it is not one Herald knows."""
    for leaf in leaves(error):
        message = _explain_one(leaf, config)
        if message is not None:
            return message
    return None


def _address(config: Config) -> str:
    host = str(config.host)
    return f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"


def _explain_one(error: BaseException, config: Config) -> str | None:
    from reactor.backends import BackendUnavailable  # the standard library only, as this module

    from .config import ConfigError  # loaded already: `config` came from it
    data_dir = config.data_dir.resolve()
    if isinstance(error, ModuleNotFoundError):
        return missing_dependency(error)
    if isinstance(error, BackendUnavailable):  # its message says why and what to change (a data dir in use)
        return str(error)
    if isinstance(error, ConfigError):  # a setting the node refused at start (its role)
        return f"configuration error: {error}"
    if isinstance(error, socket.gaierror):
        return f"cannot listen on {_address(config)}: the host {config.host!r} is not known ({error.strerror}); {_HOST_SETTING}"
    if isinstance(error, OSError) and error.filename is None:  # the listening socket's (a file's error names the file)
        if error.errno == errno.EADDRINUSE:
            return f"cannot listen on {_address(config)}: the address is already in use (another Herald?); {_PORT_SETTING} to a free port"
        if error.errno == errno.EADDRNOTAVAIL:
            return f"cannot listen on {_address(config)}: no such address on this machine; {_HOST_SETTING}"
        if error.errno in (errno.EACCES, errno.EPERM):
            return f"cannot listen on {_address(config)}: permission denied (ports below 1024 need privileges); {_PORT_SETTING}"
    if isinstance(error, OSError) and error.filename is not None:
        path = Path(error.filename).resolve()
        if path == data_dir or data_dir in path.parents:
            return f"the data dir {data_dir} cannot be used: {error.strerror or error}: {error.filename}; {_DATA_SETTING}"
        return f"cannot start: {error.strerror or error}: {error.filename}"
    if isinstance(error, sqlite3.OperationalError) and any(words in str(error).lower() for words in _SQLITE_FILE_ERRORS):
        return f"the data dir {data_dir} cannot be used: a database in it: {error}; {_DATA_SETTING}"
    return None
