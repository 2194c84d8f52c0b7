"""The link between the bench's client and its server: built, used for one plan, and torn down.

Two ways, the same shaping figures (bench.linkspec):

- **tbf** (root, with `ip` and `tc`): a network namespace of the bench's own, `sabench-<pid>-<n>`, joined
  to the bench's namespace by a veth pair on a private /30 (10.222.x.y). The kernel's tbf queueing
  discipline shapes both ends of the pair (requests on the namespace's end, responses on the bench's).
  The server binds the bench's end of the pair, so it still lives beside its database, and the floor, the
  /metrics scrapes and the /healthz probe reach it without crossing the link (a local address is
  delivered locally). The client's requests cross it: they go to a relay (bench.relay) that the bench
  runs inside the namespace on a listening socket it opened on 127.0.0.1, which connects to the server
  over the veth pair and adds half the round trip each way (netem is not in every kernel).
- **relay** (anything else): the same relay on 127.0.0.1 in front of a server on 127.0.0.1, holding the
  link to its rate with a token bucket as well as delaying it.

Everything the bench creates has its pid in its name, so benches running at the same time never meet,
and is removed on the way out (normal end, Ctrl+C, SIGTERM). A namespace left by a bench that was killed
outright (SIGKILL) is removed by the next bench that builds a link, once its owner's pid is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..settings import PROJECT_ROOT
from .linkspec import LinkSpec

NAMESPACE_PREFIX = "sabench-"
SUBNET = ipaddress.ip_network("10.222.0.0/16")
COMMAND_TIMEOUT_SECONDS = 15.0
RELAY_START_SECONDS = 30.0
RELAY_STOP_SECONDS = 10.0
SHAPERS = ("auto", "tbf", "relay")


class LinkError(RuntimeError):
    """The link could not be built (a command failed, or the relay did not start)."""


def kernel_shaping_available() -> str | None:
    """None when tbf on a veth pair can be used here; else why not."""
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "not root"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"no {' or '.join(missing)} command"
    return None


async def _run(*command: str, check: bool = True) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise LinkError(f"`{' '.join(command)}` did not finish within {COMMAND_TIMEOUT_SECONDS:g} s") from None
    if check and process.returncode != 0:
        raise LinkError(f"`{' '.join(command)}` failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def remove_stale_namespaces() -> list[str]:
    """Delete the namespaces of benches whose process is gone (killed before they could clean up)."""
    removed = []
    listing = await _run("ip", "netns", "list", check=False)
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{NAMESPACE_PREFIX}(\d+)-\d+", name)
        if match and not psutil.pid_exists(int(match.group(1))):
            await _run("ip", "netns", "delete", name, check=False)
            removed.append(name)
    return removed


async def _free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /30 in 10.222.0.0/16 that no address on this machine's namespace is in, starting from `seed`."""
    used = set()
    for match in re.finditer(r"inet (10\.222\.\d+\.\d+)/", await _run("ip", "-4", "-o", "addr", "show", check=False)):
        used.add(ipaddress.ip_network(f"{match.group(1)}/30", strict=False))
    subnets = list(SUBNET.subnets(new_prefix=30))
    for offset in range(len(subnets)):
        candidate = subnets[(seed + offset) % len(subnets)]
        if candidate not in used:
            return candidate
    raise LinkError("no free /30 left in 10.222.0.0/16")


@dataclass
class Built:
    """A link ready to use: where the server binds, and how the relay is run (inside a namespace or not)."""

    spec: LinkSpec
    shaper: str
    server_host: str
    relay_prefix: tuple[str, ...]
    relay_rate: bool
    description: dict


