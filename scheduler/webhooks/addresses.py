"""Where a webhook may be delivered: a globally routable address, unless allowed by name.

The host is resolved once and the connection made to the address checked (no second
resolution, so DNS rebinding cannot swap in a private one). IPv4-mapped, NAT64 and
6to4 forms are unwrapped before the check, and CGNAT (100.64.0.0/10) is not public.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from core.errors import AtomfleetError

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class RefusedAddress(AtomfleetError):
    """The webhook's host is (or resolves to) an address that is not public."""


class Unresolved(AtomfleetError):
    """The host name does not resolve (now): worth another attempt later."""


def unwrap(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def is_public(address: str) -> bool:
    ip = unwrap(ipaddress.ip_address(address))
    return ip.is_global and ip not in _CGNAT and not ip.is_multicast


def resolve(host: str, port: int, allowed: Iterable[str]) -> str:
    """The address to connect to for `host`; RefusedAddress when it is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unresolved(f"cannot resolve {host}: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise Unresolved(f"{host} has no address")
    allowed = set(allowed)
    if host in allowed or all(a in allowed for a in addresses):
        return addresses[0]
    private = [a for a in addresses if not is_public(a)]
    if private:
        raise RefusedAddress(f"{host} resolves to a non-public address ({private[0]})")
    return addresses[0]
