"""The request loop every reader shares: ask, decode as it arrives, and after a drop ask again for the rest.

A Decoder turns one response's bytes into items (text batches, Arrow messages), says how many rows each
carries, and on a drop the key of the last whole row received; this loop requests, retries with backoff
after that key (`after=`, the key's columns named by the response's X-Key header), counts the rows,
and tells on_count what each response announces. A relation without a key (no X-Key) cannot be resumed
once rows have arrived: CannotResume, never a guess.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
from yarl import URL

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
OWN_PARAMETERS = ("format", "after", "after_id", "limit", "page_size", "columns", "snapshot")
Key = tuple[str, ...]
MAX_BACKOFF_SECONDS = 8.0
READ_CHUNK_BYTES = 1 << 16

T = TypeVar("T")


class Decoder(Protocol[T]):
    def feed(self, data: bytes) -> list[T]:
        """The items the bytes so far complete (maybe none)."""

    def close(self) -> None:
        """Raise Retryable when the body stopped short of its end."""

    def advance(self, item: T) -> int:
        """The rows the item carries; BodyError if a key of one integer column does not go up."""

    def last_key(self) -> Key | None:
        """The last whole row's key, as text the server reads back (None before the first row)."""


# Makes a response's decoder, given the key its X-Key header names (None: the relation has none).
NewDecoder = Callable[[Key | None], Decoder[T]]


@dataclass(frozen=True)
class Options:
    """One export to read: what to ask for, and how to behave when it fails."""

    url: str
    token: str
    format: str
    # The key of the row to start after (its values as text); None: from the first row.
    after: Key | None = None
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
        _request_url(self.url, self.format, self.after, self.limit, self.page_size, self.columns)

    def resumable(self, key: Key | None) -> bool:
        """Whether a drop after rows arrived can be resumed: the relation has a key, among the columns."""
        return key is not None and (self.columns is None or all(name in self.columns for name in key))


def after_argument(after: Any, after_id: int | None = None) -> Key | None:
    """after= as the key's values in text: a sequence of values (a composite key), one value, or after_id."""
    if after is not None and after_id is not None:
        raise ValueError("give after or after_id, not both")
    if after is None:
        return None if after_id is None else (str(after_id),)
    values = after if isinstance(after, list | tuple) else (after,)
    return tuple(str(value).lower() if isinstance(value, bool) else str(value) for value in values)


def columns_argument(columns: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """columns= as a tuple of names: a sequence of names, or one comma-separated string; None for all."""
    if columns is None:
        return None
    names = tuple(name.strip() for name in (columns.split(",") if isinstance(columns, str) else columns))
    if not names:
        raise ValueError("columns: name at least one column (or None for all)")
    return names


def _request_url(
    url: str,
    fmt: str,
    after: Key | None,
    limit: int | None,
    page_size: int | None,
    columns: tuple[str, ...] | None,
    snapshot: str | None = None,
) -> URL:
    base = URL(url)
    clash = [name for name in OWN_PARAMETERS if name in base.query]
    if clash:
        raise ValueError(f"pass {clash[0]} as an argument, not in the URL")
    query: dict[str, str | int] = {"format": fmt}
    if after is not None:
        query["after"] = json.dumps(list(after), ensure_ascii=False)
    if limit is not None:
        query["limit"] = limit
    if page_size is not None:
        query["page_size"] = page_size
    if columns is not None:
        query["columns"] = ",".join(_quoted_name(name) for name in columns)
    if snapshot is not None:
        query["snapshot"] = snapshot
    return base.update_query(query)


def _quoted_name(name: str) -> str:
    """A name in columns=, in double quotes where it holds a comma or a quote (or spaces at its ends)."""
    if "," in name or '"' in name or name != name.strip():
        return '"' + name.replace('"', '""') + '"'
    return name


async def resumable(options: Options, new_decoder: NewDecoder[T]) -> AsyncIterator[T]:
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
    after = options.after
    # The key the first response named: every resumed response must name the same.
    key: Key | None = None
    # The snapshot a resume continues in (a response's X-Snapshot); None until one names it.
    snapshot: str | None = None
    failures = 0
    # Whether a server has answered yet: until one has, a refused connection is a wrong URL, not a restart.
    answered = False
    known: RowCount | None = None
    try:
        while limit is None or received < limit:
            remaining = None if limit is None else limit - received
            request_url = _request_url(
                options.url, options.format, after, remaining, options.page_size, options.columns, snapshot
            )
            decoder: Decoder[T] | None = None
            progressed = False
            try:
                async with session.get(request_url, headers=headers) as response:
                    answered = True
                    if response.status >= 500 or response.status == 429:
                        raise Retryable(f"HTTP {response.status} {response.reason}", retry_after(response))
                    if response.status != 200:
                        raise await rejection(response)
                    named = _named_key(response.headers)
                    if received and named != key:
                        raise CannotResume(received, f"the table's key changed ({key} before, {named} now)")
                    key = named
                    # A resume continues in the snapshot the export read (under the id this response holds
                    # it by): the rows of one moment, whatever the cuts.
                    snapshot = response.headers.get("X-Snapshot", snapshot)
                    decoder = new_decoder(key)
                    count = announced_count(response.headers, received)
                    # An estimate never replaces an exact count: the rows left were known exactly.
                    if count is not None and not (known is not None and known.exact and not count.exact):
                        known = count
                        if options.on_count is not None:
                            options.on_count(count)
                    async for data in response.content.iter_chunked(READ_CHUNK_BYTES):
                        for item in decoder.feed(data):
                            rows = decoder.advance(item)
                            received += rows
                            progressed = progressed or rows > 0
                            yield item
                    decoder.close()
                return
            except (Retryable, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                reason = describe(exc)
                if not answered and refused(exc):
                    raise NothingListening(reason, after) from exc
                if received and not options.resumable(key):
                    raise CannotResume(received, reason, key is None) from exc
                if progressed and decoder is not None:
                    after = decoder.last_key()
                # An attempt that brought rows starts the count again: only stalls use up the retries.
                failures = 1 if progressed else failures + 1
                if failures > options.retries:
                    raise GaveUp(failures, received, after, reason) from exc
                delay = min(options.backoff * 2 ** (failures - 1), MAX_BACKOFF_SECONDS)
                if isinstance(exc, Retryable) and exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                event = Retry(failures, options.retries, delay, reason, received, after)
                if options.on_retry is None:
                    log.warning("%s", event)
                else:
                    options.on_retry(event)
                await asyncio.sleep(delay)
    finally:
        if own_session:
            await session.close()


def _named_key(headers: Any) -> Key | None:
    """The key the response names (X-Key, a JSON array of column names); None for a relation without one."""
    raw = headers.get("X-Key")
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except ValueError:
        return None
    return tuple(names) if isinstance(names, list) and all(isinstance(name, str) for name in names) else None
