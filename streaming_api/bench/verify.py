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

from ..parsing import BodyError, RowParser, row_id, verify_ids
from .client import Response, ResponseError

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

    def digests(self, fmt: str, expected_rows: int | None, after_id: int = 0) -> list[str]:
        """The distinct bodies that passed for one format and size (one, when every endpoint agrees)."""
        return list(self._passed.get((fmt, expected_rows, after_id), {}))


def verify_response(
    verifier: Verifier, fmt: str, response: Response, expected_rows: int | None, after_id: int = 0
) -> BodyCheck:
    """A 200 whose body passes; BodyError otherwise (with the server's error detail when it sent one)."""
    if response.status != 200:
        detail = response.body[:300].decode("utf-8", "replace")
        raise BodyError(f"HTTP {response.status}: {detail}")
    return verifier.check(fmt, response.body, expected_rows, after_id)


__all__ = ["BodyCheck", "BodyError", "ResponseError", "Verifier", "check_body", "verify_response"]
