"""The table a bench measures (--table): its name in URLs, its columns and key, and how its bodies are
verified. Read from PostgreSQL's catalog where the bench can reach the database (its own, or
--database-url: the floor's query needs the reflected table), else from the server's GET /tables."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..db.catalog import Table
from ..db.served import CatalogError, read_catalog
from ..settings import Settings
from .verify import Expected
from .wire import ResponseError, Target, decode, fetch


class SubjectError(Exception):
    """The table cannot be measured (not served, not found, a pattern); the message says why, in one line."""


@dataclass(frozen=True)
class Subject:
    # As a URL names it (/chunked/NAME) and /tables lists it.
    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    # The key is one integer column: its values go up in every body.
    integer_key: bool
    # A demo table the bench seeded itself: its ids are 1..N, none missing.
    demo: bool
    # The reflected table, for the floor's query (None: known only from the server's /tables).
    table: Table | None = None

    @property
    def expected(self) -> Expected:
        if not self.integer_key:
            return Expected(key=None, contiguous=False)
        return Expected(self.key[0], contiguous=self.demo)

    def describe(self) -> dict:
        """For the JSON: what was measured, and what every body was checked for."""
        expected = self.expected
        if expected.key is None:
            why = "its key is not one integer column" if self.key else "it has no key"
            checked = f"the rows asked for (in an order not checked: {why})"
        elif expected.contiguous:
            checked = f"the rows asked for, {expected.key} running 1, 2, 3, ... with none missing or repeated"
        else:
            checked = f"the rows asked for, {expected.key} going strictly up"
        described = {
            "name": self.name,
            "columns": [list(column) for column in self.columns],
            "key": list(self.key),
            "demo": self.demo,
            "verified": checked,
        }
        if self.table is not None:
            described |= {"kind": self.table.kind, "row_bytes_sampled": self.table.row_bytes}
        return described


def _patterns(name: str) -> tuple:
    """--table, a name as /tables lists it (exact: case kept, sales.orders), as the tables setting's pattern
    for exactly that table: each part quoted (a name already quoted, as in SQL, is taken as it is)."""
    text = name if '"' in name else ".".join(f'"{part}"' for part in name.split(".", 1))
    try:
        return Settings(tables=(text,)).table_patterns
    except ValueError as exc:
        raise SubjectError(f"--table {name!r}: {exc}") from None


async def from_catalog(url: str, name: str, demo: bool) -> Subject:
    """The table as PostgreSQL's catalog describes it."""
    try:
        catalog = await read_catalog(url, _patterns(name))
    except CatalogError as exc:
        raise SubjectError(f"--table: {exc}") from None
    table = catalog.default
    if table is None or len(catalog.tables) != 1:
        found = ", ".join(t.url_name for t in catalog.tables[:5])
        raise SubjectError(f"--table {name!r} names more than one table ({found}...): give one table's name")
    return Subject(
        table.url_name,
        tuple((column.name, column.declared) for column in table.columns),
        table.key,
        table.integer_key,
        demo,
        table,
    )


async def from_server(target: Target, name: str) -> Subject:
    """The table as the server's GET /tables describes it (a server whose database the bench cannot reach)."""
    try:
        response = decode(await fetch(target, "/tables"))
    except ResponseError as exc:
        raise SubjectError(f"GET {target.url}/tables: {exc}") from None
    if response.status != 200:
        detail = response.body[:200].decode("utf-8", "replace")
        raise SubjectError(f"GET {target.url}/tables answered {response.status}: {detail}")
    try:
        served = json.loads(response.body)["tables"]
    except (ValueError, KeyError, TypeError):
        raise SubjectError(f"GET {target.url}/tables did not answer a list of tables") from None
    for entry in served:
        if name in (entry["name"], f"{entry['schema']}.{entry['table']}"):
            columns = {column["name"]: column for column in entry["columns"]}
            key = tuple(entry["key"])
            integer = len(key) == 1 and columns[key[0]]["json"].get("type") == "integer"
            pairs = tuple((column["name"], column["type"]) for column in entry["columns"])
            return Subject(entry["name"], pairs, key, integer, demo=False)
    names = ", ".join(entry["name"] for entry in served[:10])
    raise SubjectError(f"the server at {target.url} serves no table named {name!r} (it serves: {names or 'none'})")
