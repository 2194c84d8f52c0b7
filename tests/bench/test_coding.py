"""The bench's content codings: bodies decoded piece by piece after the clock, verified against identity, and
the time to the first decoded row found from the pieces' arrival times."""

from __future__ import annotations

import zlib

import pytest

from streaming_api.bench.coding import CodingError, coding_of, decode_body
from streaming_api.bench.verify import BodyError, Verifier, evaluate
from streaming_api.bench.wire import Received
from tests.bench.test_verify import body

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

ROWS = 40
CODINGS = ("gzip", "zstd")


def _pages(payload: bytes, rows_per_page: int = 10) -> list[bytes]:
    lines = payload.splitlines(keepends=True)
    return [b"".join(lines[i : i + rows_per_page]) for i in range(0, len(lines), rows_per_page)]


def encode_pages(coding: str, pages: list[bytes]) -> list[bytes]:
    """Each page compressed and flushed on its own, then the end of the stream: as /chunked sends them."""
    if coding == "gzip":
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        out = [compressor.compress(page) + compressor.flush(zlib.Z_SYNC_FLUSH) for page in pages]
        return [*out, compressor.flush(zlib.Z_FINISH)]
    compressor = zstd.ZstdCompressor(level=1)
    out = [compressor.compress(page, zstd.ZstdCompressor.FLUSH_BLOCK) for page in pages]
    return [*out, compressor.flush(zstd.ZstdCompressor.FLUSH_FRAME)]


def _after(parts: list[bytes]) -> list[int]:
    totals, done = [], 0
    for part in parts:
        done += len(part)
        totals.append(done)
    return totals


def coded_response(coding: str, chunks: list[bytes], content_encoding: str | None = None) -> Received:
    """A chunked response carrying `chunks`, each chunk arriving as a piece of its own 1 ms after the last."""
    header = f"Content-Encoding: {content_encoding or coding}\r\n" if coding != "identity" else ""
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n{header}\r\n".encode()
    )
    received = Received("/chunked", coding, started=100.0)
    pieces = [head + b"%x\r\n%b\r\n" % (len(chunks[0]), chunks[0])]
    pieces += [b"%x\r\n%b\r\n" % (len(c), c) for c in chunks[1:] if c]
    pieces[-1] += b"0\r\n\r\n"
    for index, piece in enumerate(pieces):
        received.pieces.append(piece)
        received.times.append(100.0 + (index + 1) / 1000)
    return received


@pytest.mark.parametrize("coding", CODINGS)
def test_a_coded_body_decodes_to_the_identity_body(coding):
    payload = body("ndjson", list(range(1, ROWS + 1)))
    parts = encode_pages(coding, _pages(payload))
    decoded = decode_body(coding, "ndjson", b"".join(parts), _after(parts))
    assert decoded.body == payload
    assert decoded.decoded_after[-1] == len(payload)


@pytest.mark.parametrize("coding", CODINGS)
def test_the_first_row_decodes_with_the_first_flushed_page(coding):
    parts = encode_pages(coding, _pages(body("ndjson", list(range(1, ROWS + 1)))))
    decoded = decode_body(coding, "ndjson", b"".join(parts), _after(parts))
    assert decoded.first_row_piece == 0


def test_the_first_row_of_an_identity_body_comes_with_the_piece_that_completes_it():
    payload = body("ndjson", [1, 2, 3])
    first_line = payload.index(b"\n") + 1
    # The first row's line is split over the first two pieces.
    after = [first_line - 5, first_line + 3, len(payload)]
    assert decode_body("identity", "ndjson", payload, after).first_row_piece == 1


@pytest.mark.parametrize("coding", CODINGS)
def test_a_coded_stream_cut_short_is_caught(coding):
    parts = encode_pages(coding, _pages(body("ndjson", list(range(1, ROWS + 1)))))
    cut = b"".join(parts[:-1])
    with pytest.raises(CodingError, match="cut short"):
        decode_body(coding, "ndjson", cut, [len(cut)])


@pytest.mark.parametrize("coding", CODINGS)
def test_a_corrupt_coded_stream_is_caught(coding):
    parts = encode_pages(coding, _pages(body("ndjson", list(range(1, ROWS + 1)))))
    whole = bytearray(b"".join(parts))
    whole[len(whole) // 2 : len(whole) // 2 + 8] = b"\xff" * 8
    with pytest.raises(CodingError):
        decode_body(coding, "ndjson", bytes(whole), [len(whole)])


def test_no_content_encoding_header_means_identity():
    assert coding_of(None) == "identity"
    assert coding_of(" ZSTD ") == "zstd"


@pytest.mark.parametrize("coding", CODINGS)
def test_evaluate_verifies_a_coded_response_and_keeps_both_sizes(coding):
    payload = body("ndjson", list(range(1, ROWS + 1)))
    parts = encode_pages(coding, _pages(payload))
    result = evaluate(Verifier(), "ndjson", coded_response(coding, parts), ROWS, keep_series=True)
    assert result.verified, result.error
    assert result.coding == coding
    assert (result.bytes, result.encoded_bytes) == (len(payload), len(b"".join(parts)))
    assert result.timeline[-1][1:] == [len(b"".join(parts)), ROWS]


def test_evaluate_times_the_first_decoded_row_from_the_piece_it_came_in():
    payload = body("ndjson", list(range(1, ROWS + 1)))
    # The first piece holds half of the first row: the row is whole with the second, 2 ms after the request.
    parts = encode_pages("zstd", [payload[:10], payload[10:]])
    result = evaluate(Verifier(), "ndjson", coded_response("zstd", parts), ROWS, keep_series=False)
    assert result.first_byte_ms == pytest.approx(1.0)
    assert result.first_row_ms == pytest.approx(2.0)


def test_a_decoded_body_that_differs_from_the_identity_body_fails():
    verifier = Verifier()
    plain = body("ndjson", list(range(1, ROWS + 1)))
    assert evaluate(verifier, "ndjson", coded_response("identity", _pages(plain)), ROWS, False).verified
    # The same rows, another rendering (spaces after the separators): valid on its own, not the same body.
    other = plain.replace(b'", "', b'",  "')
    result = evaluate(verifier, "ndjson", coded_response("zstd", encode_pages("zstd", _pages(other))), ROWS, False)
    assert not result.verified
    assert "differs from the identity body" in result.error


def test_a_response_in_another_coding_than_asked_fails():
    parts = encode_pages("gzip", _pages(body("ndjson", list(range(1, ROWS + 1)))))
    received = coded_response("gzip", parts)
    received.coding = "zstd"
    result = evaluate(Verifier(), "ndjson", received, ROWS, False)
    assert not result.verified
    assert "asked for Accept-Encoding: zstd, the response came as gzip" in result.error


def test_a_verifier_check_of_a_coded_body_before_any_identity_body_parses_it():
    verifier = Verifier()
    verifier.check("ndjson", body("ndjson", list(range(1, ROWS + 1))), ROWS, coding="zstd")
    assert verifier.parsed == 1
    with pytest.raises(BodyError, match="missing"):
        verifier.check("ndjson", body("ndjson", [1, 3]), 2, coding="zstd")
