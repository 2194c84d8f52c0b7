"""A body's row ids as its bytes arrive, whatever its format: feed bytes, get the ids of the rows they
completed; close() says whether the body was whole (BodyError if not)."""

from __future__ import annotations

from typing import Protocol

from ..client.records import BodyError, RowParser, row_id


class IdReader(Protocol):
    def feed(self, data: bytes) -> list[int]: ...

    def close(self) -> list[int]: ...


class _TextIds:
    """ndjson, json, csv, text: the client's own parser."""

    def __init__(self, fmt: str) -> None:
        self._parser = RowParser(fmt)

    def feed(self, data: bytes) -> list[int]:
        return [row_id(row) for row in self._parser.feed(data)]

    def close(self) -> list[int]:
        return [row_id(row) for row in self._parser.close()]


class _ArrowIds:
    """An Arrow IPC stream: a batch's rows are complete with its last byte (the client's decoder)."""

    def __init__(self) -> None:
        from ..client.arrow import StreamDecoder  # pyarrow: loaded only when Arrow is benchmarked

        self._decoder = StreamDecoder([])

    def feed(self, data: bytes) -> list[int]:
        ids: list[int] = []
        for message in self._decoder.feed(data):
            if message.batch is not None and message.batch.num_rows:
                ids.extend(message.batch.column("id").to_pylist())
        return ids

    def close(self) -> list[int]:
        try:
            self._decoder.close()
        except Exception as exc:  # the decoder says "incomplete" as a retryable error: here a bad body
            raise BodyError(str(exc)) from None
        return []


def id_reader(fmt: str) -> IdReader:
    return _ArrowIds() if fmt == "arrow" else _TextIds(fmt)
