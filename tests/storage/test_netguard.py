"""The connect-time guard: address rules and resolve-once-then-pin (no DNS, no network)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import httpcore
import pytest

from storage.errors import BlockedURL
from storage.netguard import GuardedBackend, forbidden_reason
from tests.storage.helpers import stub_resolver

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "private"),
        ("198.18.0.1", "private"),
        ("192.0.0.8", "IETF protocol assignment"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "private"),
        ("::ffff:127.0.0.1", "loopback (embedded in ::ffff:7f00:1)"),
        ("64:ff9b::7f00:1", "loopback (embedded in 64:ff9b::7f00:1)"),
        ("2002:7f00:1::", "loopback (embedded in 2002:7f00:1::)"),
        ("::127.0.0.1", "reserved"),
        ("2001:db8::1", "private"),
        ("fe80::1%eth0", "link-local"),
        ("fec0::1", "site-local (deprecated)"),
        ("fec0:1::1", "site-local (deprecated)"),
        ("feff::1", "site-local (deprecated)"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "private"),  # Teredo
        ("192.88.99.1", "6to4 relay anycast"),
        ("ff02::1", "multicast"),
        ("::ffff:169.254.169.254", "link-local (embedded in ::ffff:a9fe:a9fe)"),
        ("2002:a00:1::", "private (embedded in 2002:a00:1::)"),  # 6to4 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_forbidden(address: str, reason: str) -> None:
    assert forbidden_reason(address) == reason


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(address) is None


def test_allowed_networks_exempt_only_themselves() -> None:
    allowed = [ipaddress.ip_network("127.0.0.1/32")]
    assert forbidden_reason("127.0.0.1", allowed=allowed) is None
    assert forbidden_reason("127.0.0.2", allowed=allowed) == "loopback"


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Stands in for the socket layer: records where connections were opened."""

    def __init__(self, refuse: Iterable[str] = ()) -> None:
        self.connected: list[str] = []
        self._refuse = set(refuse)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore backend API)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append(host)
        if host in self._refuse:
            raise httpcore.ConnectError(f"refused by {host}")
        return httpcore.AsyncMockStream([])

    async def sleep(self, seconds: float) -> None:
        return None


async def test_connects_to_the_validated_address_not_the_name() -> None:
    inner = RecordingBackend()
    calls: list[str] = []
    guard = GuardedBackend(inner, resolver=stub_resolver({"cdn.example": ["93.184.216.34"]}, calls))
    await guard.connect_tcp("cdn.example", 443, timeout=1)
    assert inner.connected == ["93.184.216.34"]
    assert calls == ["cdn.example"]  # resolved exactly once


async def test_dns_rebinding_is_caught_on_the_next_connection() -> None:
    """A name that answered public first and private later is refused the second time."""
    answers: list[Sequence[str]] = [["93.184.216.34"], ["10.0.0.7"]]

    async def rebinding(host: str, port: int) -> Sequence[str]:
        return answers.pop(0)

    inner = RecordingBackend()
    guard = GuardedBackend(inner, resolver=rebinding)
    await guard.connect_tcp("rebind.example", 443, timeout=1)
    with pytest.raises(BlockedURL, match=r"rebind\.example resolves to 10\.0\.0\.7"):
        await guard.connect_tcp("rebind.example", 443, timeout=1)
    assert inner.connected == ["93.184.216.34"]


async def test_any_forbidden_answer_refuses_the_whole_name() -> None:
    inner = RecordingBackend()
    table = {"mixed.example": ["93.184.216.34", "169.254.169.254"]}
    guard = GuardedBackend(inner, resolver=stub_resolver(table))
    with pytest.raises(BlockedURL, match="link-local"):
        await guard.connect_tcp("mixed.example", 443, timeout=1)
    assert inner.connected == []


async def test_ip_literals_skip_the_resolver_but_not_the_check() -> None:
    calls: list[str] = []
    guard = GuardedBackend(RecordingBackend(), resolver=stub_resolver({}, calls))
    with pytest.raises(BlockedURL, match=r"^10\.0\.0\.1 is not a public address \(private\)"):
        await guard.connect_tcp("10.0.0.1", 443, timeout=1)
    assert calls == []


async def test_next_address_is_tried_when_one_refuses() -> None:
    inner = RecordingBackend(refuse={"93.184.216.34"})
    table = {"cdn.example": ["93.184.216.34", "93.184.216.35"]}
    guard = GuardedBackend(inner, resolver=stub_resolver(table))
    await guard.connect_tcp("cdn.example", 443, timeout=1)
    assert inner.connected == ["93.184.216.34", "93.184.216.35"]


async def test_resolution_failures_are_connect_errors() -> None:
    guard = GuardedBackend(RecordingBackend(), resolver=stub_resolver({"empty.example": []}))
    with pytest.raises(httpcore.ConnectError, match=r"cannot resolve nxdomain\.example"):
        await guard.connect_tcp("nxdomain.example", 443, timeout=1)
    with pytest.raises(httpcore.ConnectError, match="resolves to no address"):
        await guard.connect_tcp("empty.example", 443, timeout=1)


async def test_unix_sockets_are_refused() -> None:
    guard = GuardedBackend(RecordingBackend())
    with pytest.raises(BlockedURL, match="Unix sockets"):
        await guard.connect_unix_socket("/var/run/docker.sock")
