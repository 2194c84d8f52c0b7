"""`run.py seed`: (re)load the points table so that it holds exactly rows 1..N."""

from __future__ import annotations

import argparse

from ..db.database import Database
from ..settings import Settings
from .args import positive
from .console import StatusLine, rows_bar
from .failures import EXIT_CONFIGURATION, StartupFailure
from .signals import run as run_stoppable


def add_parser(sub: argparse._SubParsersAction) -> None:
    seed = sub.add_parser(
        "seed",
        help="(re)load the points table with COPY",
        description="Create the points table if missing and load it so that it holds exactly rows 1..N. Idempotent.",
    )
    seed.add_argument("--rows", type=positive, help="number of rows, 1 or more (default: the rows setting, 500,000)")


async def _seed(settings: Settings, rows: int) -> float:
    async with Database(settings) as database:
        return (await database.ensure_rows(rows, "always", rows_bar(StatusLine()))).seconds


def run(settings: Settings, args: argparse.Namespace) -> int:
    rows = settings.rows if args.rows is None else args.rows
    if rows < 1:
        # Loading "exactly rows 1..0" would silently empty the table.
        raise StartupFailure("nothing to load: the rows setting is 0; give --rows N (1 or more)", EXIT_CONFIGURATION)
    seconds = run_stoppable(_seed(settings, rows))
    print(f"points holds rows 1..{rows:,} (loaded in {seconds:.1f} s)")
    return 0
