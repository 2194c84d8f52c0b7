"""Verifying every received body after its clock has stopped.

A body passes when it parses in full as its format (for csv and json: a well-formed document), holds
exactly the rows asked for, and its ids run after_id+1, after_id+2, ... with none missing or repeated.
Parsing half a gigabyte takes seconds, so a body byte-for-byte identical (same SHA-256) to one that
already passed is accepted without parsing it again; any other body is parsed in full.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from ..client.records import BodyError, RowParser, row_id, verify_ids
from .results import RequestResult, downsample
from .wire import Received, Response, ResponseError, decode, server_timing

# Bytes fed to the parser at a time; also the resolution of the byte-to-row map.
BLOCK_BYTES = 64 * 1024


@dataclass(frozen=True)
class BodyCheck:
    rows: int
    sha256: str
    # (body bytes, rows complete within them) at every block boundary: turns byte progress into rows.
    row_marks: tuple[tuple[int, int], ...]

    def rows_within(self, nbytes: int) -> int:
        """Rows wholly inside the first nbytes of the body (to within one block)."""
        index = bisect_right(self.row_marks, (nbytes, self.rows + 1)) - 1
        return self.row_marks[index][1] if index >= 0 else 0


def check_body(fmt: str, body: bytes, expected_rows: int | None, after_id: int = 0) -> BodyCheck:
    """Parse the whole body and check its rows; BodyError says what is wrong."""
    parser = RowParser(fmt)
    marks: list[tuple[int, int]] = [(0, 0)]
    view = memoryview(body)

    def ids() -> Iterator[int]:
        count = 0
        for start in range(0, len(body), BLOCK_BYTES):
            rows = parser.feed(bytes(view[start : start + BLOCK_BYTES]))
            count += len(rows)
            marks.append((min(start + BLOCK_BYTES, len(body)), count))
            for row in rows:
                yield row_id(row)
        rows = parser.close()
        if rows:
            marks.append((len(body), count + len(rows)))
        for row in rows:
            yield row_id(row)

    rows = verify_ids(ids(), expected_rows, after_id)
    return BodyCheck(rows, hashlib.sha256(body).hexdigest(), tuple(marks))


class Verifier:
    """Checks bodies, remembering the digests of those that passed (per format, row count and after_id)."""

    def __init__(self) -> None:
        self._passed: dict[tuple[str, int | None, int], dict[str, BodyCheck]] = {}
        self.parsed = 0
        self.matched = 0

    def check(self, fmt: str, body: bytes, expected_rows: int | None, after_id: int = 0) -> BodyCheck:
        known = self._passed.setdefault((fmt, expected_rows, after_id), {})
        digest = hashlib.sha256(body).hexdigest()
        if digest in known:
            self.matched += 1
            return known[digest]
        check = check_body(fmt, body, expected_rows, after_id)
        self.parsed += 1
        known[digest] = check
        return check


def verify_response(
    verifier: Verifier, fmt: str, response: Response, expected_rows: int | None, after_id: int = 0
) -> BodyCheck:
    """A 200 whose body passes; BodyError otherwise (with the server's error detail when it sent one)."""
    if response.status != 200:
        detail = response.body[:300].decode("utf-8", "replace")
        raise BodyError(f"HTTP {response.status}: {detail}")
    return verifier.check(fmt, response.body, expected_rows, after_id)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def evaluate(verifier: Verifier, fmt: str, received: Received, rows: int | None, keep_series: bool) -> RequestResult:
    """Decode and verify one response after its clock stopped; its figures, or what went wrong."""
    try:
        response = decode(received)
    except ResponseError as exc:
        body = sum(len(p) for p in received.pieces)
        received.pieces.clear()
        return RequestResult(None, False, str(exc), None, None, None, 0, body, None, None, {})
    received.pieces.clear()
    started = received.started
    result = RequestResult(
        status=response.status,
        verified=False,
        error=None,
        headers_ms=_ms(response.headers_at - started),
        first_byte_ms=_ms(None if response.first_byte_at is None else response.first_byte_at - started),
        total_ms=_ms(response.last_byte_at - started),
        bytes=len(response.body),
        wire_bytes=response.wire_bytes,
        rows=None,
        sha256=None,
        server_timing=server_timing(response.headers.get("server-timing")),
    )
    try:
        check = verify_response(verifier, fmt, response, rows)
    except BodyError as exc:
        result.error = str(exc)
        return result
    result.verified = True
    result.rows = check.rows
    result.sha256 = check.sha256
    if keep_series:
        result.timeline = [
            [round(at * 1000, 2), nbytes, check.rows_within(nbytes)] for at, nbytes in downsample(response.progress)
        ]
    return result
