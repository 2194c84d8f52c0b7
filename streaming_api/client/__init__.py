"""The Python client of the service. Needs only aiohttp's client: importing it loads no server code.

from streaming_api.client import stream_rows

format="arrow" (stream_rows, stream_record_batches, read_table) needs pyarrow, loaded only when used:
`import streaming_api.client` works without it.
"""

from __future__ import annotations

from typing import Any

from .download import FetchResult, download
from .errors import (
    BadRequest,
    CannotResume,
    GaveUp,
    NothingListening,
    RequestRejected,
    Retry,
    RowCount,
    SnapshotGone,
    StreamError,
    Unauthorized,
)
from .records import FORMATS, BodyError, Row, RowParser
from .stream import ARROW, Batch, load_arrow, stream_batches, stream_rows

# Served from streaming_api.client.arrow on first use (it imports pyarrow).
_ARROW_NAMES = ("read_table", "stream_record_batches")

__all__ = [
    "ARROW",
    "FORMATS",
    "BadRequest",
    "Batch",
    "BodyError",
    "CannotResume",
    "FetchResult",
    "GaveUp",
    "NothingListening",
    "RequestRejected",
    "Retry",
    "Row",
    "RowCount",
    "RowParser",
    "SnapshotGone",
    "StreamError",
    "Unauthorized",
    "download",
    "read_table",
    "stream_batches",
    "stream_record_batches",
    "stream_rows",
]


def __getattr__(name: str) -> Any:
    if name in _ARROW_NAMES:
        return getattr(load_arrow(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
