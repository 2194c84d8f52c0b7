"""The bench's table of Arrow read into a pyarrow.Table: the service through read_table against a direct
connection (ADBC, ConnectorX), from the JSON document's summaries (see stats.table_read_stats).

Units: milliseconds for times.
"""

from __future__ import annotations

from typing import Any

from .tables import endpoint_label, spread_range
from .tables import ms as _ms
from .tables import num as _num
from .tables import table as _table

READER_LABELS = {
    "adbc": "ADBC's PostgreSQL driver on a connection of its own, cursor.fetch_arrow_table()",
    "connectorx": "ConnectorX, connectorx.read_sql(..., return_type='arrow')",
    "read_table": "this service's Arrow stream, streaming_api.client.read_table(), no content coding",
}


def _where(s: dict[str, Any], reader: str) -> str:
    return endpoint_label(s) if reader == "read_table" else "PostgreSQL"


def reads_table(groups: list[dict[str, Any]]) -> list[str]:
    rows = []
    for s in groups:
        for reader, st in (s.get("table_reads") or {}).items():
            total = st["total_ms"]
            rows.append(
                [
                    _where(s, reader),
                    reader,
                    spread_range(total),
                    _num(st["over_adbc"], 2),
                    _num(st["client_cpu_s"]["median"], 2),
                    _num(st["server_cpu_s"]["median"], 2),
                    _num(st["postgres_cpu_s"]["median"], 2),
                    f"{st['ok']}/{st['runs']}",
                ]
            )
    if not rows:
        return []
    header = ["from", "reader", "total (min–max)", "÷ADBC", "CPU s: client", "server", "PostgreSQL", "whole"]
    readers = dict.fromkeys(row[1] for row in rows)
    return [
        "",
        "Into a pyarrow.Table, one client, each read alternated with the runs above (ms)",
        *_table(header, rows, {2, 3, 4, 5, 6, 7}),
        *(f"{reader}: {READER_LABELS[reader]}" for reader in readers),
        *_schema_lines(groups),
    ]


def _schema_lines(groups: list[dict[str, Any]]) -> list[str]:
    """How read_table's table compares with each direct reader's, once per endpoint."""
    out = []
    for s in groups:
        for reader, compared in (s.get("schemas") or {}).items():
            if reader == "service":
                continue
            where = endpoint_label(s)
            if not compared.get("same_names"):
                out.append(f"{where} against {reader}: other columns ({compared.get('direct')})")
                continue
            differences = compared["type_differences"]
            types = (
                "the same types"
                if not differences
                else "the same types but "
                + "; ".join(f"{d['column']} ({d['service']} here, {d['direct']} there)" for d in differences)
            )
            other = compared["columns_with_other_values"]
            values = (
                f"the same values in all {compared['columns_compared']} columns of the same type"
                if not other
                else f"OTHER VALUES in {', '.join(other)}"
            )
            out.append(f"{where} against {reader}: {types}; {values}")
            if names := compared["not_nullable_in_service_only"]:
                out.append(f"  not nullable here only (NOT NULL columns): {', '.join(names)}")
    return out


def reads_headline(figures: dict[str, Any]) -> list[tuple[str, str]]:
    arrow = figures.get("chunked_arrow") or {}
    if arrow.get("read_table_over_adbc") is None and arrow.get("total_over_adbc") is None:
        return []
    lines = [
        ("/chunked arrow read_table ÷ ADBC direct (pyarrow.Table)", _num(arrow["read_table_over_adbc"], 2)),
        ("/chunked arrow total (bytes, no decoding) ÷ ADBC direct", _num(arrow["total_over_adbc"], 2)),
        (
            "/chunked arrow read_table, ADBC direct: median ms",
            f"{_ms(arrow['read_table_ms_median'])}, {_ms(arrow['adbc_ms_median'])}",
        ),
    ]
    if arrow.get("connectorx_over_adbc") is not None:
        lines.append(("ConnectorX direct ÷ ADBC direct", _num(arrow["connectorx_over_adbc"], 2)))
    if figures.get("standard_arrow_read_table_over_adbc") is not None:
        lines.append(
            ("/standard arrow read_table ÷ ADBC direct", _num(figures["standard_arrow_read_table_over_adbc"], 2))
        )
    return lines
