"""A link to run the bench over, as `--link RATE[,RTT]` gives it ("100mbit,20ms"), and the shaping it implies.

The same figures shape both ways of building the link (bench.link): the kernel's tbf queueing discipline
on a veth pair, or the bench's user-space relay.

- rate: what the link carries, counted as tc counts it (whole packets, headers included, so a TCP body
  gets about 95 % of it over the kernel link).
- burst: the bytes that may leave at once after a pause: 2 ms at the rate, at least 4 full-size packets
  (6 KB). Small enough that the rate holds over a few milliseconds, large enough for tbf to keep the rate
  without a timer per packet.
- limit: the queue in front of the link, one bandwidth-delay product (the rate times the RTT, at least 10 ms), at
  least 4 bursts: the buffer of a well-sized router. Beyond it tbf drops (and TCP slows down); the relay
  instead stops reading (TCP's back-pressure does the same job).
- the round trip is added in user space (netem is not in every kernel): half of it on each way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}
RTT_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
MTU_FRAME_BYTES = 1514
BURST_SECONDS = 0.002
MIN_BURST_BYTES = 4 * MTU_FRAME_BYTES
MIN_QUEUE_SECONDS = 0.010
MAX_RTT_MS = 10_000.0
MIN_RATE_BPS = 64_000

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)\s*$", re.IGNORECASE)
_RTT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class LinkSpec:
    rate_bps: int
    rtt_ms: float

    @property
    def label(self) -> str:
        """The link as --link takes it, normalised: "100mbit,20ms"."""
        for unit in ("gbit", "mbit", "kbit"):
            scale = RATE_UNITS[unit]
            if self.rate_bps % scale == 0:
                rate = f"{self.rate_bps // scale}{unit}"
                break
        else:
            rate = f"{self.rate_bps}bit"
        return f"{rate},{self.rtt_ms:g}ms"

    @property
    def rate_bytes_per_s(self) -> float:
        return self.rate_bps / 8

    @property
    def one_way_delay_s(self) -> float:
        return self.rtt_ms / 2000

    @property
    def burst_bytes(self) -> int:
        return max(round(self.rate_bytes_per_s * BURST_SECONDS), MIN_BURST_BYTES)

    @property
    def limit_bytes(self) -> int:
        bdp = self.rate_bytes_per_s * max(self.rtt_ms / 1000, MIN_QUEUE_SECONDS)
        return max(round(bdp), 4 * self.burst_bytes)

    def describe(self) -> dict[str, object]:
        return {
            "label": self.label,
            "rate_bps": self.rate_bps,
            "rtt_ms": self.rtt_ms,
            "burst_bytes": self.burst_bytes,
            "limit_bytes": self.limit_bytes,
            "one_way_delay_ms": self.rtt_ms / 2,
        }


def parse_link(text: str) -> LinkSpec:
    """RATE[,RTT]: "100mbit,20ms", "1gbit", "10mbit,80ms" (RTT 0 when not given). ValueError says why not."""
    rate_text, _, rtt_text = text.partition(",")
    rate_match = _RATE.match(rate_text)
    if not rate_match:
        raise ValueError(f"{rate_text.strip()!r} is not a rate: write it as tc does, e.g. 100mbit, 1gbit, 512kbit")
    rate = round(float(rate_match.group(1)) * RATE_UNITS[rate_match.group(2).lower()])
    if rate < MIN_RATE_BPS:
        raise ValueError(f"a rate of {rate_text.strip()} is too slow to run a bench over (at least 64kbit)")
    rtt = 0.0
    if rtt_text.strip():
        rtt_match = _RTT.match(rtt_text)
        if not rtt_match:
            raise ValueError(f"{rtt_text.strip()!r} is not a round-trip time: e.g. 20ms, 150ms, 1s")
        rtt = float(rtt_match.group(1)) * RTT_UNITS[rtt_match.group(2).lower()]
        if rtt > MAX_RTT_MS:
            raise ValueError(f"a round trip of {rtt_text.strip()} is more than the bench allows (10 s)")
    return LinkSpec(rate, rtt)
