"""Verifying every received body after its clock has stopped.

A body passes when it parses in full as its format (for csv and json: a well-formed document) and holds
exactly the rows asked for (the table's, or the request's limit). Where the table's key is one integer
column its values must go strictly up; where the table is a demo table the bench seeded (ids 1..N), they
must run after_id+1, after_id+2, ... with none missing or repeated (Expected). Parsing half a gigabyte
takes seconds, so a body byte-for-byte identical (same SHA-256) to one that already passed is accepted
without parsing it again; any other body is parsed in full.

A coded body (gzip, zstd) must come in the coding asked for, decode whole (bench.coding), and pass as
its decoded bytes; once an identity body of the same request has passed, a decoded body must also be
byte-for-byte that body. /standard's 413 for an export too big to buffer is a refusal, kept apart: the
service doing what it should, not a failure.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from ..client.records import BodyError, verify_ids
from .coding import IDENTITY, coding_of, decode_body
from .ids import id_reader
from .results import RequestResult, thin
from .wire import Received, Response, ResponseError, decode, server_timing

# Bytes fed to the parser at a time; also the resolution of the byte-to-row map. Where rows are wide, about
# four rows at a time: a parser keeps a row's bytes until its end, and copies them again at every block.
BLOCK_BYTES = 64 * 1024
MAX_BLOCK_BYTES = 8 << 20
# /standard's refusals of an export too big to buffer (413, web.problems).
REFUSALS = ("too_many_rows", "too_many_bytes")


@dataclass(frozen=True)
class Expected:
    """What a body's rows show besides their count: `key`, a key of one integer column, goes strictly up
    (None: rows only counted); `contiguous`, it runs after_id+1, after_id+2, ... (the demo tables' 1..N)."""

    key: str | None = "id"
    contiguous: bool = True


# The demo tables': ids 1..N.
DEMO_IDS = Expected()


def _count(values: Iterable[int | None], expected_rows: int | None, after_id: int, expected: Expected) -> int:
    """The rows, checked as `expected` says; BodyError at the first that is not."""
    if expected.key is not None and expected.contiguous:
        return verify_ids(values, expected_rows, after_id)  # type: ignore[arg-type]
    count = 0
    previous: int | None = None
    for value in values:
        count += 1
        if expected.key is None or value is None:
            continue
        if previous is not None and value <= previous:
            what = "repeated" if value == previous else "out of key order"
            raise BodyError(f"row {count}: {expected.key} {value} after {previous} ({what})")
        previous = value
    if expected_rows is not None and count != expected_rows:
        raise BodyError(f"{count} rows, expected {expected_rows}")
    return count


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


def check_body(
    fmt: str,
    body: bytes,
    expected_rows: int | None,
    after_id: int = 0,
    digest: str | None = None,
    expected: Expected = DEMO_IDS,
) -> BodyCheck:
    """Parse the whole body and check its rows; BodyError says what is wrong."""
    reader = id_reader(fmt, expected.key)
    marks: list[tuple[int, int]] = [(0, 0)]
    view = memoryview(body)
    step = min(max(BLOCK_BYTES, 4 * len(body) // max(expected_rows or 1, 1)), MAX_BLOCK_BYTES)

    def ids() -> Iterator[int | None]:
        count = 0
        for start in range(0, len(body), step):
            block = reader.feed(bytes(view[start : start + step]))
            count += len(block)
            marks.append((min(start + step, len(body)), count))
            yield from block
        last = reader.close()
        if last:
            marks.append((len(body), count + len(last)))
        yield from last

    rows = _count(ids(), expected_rows, after_id, expected)
    return BodyCheck(rows, digest or hashlib.sha256(body).hexdigest(), tuple(marks))


class Verifier:
    """Checks bodies, remembering the digests of those that passed (per format, row count and after_id)."""

    def __init__(self, expected: Expected = DEMO_IDS) -> None:
        self.expected = expected
        self._passed: dict[tuple[str, int | None, int, str | None], dict[str, BodyCheck]] = {}
        # The digest of the first identity body that passed, per format, row count, after_id and filter.
        self._identity: dict[tuple[str, int | None, int, str | None], str] = {}
        self.parsed = 0
        self.matched = 0

    def check(
        self,
        fmt: str,
        body: bytes,
        expected_rows: int | None,
        after_id: int = 0,
        coding: str = IDENTITY,
        filtered: str | None = None,
    ) -> BodyCheck:
        """`filtered`: the filters the request carried (its rows' keys still go up, but not one by one)."""
        key = (fmt, expected_rows, after_id, filtered)
        known = self._passed.setdefault(key, {})
        digest = hashlib.sha256(body).hexdigest()
        reference = self._identity.get(key)
        if coding != IDENTITY and reference is not None and digest != reference:
            raise BodyError(
                f"the {coding}-decoded body ({len(body):,} bytes, SHA-256 {digest[:12]}...) differs from the "
                f"identity body of the same request (SHA-256 {reference[:12]}...)"
            )
        if digest in known:
            self.matched += 1
            return known[digest]
        expected = self.expected if filtered is None else replace(self.expected, contiguous=False)
        check = check_body(fmt, body, expected_rows, after_id, digest, expected)
        self.parsed += 1
        known[digest] = check
        if coding == IDENTITY:
            self._identity.setdefault(key, digest)
        return check


def verify_response(
    verifier: Verifier, fmt: str, response: Response, expected_rows: int | None, after_id: int = 0
) -> BodyCheck:
    """A 200 whose (identity) body passes; BodyError otherwise (with the server's error detail when it sent one)."""
    if response.status != 200:
        detail = response.body[:300].decode("utf-8", "replace")
        raise BodyError(f"HTTP {response.status}: {detail}")
    return verifier.check(fmt, response.body, expected_rows, after_id)


def refusal(response: Response) -> tuple[str, str] | None:
    """(its error, its detail) when the response is /standard's 413 for an export too big to buffer."""
    if response.status != 413:
        return None
    try:
        problem = json.loads(response.body)
    except ValueError:
        return None
    if not isinstance(problem, dict) or problem.get("error") not in REFUSALS:
        return None
    return problem["error"], str(problem.get("detail", ""))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def evaluate(
    verifier: Verifier, fmt: str, received: Received, rows: int | None, keep_series: bool, filtered: str | None = None
) -> RequestResult:
    """Decode and verify one response after its clock stopped; its figures, or what went wrong."""
    try:
        response = decode(received)
    except ResponseError as exc:
        body = sum(len(p) for p in received.pieces)
        received.pieces.clear()
        return RequestResult(None, False, str(exc), None, None, None, 0, body, None, None, {}, coding=None)
    received.pieces.clear()
    started = received.started
    coding = coding_of(response.headers.get("content-encoding"))
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
        coding=coding,
        encoded_bytes=len(response.body),
    )
    if received.path_qs.startswith("/standard") and (refused := refusal(response)):
        result.refused, result.error = refused
        return result
    try:
        if response.status != 200:
            verify_response(verifier, fmt, response, rows)
        if coding != received.coding:
            raise BodyError(
                f"asked for Accept-Encoding: {received.coding}, the response came as {coding} "
                "(does the server offer it? its compression setting)"
            )
        decoded = decode_body(coding, fmt, response.body, [nbytes for _, nbytes in response.progress])
        result.bytes = len(decoded.body)
        if decoded.first_row_piece is not None:
            result.first_row_ms = round(response.progress[decoded.first_row_piece][0] * 1000, 3)
        check = verifier.check(fmt, decoded.body, rows, coding=coding, filtered=filtered)
    except BodyError as exc:
        result.error = str(exc)
        return result
    result.verified = True
    result.rows = check.rows
    result.sha256 = check.sha256
    if keep_series:
        series = [
            (at, decoded_bytes, encoded)
            for (at, encoded), decoded_bytes in zip(response.progress, decoded.decoded_after, strict=True)
        ]
        result.timeline = [
            [round(at * 1000, 2), encoded, check.rows_within(decoded_bytes)]
            for at, decoded_bytes, encoded in thin(series)
        ]
    return result
