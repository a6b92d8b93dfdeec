"""The Cassandra backend's URL: where the cluster is, which keyspace, how it replicates, what consistency.

    cassandra://host:port[,host:port...]/keyspace[?replication=...&consistency=...&local_dc=...&ttl_days=...&timeout_s=...]

- hosts: contact points (the port defaults to 9042); the driver discovers the other nodes from them.
- keyspace: created if missing (letters, digits and _, starting with a letter, 48 at most).
- replication: `3` (SimpleStrategy, factor 3) or `dc1:3,dc2:2` (NetworkTopologyStrategy, a factor per
  data centre); used only when the keyspace is created. Default `1`: a single node.
- consistency: of every read and write (LOCAL_QUORUM by default; ONE, LOCAL_ONE, QUORUM, EACH_QUORUM,
  ALL, TWO, THREE); the conditional writes' Paxos phase runs at LOCAL_SERIAL (SERIAL with
  EACH_QUORUM or ALL).
- local_dc: the data centre whose nodes the driver prefers (default: that of the first contact point).
- ttl_days: how long every row lives (the tables' default_time_to_live; default 365: the seed's year of
  logs); used when the tables are created.
- timeout_s: a request's deadline (default 5); a call past it fails with BackendUnavailable.

Pure: parsing only, no driver import (the configuration checks URLs with it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

CONSISTENCIES = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")
_KEYSPACE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
_DC = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_OPTIONS = ("replication", "consistency", "local_dc", "ttl_days", "timeout_s")


@dataclass(frozen=True)
class CassandraUrl:
    hosts: tuple[tuple[str, int], ...]
    keyspace: str
    replication: dict[str, int]  # {"class": ...} rendered by replication_cql(); {"": n} for SimpleStrategy
    consistency: str = "LOCAL_QUORUM"
    local_dc: str | None = None
    ttl_days: int = 365
    timeout_s: float = 5.0

    def replication_cql(self) -> str:
        """The keyspace's replication map, as CQL."""
        if "" in self.replication:
            return f"{{'class': 'SimpleStrategy', 'replication_factor': {self.replication['']}}}"
        dcs = ", ".join(f"'{dc}': {n}" for dc, n in self.replication.items())
        return f"{{'class': 'NetworkTopologyStrategy', {dcs}}}"

    @property
    def serial_consistency(self) -> str:
        return "SERIAL" if self.consistency in ("EACH_QUORUM", "ALL", "QUORUM") else "LOCAL_SERIAL"

    def where(self) -> str:
        """The URL without its options, for messages."""
        return "cassandra://" + ",".join(f"{h}:{p}" for h, p in self.hosts) + "/" + self.keyspace


def _replication(text: str) -> dict[str, int]:
    if text.isdigit():
        factor = int(text)
        if not 1 <= factor <= 99:
            raise ValueError(f"replication must be 1-99, got {text!r}")
        return {"": factor}
    out: dict[str, int] = {}
    for part in text.split(","):
        dc, sep, n = part.partition(":")
        if not sep or not _DC.fullmatch(dc) or not n.isdigit() or not 1 <= int(n) <= 99:
            raise ValueError(f"replication is a factor (3) or data centres with factors (dc1:3,dc2:2), got {text!r}")
        out[dc] = int(n)
    return out


def parse_url(url: str) -> CassandraUrl:
    """The settings in a cassandra:// URL; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "cassandra":
        raise ValueError(f"not a cassandra:// URL: {url!r}")
    hosts: list[tuple[str, int]] = []
    for item in parts.netloc.split(","):
        host, sep, port = item.rpartition(":") if item.count(":") == 1 or item.startswith("[") else (item, "", "")
        host = host.strip("[]")
        if not host or (sep and not port.isdigit()) or "@" in item:
            raise ValueError(f"cassandra:// needs host:port contact points, got {parts.netloc!r} in {url!r}")
        number = int(port) if sep else 9042
        if not 1 <= number <= 65535:
            raise ValueError(f"port out of range in {url!r}")
        hosts.append((host, number))
    keyspace = parts.path.strip("/")
    if not _KEYSPACE.fullmatch(keyspace):
        raise ValueError(f"cassandra:// needs a keyspace (letters, digits, _; at most 48) after the hosts, got {keyspace!r} in {url!r}")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = set(query) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown cassandra:// options {sorted(unknown)}; the options are {', '.join(_OPTIONS)}")
    option = {name: values[-1] for name, values in query.items()}
    consistency = option.get("consistency", "LOCAL_QUORUM").upper()
    if consistency not in CONSISTENCIES:
        raise ValueError(f"consistency must be one of {', '.join(CONSISTENCIES)}, got {option['consistency']!r}")
    local_dc = option.get("local_dc") or None
    if local_dc is not None and not _DC.fullmatch(local_dc):
        raise ValueError(f"local_dc is a data centre's name, got {local_dc!r}")
    try:
        ttl_days = int(option.get("ttl_days", "365"))
        timeout_s = float(option.get("timeout_s", "5"))
    except ValueError:
        raise ValueError(f"ttl_days is a whole number of days and timeout_s a number of seconds, in {url!r}") from None
    if not 1 <= ttl_days <= 7300 or not 0.1 <= timeout_s <= 600:
        raise ValueError(f"ttl_days must be 1-7300 and timeout_s 0.1-600, in {url!r}")
    return CassandraUrl(
        tuple(hosts), keyspace, _replication(option.get("replication", "1")), consistency, local_dc, ttl_days, timeout_s,
    )
