"""Connect-time address guard: downloads reach public addresses only.

The check runs inside an httpcore *network backend*, the seam where a host name becomes a
socket: the name is resolved once, every answer is validated, and the socket is opened to the
validated IP literal (TLS still verifies the certificate against the host name, which httpcore
passes to ``start_tls`` separately). So the check covers every connection, including each
redirect hop and each new pooled connection, and a DNS answer cannot change between check and
connect (DNS rebinding). Checking URLs before the request would not: the name could resolve
differently a moment later.

`forbidden_reason` does not trust ``ipaddress.is_global`` alone: its answers differ between
3.11 patch releases and it calls multicast, NAT64- and IPv4-compatible forms of 127.0.0.1
"global". Embedded IPv4 addresses are unwrapped and re-checked; a small explicit deny list
covers what the flags miss.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import anyio
import httpcore

from storage.errors import BlockedURL

__all__ = [
    "ALLOW_PRIVATE_HINT",
    "GuardedBackend",
    "Network",
    "Resolver",
    "forbidden_reason",
    "is_ip_literal",
    "system_resolver",
]

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> IP literals``; injectable so tests can resolve names without DNS."""

ALLOW_PRIVATE_HINT = "POLLER_ALLOW_PRIVATE_DOWNLOADS=true permits private hosts and http"

# Each attempt gets the connect timeout; more addresses than this is not worth waiting for.
MAX_CONNECT_ATTEMPTS = 4

_DENY: tuple[tuple[Network, str], ...] = tuple(
    (ip_network(net), why)
    for net, why in (
        ("0.0.0.0/8", "'this network'"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("198.18.0.0/15", "benchmarking"),
        ("::/96", "IPv4-compatible IPv6 (deprecated)"),
        ("2001::/32", "Teredo"),
        # Deprecated (RFC 3879) but still routed inside some legacy networks; Python calls
        # it global (is_site_local is the only flag that knows).
        ("fec0::/10", "site-local (deprecated)"),
        ("fd00:ec2::254/128", "cloud metadata"),
    )
)
_NAT64 = ip_network("64:ff9b::/96")


def _embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, NAT64, 6to4), if any."""
    if isinstance(address, IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _flag_reason(address: IPAddress) -> str | None:
    flags = (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_unspecified, "unspecified"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "non-global"),
    )
    return next((why for flagged, why in flags if flagged), None)


def forbidden_reason(text: str, *, allowed: Iterable[Network] = ()) -> str | None:
    """Why ``text`` may not be connected to, or None when it is a public address.

    ``allowed`` networks are exempt (tests use it to reach a loopback server).
    """
    address = ip_address(text.split("%", 1)[0])
    if any(address in net for net in allowed if net.version == address.version):
        return None
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner = forbidden_reason(str(embedded), allowed=allowed)
        return f"{inner} (embedded in {address})" if inner else None
    flagged = _flag_reason(address)
    if flagged is not None and flagged != "non-global":
        return flagged
    for net, why in _DENY:
        if net.version == address.version and address in net:
            return why
    return flagged


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """All addresses the system resolver gives for ``host``, in its preference order."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_ip_literal(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, validates, then connects to the IP."""

    def __init__(
        self,
        inner: httpcore.AsyncNetworkBackend,
        *,
        resolver: Resolver = system_resolver,
        allowed: Iterable[Network] = (),
    ) -> None:
        self._inner = inner
        self._resolver = resolver
        self._allowed = tuple(allowed)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore backend API)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        self._check(host, addresses)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses[:MAX_CONNECT_ATTEMPTS]:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # addresses is never empty here
        raise failure

    async def _resolve(self, host: str, port: int, limit_s: float | None) -> Sequence[str]:
        if is_ip_literal(host):
            return [host]
        try:
            with anyio.fail_after(limit_s):
                addresses = await self._resolver(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        return addresses

    def _check(self, host: str, addresses: Sequence[str]) -> None:
        """Refuse the whole name if any answer is forbidden: mixed answers smell of rebinding."""
        for address in addresses:
            reason = forbidden_reason(address, allowed=self._allowed)
            if reason is None:
                continue
            subject = host if host == address else f"{host} resolves to {address}, which"
            raise BlockedURL(
                f"{subject} is not a public address ({reason}); downloads may only reach "
                f"public addresses ({ALLOW_PRIVATE_HINT})"
            )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore backend API)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedURL("downloads never use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
