"""The SSRF guard of outbound requests to URLs users give (the webhook channel).

A user's webhook URL must not make Herald reach what only Herald can reach: its own
loopback, the cloud's metadata service (169.254.169.254), the private network. The guard
is where the HTTP/1.1 pool opens a TCP connection (`Guard.connect`, the pool's connect function,
actors/clients/http1.py): the host name is resolved once, every address it resolves to is
checked, and the connection goes to a checked address, so a name that resolves to a public
address for the check and to 127.0.0.1 for the connection (DNS rebinding) gains nothing. TLS
and the Host header still carry the URL's name (the pool starts TLS on the stream with the
URL's host as the server name), so certificates are checked against the name, not the address.

Refused (unless inside an allowed CIDR of the provider's `allow_cidrs`): loopback,
link-local, private (RFC 1918, IPv6 ULA), shared/CGNAT (100.64.0.0/10), multicast,
unspecified, reserved and every other non-global range of the IANA special-purpose
registries (Python's `ipaddress`), and an IPv6 address embedding one of those
(IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

import trio

from .http_errors import ConnectError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]  # (host, port) -> the addresses it resolves to
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


class ForbiddenAddress(ConnectError):
    """The URL's host is, or resolves to, an address outbound requests may not reach: no connection was made."""


def parse_cidrs(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The allowed networks (ValueError naming the one that is not a CIDR)."""
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"expected a CIDR such as 127.0.0.1/32 or fd00::/8, got {value!r}") from None
    return tuple(networks)


def _kind(ip: IPAddress) -> str | None:
    """Why `ip` is not a public unicast address, or None if it is one."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared address space (CGNAT)"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def _embedded(ip: IPAddress) -> IPAddress | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4), which is where it leads."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


def address_problem(address: str, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why a request may not go to `address` (an IP address as text), or None if it may."""
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) is link-local anyway
    except ValueError:
        return f"{address!r} is not an IP address"
    if any(ip in network for network in allowed if network.version == ip.version):
        return None
    kind = _kind(ip)
    inner = _embedded(ip)
    if kind is None and inner is not None:
        kind = _kind(inner)
        if kind is not None and any(inner in network for network in allowed if network.version == 4):
            kind = None
    return f"{address} is {kind}" if kind is not None else None


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses of `host` from the system's resolver (getaddrinfo, in a thread), in its order, without repeats."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Guard:
    """Opens TCP connections to checked addresses only (the module's docstring): the HTTP/1.1 pool's connect function."""

    def __init__(self, allowed: Sequence[IPNetwork] = (), resolver: Resolver | None = None) -> None:
        self.allowed = tuple(allowed)
        self.resolver = resolver or system_resolver
        self.refused = 0  # connections refused for their address

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        """Every address `host` resolves to, all allowed (else ForbiddenAddress naming the first refused)."""
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise ConnectError(f"{host} resolves to no address")
        for address in addresses:
            problem = address_problem(address, self.allowed)
            if problem is not None:
                self.refused += 1
                shown = "" if address == host.strip("[]") else f"{host} resolves to "
                raise ForbiddenAddress(f"refused: {shown}{problem} (not an allowed destination for webhooks)")
        return addresses

    async def connect(self, host: str, port: int) -> trio.SocketStream:
        """A connection to the first checked address that answers, in the resolver's order; never the name again.
        The pool bounds the whole (resolving included) by its connect timeout."""
        failure: OSError | None = None
        for address in await self.checked_addresses(host, port):
            try:
                return await trio.open_tcp_stream(address, port)
            except OSError as exc:
                failure = exc
        assert failure is not None
        raise failure
