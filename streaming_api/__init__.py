"""streaming_api: export a large PostgreSQL table over HTTP, buffered (/standard) or streamed (/chunked).

The package holds four deliverables, each in its own subpackage: the web service (`web`, over `export`
and `db`), a client library (`client`), the command line (`cli`) and the benchmark (`bench`).
"""

__version__ = "0.1.0"
