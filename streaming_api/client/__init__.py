"""The Python client of the service. Needs only aiohttp's client: importing it loads no server code.

from streaming_api.client import stream_rows
"""

from .download import FetchResult, download
from .records import FORMATS, BodyError, Row, RowParser
from .stream import (
    BadRequest,
    Batch,
    GaveUp,
    RequestRejected,
    Retry,
    StreamError,
    Unauthorized,
    stream_batches,
    stream_rows,
)

__all__ = [
    "FORMATS",
    "BadRequest",
    "Batch",
    "BodyError",
    "FetchResult",
    "GaveUp",
    "RequestRejected",
    "Retry",
    "Row",
    "RowParser",
    "StreamError",
    "Unauthorized",
    "download",
    "stream_batches",
    "stream_rows",
]
