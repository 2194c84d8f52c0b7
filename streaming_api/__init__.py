"""streaming_api: export a large PostgreSQL table over HTTP, buffered (/standard) or streamed (/chunked)."""

__version__ = "0.1.0"