class KernelLink:
    """tbf on both ends of a veth pair into a namespace of the bench's own."""

    def __init__(self, spec: LinkSpec, index: int) -> None:
        self.spec = spec
        pid = os.getpid()
        self.namespace = f"{NAMESPACE_PREFIX}{pid}-{index}"
        # Interface names have at most 15 characters: "sab" + pid (7 digits at most) + index + end.
        self.server_end = f"sab{pid}{index}s"
        self.client_end = f"sab{pid}{index}c"
        self.seed = pid * 8 + index
        self._created: list[str] = []

    def _tbf(self) -> list[str]:
        spec = self.spec
        return ["tbf", "rate", f"{spec.rate_bps}bit", "burst", str(spec.burst_bytes), "limit", str(spec.limit_bytes)]

    async def up(self) -> Built:
        removed = await remove_stale_namespaces()
        subnet = await _free_subnet(self.seed)
        server_ip, client_ip = (str(host) for host in subnet.hosts())
        ns = self.namespace
        await _run("ip", "netns", "add", ns)
        self._created.append("namespace")
        await _run("ip", "link", "add", self.server_end, "type", "veth", "peer", "name", self.client_end, "netns", ns)
        self._created.append("veth")
        await _run("ip", "addr", "add", f"{server_ip}/30", "dev", self.server_end)
        await _run("ip", "link", "set", self.server_end, "up")
        await _run("ip", "-n", ns, "addr", "add", f"{client_ip}/30", "dev", self.client_end)
        await _run("ip", "-n", ns, "link", "set", self.client_end, "up")
        await _run("ip", "-n", ns, "link", "set", "lo", "up")
        await _run("tc", "qdisc", "add", "dev", self.server_end, "root", *self._tbf())
        await _run("tc", "-n", ns, "qdisc", "add", "dev", self.client_end, "root", *self._tbf())
        description = {
            **self.spec.describe(),
            "shaper": "tbf",
            "how": f"tbf rate {self.spec.label.split(',')[0]} burst {self.spec.burst_bytes:,} B limit "
            f"{self.spec.limit_bytes:,} B on both ends of veth {self.server_end} ({server_ip}, the server's) – "
            f"{self.client_end} ({client_ip}, in netns {ns}); {self.spec.rtt_ms / 2:g} ms each way added by a "
            "relay in that namespace",
            "namespace": ns,
            "server_address": server_ip,
            "client_address": client_ip,
            "stale_namespaces_removed": removed,
        }
        return Built(self.spec, "tbf", server_ip, ("ip", "netns", "exec", ns), False, description)

    async def down(self) -> None:
        # Deleting either end deletes the pair (and the qdiscs on it); the namespace goes with its name.
        if "veth" in self._created:
            await _run("ip", "link", "delete", self.server_end, check=False)
        if "namespace" in self._created:
            await _run("ip", "netns", "delete", self.namespace, check=False)
        self._created.clear()


class RelayLink:
    """No kernel shaping: the relay holds the link to its rate as well as delaying it."""

    def __init__(self, spec: LinkSpec, why: str) -> None:
        self.spec = spec
        self.why = why

    async def up(self) -> Built:
        description = {
            **self.spec.describe(),
            "shaper": "relay",
            "how": f"a user-space relay on 127.0.0.1: token bucket {self.spec.label.split(',')[0]} (burst "
            f"{self.spec.burst_bytes:,} B, queue {self.spec.limit_bytes:,} B) and {self.spec.rtt_ms / 2:g} ms "
            f"each way ({self.why})",
        }
        return Built(self.spec, "relay", "127.0.0.1", (), True, description)

    async def down(self) -> None:
        pass


def make_link(spec: LinkSpec, shaper: str, index: int) -> KernelLink | RelayLink:
    """The link `shaper` asks for: "tbf" (LinkError where it cannot be), "relay", or "auto" (tbf if it can)."""
    unavailable = kernel_shaping_available()
    if shaper == "tbf":
        if unavailable:
            raise LinkError(f"--shaper tbf needs root on Linux with ip and tc ({unavailable})")
        return KernelLink(spec, index)
    if shaper == "auto" and not unavailable:
        return KernelLink(spec, index)
    return RelayLink(spec, "asked for" if shaper == "relay" else f"tbf is not available here: {unavailable}")


class RelayProcess:
    """bench.relay in a process of its own (inside the link's namespace for tbf), in front of one server."""

    def __init__(self, built: Built, upstream_port: int, log_path: Path) -> None:
        self.built = built
        self.upstream_port = upstream_port
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self._listener: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self._listener is not None
        return self._listener.getsockname()[1]

    async def start(self) -> int:
        """Start it; the port it serves on 127.0.0.1."""
        spec = self.built.spec
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        fd = self._listener.fileno()
        command = [
            *self.built.relay_prefix,
            sys.executable,
            "-m",
            "streaming_api.bench.relay",
            "--fd",
            str(fd),
            "--upstream",
            f"{self.built.server_host}:{self.upstream_port}",
            "--delay-ms",
            f"{spec.rtt_ms / 2:g}",
            "--owner",
            str(os.getpid()),
        ]
        if self.built.relay_rate:
            command += ["--rate-bps", str(spec.rate_bps), "--burst-bytes", str(spec.burst_bytes)]
            command += ["--limit-bytes", str(spec.limit_bytes)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                cwd=str(PROJECT_ROOT),
                pass_fds=(fd,),
                # The relay exits when this pipe closes: however the bench ends, its relay ends with it.
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(RELAY_START_SECONDS):
                line = await self.process.stdout.readline()
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self.stop()
            raise LinkError(f"the link's relay did not start; see {self.log_path}")
        return self.port

    async def stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), RELAY_STOP_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()
        if process is not None and process.stdin is not None:
            process.stdin.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None


@contextlib.asynccontextmanager
async def link_up(spec: LinkSpec, shaper: str, index: int):  # type: ignore[no-untyped-def]
    """The link, built; torn down when the block ends, however it ends (a cancellation included)."""
    link = make_link(spec, shaper, index)
    try:
        yield await link.up()
    finally:
        await link.down()
