"""Content codings read back after the clock stops: each body decoded piece by piece, as it arrived.

The timed client stores what arrives and asks for one coding per request (`Accept-Encoding: zstd`, say).
Afterwards each response's body is decoded in the order and the pieces it arrived in, with decoders of
the bench's own (zstd from the standard library or backports.zstd, gzip from zlib: nothing shared with
the server's encoders), which gives three things:

- the decoded body, verified like an identity body (and compared byte for byte with one when the bench
  has seen one for the same request);
- the decoded bytes after every piece, which turn the arrival timeline into rows over time;
- the piece after which the first row was complete: the time to the first decoded row, the moment a
  client could have used its first row. For /chunked, whose pages are each compressed and flushed on their
  own, that is as soon as the first page arrives; a coding that buffers shows it late.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

try:
    from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
except ImportError:
    from backports import zstd

from ..client.records import BodyError
from .ids import IdReader, id_reader

IDENTITY = "identity"
CODINGS = (IDENTITY, "gzip", "zstd")
GZIP_WINDOW_BITS = 31  # zlib's way of saying "a gzip container"


class CodingError(BodyError):
    """The body does not decode as the coding the response names (corrupt, or cut short)."""


class _Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> None: ...


class _Identity:
    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> None:
        pass


class _Gzip:
    def __init__(self) -> None:
        self._decompressor = zlib.decompressobj(GZIP_WINDOW_BITS)

    def feed(self, data: bytes) -> bytes:
        if self._decompressor.eof and data:
            raise CodingError("gzip: data after the end of the stream")
        try:
            return self._decompressor.decompress(data)
        except zlib.error as exc:
            raise CodingError(f"gzip: {exc}") from None

    def finish(self) -> None:
        if not self._decompressor.eof:
            raise CodingError("gzip: the stream ends before its end marker (cut short)")
        if self._decompressor.unused_data:
            raise CodingError("gzip: data after the end of the stream")


class _Zstd:
    def __init__(self) -> None:
        self._decompressor = zstd.ZstdDecompressor()

    def feed(self, data: bytes) -> bytes:
        if self._decompressor.eof and data:
            raise CodingError("zstd: data after the end of the frame")
        try:
            return self._decompressor.decompress(data)
        except zstd.ZstdError as exc:
            raise CodingError(f"zstd: {exc}") from None

    def finish(self) -> None:
        if not self._decompressor.eof:
            raise CodingError("zstd: the frame ends before its end (cut short)")
        if self._decompressor.unused_data:
            raise CodingError("zstd: data after the end of the frame")


DECODERS = {IDENTITY: _Identity, "gzip": _Gzip, "zstd": _Zstd}


def coding_of(content_encoding: str | None) -> str:
    """The coding a response's Content-Encoding header names ("identity" without one)."""
    name = (content_encoding or "").strip().lower()
    return name or IDENTITY


@dataclass(frozen=True)
class Decoded:
    body: bytes
    # Decoded body bytes after each piece (one per point of the arrival timeline).
    decoded_after: tuple[int, ...]
    # The index of the piece with which the first row became complete (None: no row at all).
    first_row_piece: int | None


def decode_body(coding: str, fmt: str, encoded: bytes, encoded_after: Sequence[int]) -> Decoded:
    """Decode `encoded` (the body as sent) in the pieces it arrived in: `encoded_after[i]` is the body bytes
    received with the first i+1 pieces. CodingError when it does not decode whole as `coding`."""
    if coding not in DECODERS:
        raise CodingError(f"unknown content coding {coding!r} (the bench reads {', '.join(CODINGS)})")
    decoder: _Decoder = DECODERS[coding]()
    parser: IdReader | None = id_reader(fmt)
    first_row_piece: int | None = None
    parts: list[bytes] = []
    decoded_after: list[int] = []
    done, total = 0, 0
    view = memoryview(encoded)
    identity = coding == IDENTITY
    for index, upto in enumerate(encoded_after):
        if upto > done:
            # Identity: no copy of the body, only of the pieces read for the first row.
            data = view[done:upto] if identity else decoder.feed(bytes(view[done:upto]))
            done = upto
            if data:
                if not identity:
                    parts.append(data)
                total += len(data)
                if parser is not None and parser.feed(bytes(data)):
                    first_row_piece, parser = index, None
        decoded_after.append(total)
    if done < len(encoded):
        raise CodingError(f"{len(encoded) - done:,} body bytes are not on the arrival timeline")
    decoder.finish()
    if parser is not None and total:
        # A last row without anything after it (a JSON array's last element, say) completes at the end.
        try:
            if parser.close():
                first_row_piece = len(encoded_after) - 1
        except BodyError:
            pass  # the verification that follows says what is wrong with the body
    body = encoded if identity else b"".join(parts)
    return Decoded(body, tuple(decoded_after), first_row_piece)
