"""Who the client is: the peer's address, or, when the peer is a trusted proxy, the address it forwarded.

X-Forwarded-For is believed only from the proxies named in trusted_proxies: anyone can send the header,
so from anyone else it is ignored. Read from the right, the first address that is not a trusted proxy
is the client (each proxy appends the address it saw; a client's own entries are on the left).
"""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def networks(trusted_proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(request: web.Request, trusted_proxies: tuple[str, ...]) -> str:
    peer = request.remote or "-"
    trusted = networks(trusted_proxies)
    if not trusted or not _trusted(peer, trusted):
        return peer
    forwarded = [part.strip() for value in request.headers.getall("X-Forwarded-For", []) for part in value.split(",")]
    for address in reversed(forwarded):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return "-"  # only an address: a header is no place for anything else to reach the log
        if not any(ip in network for network in trusted):
            return address
    return peer
