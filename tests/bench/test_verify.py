"""The bench's verification: every kind of broken body or transfer must be caught after the clock stops."""

from __future__ import annotations

import json

import pytest

from streaming_api.bench.verify import BodyError, Expected, Verifier, check_body, evaluate, verify_response
from streaming_api.bench.wire import Received, ResponseError, decode
from streaming_api.db.schema import COLUMNS

FORMATS = ("ndjson", "csv", "json")
ROWS = 5


def _row(i: int) -> dict:
    # Every 3rd label needs quoting in CSV and holds a newline: record ends must not be guessed from newlines.
    label = 'with "quotes", a comma\nand a newline' if i % 3 == 0 else f"point-{i}"
    return {"id": i, "x": 1.5, "y": 2.0, "label": label, "value": 0.25, "recorded_at": "2026-01-01T00:00:01+00:00"}


def _csv_field(value: object) -> str:
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in '",\r\n') else text


def body(fmt: str, ids: list[int]) -> bytes:
    """A body the way the service frames it, holding the rows with these ids in this order."""
    rows = [_row(i) for i in ids]
    if fmt == "ndjson":
        return b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    if fmt == "json":
        return b"[" + b",\n".join(json.dumps(r).encode() for r in rows) + b"]\n"
    lines = [",".join(COLUMNS)] + [",".join(_csv_field(r[c]) for c in COLUMNS) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def chunked_response(payload: bytes, pieces: int = 3, complete: bool = True) -> Received:
    """The bytes of an HTTP/1.1 chunked response carrying payload, as they would arrive in `pieces` reads."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    size = max(len(payload) // 2, 1)
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    wire = head + b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + (b"0\r\n\r\n" if complete else b"")
    step = -(-len(wire) // pieces)
    received = Received("/chunked", started=100.0)
    for index, start in enumerate(range(0, len(wire), step)):
        received.pieces.append(wire[start : start + step])
        received.times.append(100.0 + (index + 1) / 1000)
    return received


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_whole_body_passes(fmt):
    assert check_body(fmt, body(fmt, [1, 2, 3, 4, 5]), ROWS).rows == ROWS


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_row_is_caught(fmt):
    with pytest.raises(BodyError, match="missing"):
        check_body(fmt, body(fmt, [1, 2, 4, 5, 6]), ROWS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_duplicated_row_is_caught(fmt):
    with pytest.raises(BodyError, match="duplicated"):
        check_body(fmt, body(fmt, [1, 2, 2, 3, 4]), ROWS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_truncated_last_line_is_caught(fmt):
    whole = body(fmt, [1, 2, 3, 4, 5])
    # Cut inside the last row (its timestamp), as a transfer that ended early but cleanly would.
    with pytest.raises(BodyError):
        check_body(fmt, whole[:-10], ROWS)


@pytest.mark.parametrize("fmt", ("ndjson", "csv"))
def test_a_body_short_of_whole_rows_is_caught(fmt):
    with pytest.raises(BodyError, match="4 rows, expected 5"):
        check_body(fmt, body(fmt, [1, 2, 3, 4]), ROWS)


def test_a_json_array_left_open_is_caught():
    whole = body("json", [1, 2, 3, 4, 5])
    with pytest.raises(BodyError, match="not closed"):
        check_body("json", whole[: -len(b"]\n")], ROWS)


def test_a_csv_record_with_a_missing_field_is_caught():
    broken = body("csv", [1, 2, 3, 4, 5]).replace(b"point-4,", b"")
    with pytest.raises(BodyError, match="fields"):
        check_body("csv", broken, ROWS)


def test_an_aborted_chunked_transfer_is_caught():
    with pytest.raises(ResponseError, match="transfer aborted"):
        decode(chunked_response(body("ndjson", [1, 2, 3, 4, 5]), complete=False))


def test_a_transfer_short_of_its_content_length_is_caught():
    payload = body("ndjson", [1, 2, 3, 4, 5])
    received = Received("/standard", started=1.0)
    received.pieces.append(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload[:-7])
    received.times.append(1.5)
    with pytest.raises(ResponseError, match="transfer aborted"):
        decode(received)


def test_a_connection_closed_before_the_headers_is_caught():
    received = Received("/chunked", started=1.0)
    received.pieces.append(b"HTTP/1.1 200 OK\r\nTransfer-")
    received.times.append(1.1)
    with pytest.raises(ResponseError, match="before the response headers"):
        decode(received)


def test_a_chunked_response_decodes_to_its_body_and_arrival_times():
    payload = body("ndjson", [1, 2, 3, 4, 5])
    response = decode(chunked_response(payload, pieces=3))
    assert response.status == 200
    assert response.body == payload
    assert response.headers_at == pytest.approx(100.001)
    assert response.first_byte_at == pytest.approx(100.001)
    assert response.last_byte_at == pytest.approx(100.003)
    assert response.progress[-1] == (pytest.approx(0.003), len(payload))


def test_an_error_status_fails_verification():
    received = Received("/standard", started=1.0)
    detail = b'{"error": "too_many_rows", "detail": "use /chunked"}'
    received.pieces.append(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: %d\r\n\r\n%b" % (len(detail), detail))
    received.times.append(1.2)
    with pytest.raises(BodyError, match="HTTP 413"):
        verify_response(Verifier(), "ndjson", decode(received), ROWS)


def test_a_bad_body_after_a_good_one_is_still_caught():
    verifier = Verifier()
    verifier.check("ndjson", body("ndjson", [1, 2, 3, 4, 5]), ROWS)
    with pytest.raises(BodyError, match="missing"):
        verifier.check("ndjson", body("ndjson", [1, 2, 3, 5, 6]), ROWS)


def test_an_identical_body_is_not_parsed_twice():
    verifier = Verifier()
    for _ in range(3):
        verifier.check("csv", body("csv", [1, 2, 3, 4, 5]), ROWS)
    assert (verifier.parsed, verifier.matched) == (1, 2)


def test_rows_within_maps_bytes_received_to_whole_rows():
    whole = body("ndjson", list(range(1, 2001)))
    check = check_body("ndjson", whole, 2000)
    half = len(whole) // 2
    assert check.rows_within(0) == 0
    assert check.rows_within(len(whole)) == 2000
    # Block-resolution: within one 64 KiB block of the exact count.
    exact = whole[:half].count(b"\n")
    assert exact - 700 <= check.rows_within(half) <= exact


def _arrow_body(ids: list[int], end: bool = True) -> bytes:
    """An Arrow IPC stream written by pyarrow itself: the schema, a batch per two rows, the end marker."""
    import pyarrow as pa

    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("label", pa.utf8(), nullable=False)])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for start in range(0, len(ids), 2):
            part = ids[start : start + 2]
            writer.write_batch(pa.record_batch([pa.array(part), pa.array([f"p{i}" for i in part])], schema=schema))
    data = sink.getvalue().to_pybytes()
    return data if end else data[:-8]


def test_an_arrow_body_passes_and_its_row_marks_count_rows():
    check = check_body("arrow", _arrow_body([1, 2, 3, 4, 5]), ROWS)
    assert check.rows == ROWS
    assert check.rows_within(10**9) == ROWS


@pytest.mark.parametrize(
    ("ids", "end", "problem"),
    [
        ([1, 2, 4, 5, 6], True, "missing"),
        ([1, 2, 2, 3, 4], True, "duplicated"),
        ([1, 2, 3, 4, 5], False, "end-of-stream"),
    ],
)
def test_a_broken_arrow_body_is_caught(ids, end, problem):
    with pytest.raises(BodyError, match=problem):
        check_body("arrow", _arrow_body(ids, end), ROWS)


# --- any table: a key of one integer column goes up; ids 1..N only for the demo tables ------------------


GAPS = Expected("id", contiguous=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_integer_key_with_gaps_passes_when_only_its_order_is_checked(fmt):
    assert check_body(fmt, body(fmt, [7, 14, 15, 100, 1000]), ROWS, expected=GAPS).rows == ROWS
    with pytest.raises(BodyError, match="missing"):
        check_body(fmt, body(fmt, [7, 14, 15, 100, 1000]), ROWS)


@pytest.mark.parametrize(
    ("ids", "problem"), [([7, 14, 14, 20, 30], "repeated"), ([7, 21, 14, 30, 40], "out of key order")]
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_integer_key_that_does_not_go_up_is_caught(fmt, ids, problem):
    with pytest.raises(BodyError, match=problem):
        check_body(fmt, body(fmt, ids), ROWS, expected=GAPS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_a_key_of_integers_rows_are_counted(fmt):
    unordered = Expected(key=None, contiguous=False)
    assert check_body(fmt, body(fmt, [5, 3, 3, 1, 9]), ROWS, expected=unordered).rows == ROWS
    with pytest.raises(BodyError, match="4 rows, expected 5"):
        check_body(fmt, body(fmt, [5, 3, 3, 1]), ROWS, expected=unordered)


def test_the_key_is_found_by_its_name_in_a_csv_header_and_in_arrow():
    labels = Expected("label", contiguous=False)
    csv_body = b"code,label\nb,10\na,20\nc,30\n"
    assert check_body("csv", csv_body, 3, expected=labels).rows == 3
    with pytest.raises(BodyError, match="no label column"):
        check_body("csv", b"code,other\nb,10\n", 1, expected=labels)
    with pytest.raises(BodyError, match="no nothing column"):
        check_body("arrow", _arrow_body([1, 2, 3]), 3, expected=Expected("nothing", contiguous=False))


def _response(path: str, status: str, problem: dict) -> Received:
    detail = json.dumps(problem).encode()
    received = Received(path, started=1.0)
    received.pieces.append(b"HTTP/1.1 %b\r\nContent-Length: %d\r\n\r\n%b" % (status.encode(), len(detail), detail))
    received.times.append(1.2)
    return received


def test_standards_413_for_a_body_too_big_to_buffer_is_a_refusal_not_a_failure():
    problem = {"error": "too_many_bytes", "detail": "over 268,435,456 bytes (standard_max_bytes)"}
    result = evaluate(Verifier(), "ndjson", _response("/standard/blobs", "413 Payload Too Large", problem), 5, False)
    assert (result.verified, result.refused, result.status) == (False, "too_many_bytes", 413)
    assert "standard_max_bytes" in result.error


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/chunked/blobs", "413 Payload Too Large", "too_many_bytes"),
        ("/standard/blobs", "413 Payload Too Large", "something_else"),
        ("/standard/blobs", "503 Service Unavailable", "standard_busy"),
    ],
)
def test_any_other_error_status_is_a_failure(path, status, error):
    result = evaluate(Verifier(), "ndjson", _response(path, status, {"error": error, "detail": "x"}), 5, False)
    assert result.refused is None and not result.verified
    assert result.error.startswith(f"HTTP {status[:3]}")
