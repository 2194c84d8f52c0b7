"""The bench's link: --link parsing, the user-space relay (delay, rate, order, back-pressure), and the kernel
link (a namespace, a veth pair and tbf) built and torn down."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time

import pytest

from streaming_api.bench.link import (
    NAMESPACE_PREFIX,
    Built,
    KernelLink,
    RelayProcess,
    kernel_shaping_available,
    remove_stale_namespaces,
)
from streaming_api.bench.linkspec import LinkSpec, parse_link
from tests.support.processes import processes_mentioning

NO_KERNEL_LINK = kernel_shaping_available()
needs_kernel_link = pytest.mark.skipif(NO_KERNEL_LINK is not None, reason=f"no tbf link here: {NO_KERNEL_LINK}")
PAYLOAD = hashlib.sha256(b"seed").digest() * 40_000  # 1.28 MB, no two neighbouring pieces alike
WITHIN = 60.0


def namespaces() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def relays_of(pid: int) -> list[int]:
    """The relay processes a bench with this pid started (their command line names it: --owner PID)."""
    return processes_mentioning(f"--owner\0{pid}\0")


async def run(*command: str, check: bool = False) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=check)


def test_a_link_is_a_rate_and_a_round_trip():
    spec = parse_link("100mbit,20ms")
    assert (spec.rate_bps, spec.rtt_ms) == (100_000_000, 20.0)
    assert spec.label == "100mbit,20ms"
    assert spec.one_way_delay_s == pytest.approx(0.010)


def test_a_link_without_a_round_trip_has_none():
    assert parse_link("1gbit") == LinkSpec(1_000_000_000, 0.0)


def test_the_queue_is_one_bandwidth_delay_product_and_the_burst_two_milliseconds():
    spec = parse_link("100mbit,20ms")
    assert spec.burst_bytes == 25_000
    assert spec.limit_bytes == 250_000


@pytest.mark.parametrize(
    ("text", "problem"), [("fast", "not a rate"), ("10mbit,soon", "not a round-trip"), ("1kbit", "too slow")]
)
def test_a_bad_link_says_what_is_wrong(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_link(text)


class Upstream:
    """A server that reads one line and answers with PAYLOAD, then closes."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests.append(await reader.readline())
        writer.write(PAYLOAD)
        await writer.drain()
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def _through_relay(spec: LinkSpec, rate_in_relay: bool, tmp_path) -> tuple[bytes, float, bytes]:
    upstream = Upstream()
    port = await upstream.start()
    relay = RelayProcess(Built(spec, "relay", "127.0.0.1", (), rate_in_relay, {}), port, tmp_path / "relay.log")
    try:
        relay_port = await relay.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)
        started = time.perf_counter()
        writer.write(b"GET /\n")
        first = await reader.readexactly(1)
        first_at = time.perf_counter() - started
        async with asyncio.timeout(WITHIN):
            rest = await reader.read()
        writer.close()
    finally:
        await relay.stop()
        await upstream.close()
    return first + rest, first_at, upstream.requests[0]


async def test_the_relay_passes_every_byte_in_order_both_ways(tmp_path):
    received, _, request = await _through_relay(parse_link("100mbit,10ms"), True, tmp_path)
    assert request == b"GET /\n"
    assert received == PAYLOAD


async def test_the_relay_delays_by_the_round_trip(tmp_path):
    # A lower bound only: the request and the first byte back each wait half the round trip.
    _, first_at, _ = await _through_relay(parse_link("1gbit,80ms"), False, tmp_path)
    assert first_at >= 0.080


async def test_the_relay_holds_the_link_to_its_rate(tmp_path):
    # 1.28 MB at 8 Mbit/s cannot arrive in less than 1.28 s (less the 25 ms the first burst may take).
    started = time.perf_counter()
    received, _, _ = await _through_relay(parse_link("8mbit,2ms"), True, tmp_path)
    assert received == PAYLOAD
    assert time.perf_counter() - started >= len(PAYLOAD) / 1_000_000 - 0.025


async def test_the_relay_exits_when_the_bench_is_gone(tmp_path):
    upstream = Upstream()
    relay = RelayProcess(
        Built(parse_link("10mbit"), "relay", "127.0.0.1", (), True, {}), await upstream.start(), tmp_path / "r.log"
    )
    await relay.start()
    assert relay.process is not None and relay.process.stdin is not None
    # What the bench's end leaves when it dies: the pipe to the relay's stdin closed.
    relay.process.stdin.close()
    async with asyncio.timeout(WITHIN):
        assert await relay.process.wait() == 0
    await relay.stop()
    await upstream.close()


@needs_kernel_link
async def test_a_kernel_link_is_built_and_torn_down():
    link = KernelLink(parse_link("100mbit,20ms"), 7)
    try:
        built = await link.up()
        assert link.namespace in await asyncio.to_thread(namespaces)
        shown = await run("tc", "qdisc", "show", "dev", link.server_end)
        assert "tbf" in shown.stdout and "rate 100Mbit" in shown.stdout
        assert built.server_host.startswith("10.222.")
        assert built.relay_prefix == ("ip", "netns", "exec", link.namespace)
    finally:
        await link.down()
    assert link.namespace not in await asyncio.to_thread(namespaces)
    assert (await run("ip", "link", "show", link.server_end)).returncode != 0


@needs_kernel_link
async def test_a_namespace_left_by_a_killed_bench_is_removed_by_the_next():
    gone = await run(sys.executable, "-c", "import os; print(os.getpid())")
    stale = f"{NAMESPACE_PREFIX}{int(gone.stdout)}-0"
    await run("ip", "netns", "add", stale, check=True)
    try:
        assert stale in await remove_stale_namespaces()
        assert stale not in await asyncio.to_thread(namespaces)
    finally:
        await run("ip", "netns", "delete", stale)
