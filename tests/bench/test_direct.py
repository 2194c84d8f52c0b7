"""bench.direct: how the service's table read by read_table is compared with a direct reader's, and what the
bench does with a reader that is missing or a table that differs."""

from __future__ import annotations

import pyarrow as pa

from streaming_api.bench import direct
from streaming_api.bench.results import BenchResult, GroupResult, TableReadResult
from streaming_api.bench.stats import failures, table_read_stats


def _tables(direct_values: list[int], amount_type: pa.DataType) -> tuple[pa.Table, pa.Table]:
    service = pa.table(
        {"id": pa.array([1, 2, 3], pa.int64()), "amount": pa.array([1, 2, 3], pa.decimal128(12, 2))},
        schema=pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("amount", pa.decimal128(12, 2))]),
    )
    other = pa.table({"id": pa.array(direct_values, pa.int64()), "amount": pa.array(["1", "2", "3"], amount_type)})
    return service, other


def test_a_type_that_differs_is_named_and_its_values_are_not_compared():
    compared = direct.compare_schemas(*_tables([1, 2, 3], pa.utf8()))
    assert compared["type_differences"] == [{"column": "amount", "service": "decimal128(12, 2)", "direct": "string"}]
    assert compared["columns_compared"] == 1 and compared["columns_with_other_values"] == []
    assert compared["not_nullable_in_service_only"] == ["id"]


def test_a_column_of_the_same_type_with_other_values_is_named():
    compared = direct.compare_schemas(*_tables([1, 2, 4], pa.utf8()))
    assert compared["columns_with_other_values"] == ["id"]


def test_the_same_values_in_other_chunks_are_equal():
    service, other = _tables([1, 2, 3], pa.utf8())
    rechunked = pa.Table.from_batches(other.to_batches(max_chunksize=1))
    assert direct.compare_schemas(service, rechunked)["columns_with_other_values"] == []


def test_other_columns_are_a_difference_of_names():
    service, _ = _tables([1, 2, 3], pa.utf8())
    compared = direct.compare_schemas(service, pa.table({"id": [1, 2, 3]}))
    assert compared == {"same_names": False, "service": ["id", "amount"], "direct": ["id"]}


def _group(**schemas: dict) -> GroupResult:
    group = GroupResult(3, "arrow", "chunked", "/chunked?format=arrow", "binary", schemas=dict(schemas))
    for reader, total in (("adbc", 10.0), ("read_table", 12.0), ("adbc", 20.0), ("read_table", 18.0)):
        group.table_reads.append(TableReadResult(reader, False, total, 3, 0.01, None, 0.01, True))
    return group


def test_read_tables_ratio_to_adbc_is_of_the_medians_of_the_same_group():
    stats = table_read_stats(_group())
    assert stats["adbc"]["total_ms"]["median"] == 15.0
    assert stats["read_table"]["over_adbc"] == 1.0
    assert stats["adbc"]["over_adbc"] == 1.0


def test_a_table_with_other_values_than_adbcs_fails_the_bench():
    compared = direct.compare_schemas(*_tables([1, 2, 4], pa.utf8()))
    result = BenchResult("now", {}, {}, {}, groups=[_group(adbc=compared)])
    (problem,) = failures(result)
    assert "read_table's table is not adbc's" in problem and "'columns_with_other_values': ['id']" in problem


def test_a_failed_read_table_fails_the_bench_but_a_failed_direct_read_does_not():
    group = _group()
    group.table_reads.append(TableReadResult("adbc", False, None, None, 0.0, None, None, False, "OperationalError"))
    group.table_reads.append(TableReadResult("read_table", False, None, 2, 0.0, None, None, False, "read 2 rows"))
    assert failures(BenchResult("now", {}, {}, {}, groups=[group])) == [
        "/chunked arrow 3 rows: read_table: read 2 rows"
    ]


def test_a_direct_reader_not_installed_is_a_note(monkeypatch):
    real = direct.importlib.util.find_spec
    monkeypatch.setattr(direct.importlib.util, "find_spec", lambda name: None if name == "connectorx" else real(name))
    readers, notes = direct.installed_readers()
    assert readers == ("adbc",)
    assert notes == ["connectorx is not installed: its direct read into a pyarrow.Table is not timed"]


def test_connectorx_is_given_a_host_where_the_url_names_only_a_socket_directory():
    assert (
        direct.connectorx_url("postgresql://postgres:@/postgres?host=/run/pg")
        == "postgresql://postgres:@localhost/postgres?host=/run/pg"
    )
    assert direct.connectorx_url("postgresql://u:p@db:5432/x") == "postgresql://u:p@db:5432/x"
