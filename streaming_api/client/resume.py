"""The request loop every reader shares: ask, decode as it arrives, and after a drop ask again for the rest.

A Decoder turns one response's bytes into items (text batches, Arrow messages) and says how many rows
each carries and the last id among them; this loop requests, retries with backoff from the last id
received (`after_id`), counts the rows, and tells on_count what each response announces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import aiohttp
from yarl import URL

from ..columns import KEY
from .errors import (
    CannotResume,
    GaveUp,
    NothingListening,
    Retry,
    Retryable,
    RowCount,
    announced_count,
    describe,
    refused,
    rejection,
    retry_after,
)

log = logging.getLogger(__name__)

# The query parameters the client sets itself on every (re)request.
OWN_PARAMETERS = ("format", "after_id", "limit", "page_size", "columns")
MAX_BACKOFF_SECONDS = 8.0
READ_CHUNK_BYTES = 1 << 16

T = TypeVar("T")


class Decoder(Protocol[T]):
    def feed(self, data: bytes) -> list[T]:
        """The items the bytes so far complete (maybe none)."""

    def close(self) -> None:
        """Raise Retryable when the body stopped short of its end."""

    def advance(self, item: T, last_id: int) -> tuple[int, int]:
        """(rows the item carries, the last id so far); BodyError if its ids do not run on after last_id."""


@dataclass(frozen=True)
class Options:
    """One export to read: what to ask for, and how to behave when it fails."""

    url: str
    token: str
    format: str
    after_id: int = 0
    limit: int | None = None
    page_size: int | None = None
    columns: tuple[str, ...] | None = None
    retries: int = 5
    backoff: float = 0.5
    read_timeout: float = 60.0
    session: aiohttp.ClientSession | None = None
    on_retry: Callable[[Retry], None] | None = None
    on_count: Callable[[RowCount], None] | None = None
    compressed: bool = True

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0:
            raise ValueError("retries and backoff must be >= 0")
        _request_url(self.url, self.format, self.after_id, self.limit, self.page_size, self.columns)

    @property
    def resumable(self) -> bool:
        """Whether a drop after rows arrived can be resumed: only with the id among the columns."""
        return self.columns is None or KEY in self.columns


def columns_argument(columns: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """columns= as a tuple of names: a sequence of names, or one comma-separated string; None for all."""
    if columns is None:
        return None
    names = tuple(name.strip() for name in (columns.split(",") if isinstance(columns, str) else columns))
    if not names:
        raise ValueError("columns: name at least one column (or None for all)")
    return names


def _request_url(
    url: str, fmt: str, after_id: int, limit: int | None, page_size: int | None, columns: tuple[str, ...] | None
) -> URL:
    base = URL(url)
    clash = [name for name in OWN_PARAMETERS if name in base.query]
    if clash:
        raise ValueError(f"pass {clash[0]} as an argument, not in the URL")
    query: dict[str, str | int] = {"format": fmt, "after_id": after_id}
    if limit is not None:
        query["limit"] = limit
    if page_size is not None:
        query["page_size"] = page_size
    if columns is not None:
        query["columns"] = ",".join(columns)
    return base.update_query(query)


async def resumable(options: Options, new_decoder: Callable[[], Decoder[T]]) -> AsyncIterator[T]:
    """The items of the export, each exactly once, resuming after drops (see stream_rows for the rules)."""
    own_session = options.session is None
    session = options.session or aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=options.read_timeout)
    )
    # zstd: about a seventh of the bytes, decoded by aiohttp as they arrive (page by page).
    coding = "zstd, gzip;q=0.5" if options.compressed else "identity"
    headers = {"Authorization": f"JWT {options.token}", "Accept-Encoding": coding}
    limit = options.limit
    received = 0
    last_id = options.after_id
    failures = 0
    # Whether a server has answered yet: until one has, a refused connection is a wrong URL, not a restart.
    answered = False
    known: RowCount | None = None
    try:
        while limit is None or received < limit:
            remaining = None if limit is None else limit - received
            request_url = _request_url(
                options.url, options.format, last_id, remaining, options.page_size, options.columns
            )
            decoder = new_decoder()
            progressed = False
            try:
                async with session.get(request_url, headers=headers) as response:
                    answered = True
                    if response.status >= 500 or response.status == 429:
                        raise Retryable(f"HTTP {response.status} {response.reason}", retry_after(response))
                    if response.status != 200:
                        raise await rejection(response)
                    count = announced_count(response.headers, received)
                    # An estimate never replaces an exact count: the rows left were known exactly.
                    if count is not None and not (known is not None and known.exact and not count.exact):
                        known = count
                        if options.on_count is not None:
                            options.on_count(count)
                    async for data in response.content.iter_chunked(READ_CHUNK_BYTES):
                        for item in decoder.feed(data):
                            rows, last_id = decoder.advance(item, last_id)
                            received += rows
                            progressed = progressed or rows > 0
                            yield item
                    decoder.close()
                return
            except (Retryable, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                reason = describe(exc)
                if not answered and refused(exc):
                    raise NothingListening(reason, last_id) from exc
                if received and not options.resumable:
                    raise CannotResume(received, reason) from exc
                # An attempt that brought rows starts the count again: only stalls use up the retries.
                failures = 1 if progressed else failures + 1
                if failures > options.retries:
                    raise GaveUp(failures, received, last_id, reason) from exc
                delay = min(options.backoff * 2 ** (failures - 1), MAX_BACKOFF_SECONDS)
                if isinstance(exc, Retryable) and exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                event = Retry(failures, options.retries, delay, reason, received, last_id)
                if options.on_retry is None:
                    log.warning("%s", event)
                else:
                    options.on_retry(event)
                await asyncio.sleep(delay)
    finally:
        if own_session:
            await session.close()
