"""`run.py seed`: (re)load a demo table (points, orders or blobs) so that it holds exactly rows 1..N."""

from __future__ import annotations

import argparse

from ..db.database import Database
from ..db.demo import DEMO_TABLES
from ..settings import Settings
from . import SUMMARIES
from .args import positive
from .console import StatusLine, rows_bar
from .failures import EXIT_CONFIGURATION, StartupFailure
from .signals import run as run_stoppable


def add_parser(sub: argparse._SubParsersAction) -> None:
    seed = sub.add_parser(
        "seed",
        help=SUMMARIES["seed"],
        description="Create a demo table if missing and load it so that it holds exactly rows 1..N, in the "
        "embedded database, or in DATABASE_URL's when it is set. Idempotent. points: the default table; "
        "orders: 13 columns of mixed types; blobs: 2 MB a row. A table of that name with other columns is "
        "never overwritten.",
    )
    seed.add_argument(
        "--table", choices=tuple(DEMO_TABLES), default="points", help="the demo table to load (default points)"
    )
    seed.add_argument(
        "--rows",
        type=positive,
        help="number of rows, 1 or more (default: for points the rows setting, 500,000; orders "
        f"{DEMO_TABLES['orders'].default_rows:,}; blobs {DEMO_TABLES['blobs'].default_rows:,})",
    )


async def _seed(settings: Settings, table: str, rows: int) -> tuple[float, str]:
    async with Database(settings) as database:
        seeding = await database.ensure_rows(rows, "always", rows_bar(StatusLine()), table)
        # Said every time: seeding writes, and DATABASE_URL may name a database that is not a scratch one.
        where = "DATABASE_URL's database" if database.embedded is None else f"the {database.description}"
        return seeding.seconds, where


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.rows is not None:
        rows = args.rows
    else:
        rows = settings.rows if args.table == "points" else DEMO_TABLES[args.table].default_rows
    if rows < 1:
        # Loading "exactly rows 1..0" would silently empty the table.
        raise StartupFailure("nothing to load: the rows setting is 0; give --rows N (1 or more)", EXIT_CONFIGURATION)
    seconds, where = run_stoppable(_seed(settings, args.table, rows))
    print(f"{args.table} holds rows 1..{rows:,} (loaded in {seconds:.1f} s) in {where}")
    return 0
