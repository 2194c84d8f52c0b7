"""The command line: serve (default) | seed | token | link | fetch | bench, one module per subcommand.

The only package that may import every other one: it wires the deliverables together. The subcommands
are imported inside main(), so that Ctrl+C while they load (aiohttp, asyncpg...) is an interruption
(exit 130), not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from .. import settings as settings_module
from ..settings import Settings

EXIT_INTERRUPTED = 130
# Each subcommand and its line of help: the parser of the one asked for is the only one built, so
# `fetch` loads no server code and `serve` no benchmark.
SUMMARIES = {
    "serve": "run the HTTP server (the default)",
    "seed": "(re)load a demo table (points, orders or blobs) with rows 1..N",
    "token": "print a signed JWT for the data endpoints",
    "link": "print a signed URL that opens one export without a header",
    "fetch": "download an export to a file, resuming after drops",
    "bench": "compare /standard and /chunked against PostgreSQL's own export speed",
}
NAMES = tuple(SUMMARIES)


def _program() -> str:
    """How the user started us, for usage lines: python run.py, python -m streaming_api or streaming-api."""
    started_as = Path(sys.argv[0]).name
    if started_as == "run.py":
        return "python run.py"
    if started_as == "__main__.py":
        return "python -m streaming_api"
    return "streaming-api"


def subcommand(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def subcommands() -> dict[str, ModuleType]:
    return {name: subcommand(name) for name in NAMES}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with `only`, that subcommand's in full and the others' names alone."""
    parser = argparse.ArgumentParser(
        prog=_program(),
        description="Export the points table over HTTP, buffered (/standard) or streamed (/chunked). "
        "Without a subcommand, serve.",
        epilog="Settings: settings.py beside run.py (see settings.example.py), overridden by "
        "STREAMING_API_<NAME> environment variables and DATABASE_URL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(NAMES) + "}")
    for name, summary in SUMMARIES.items():
        if only is None or name == only:
            subcommand(name).add_parser(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit code. A foreseen failure is one line on stderr (see failures.py)."""
    settings: Settings | None = None
    try:
        from .logs import setup_logging
        from .signals import Stopped

        args_list = list(sys.argv[1:] if argv is None else argv)
        if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
            args_list.insert(0, "serve")
        args = build_parser(args_list[0] if args_list[0] in NAMES else None).parse_args(args_list)
        overrides = {name: getattr(args, name, None) for name in ("host", "port", "workers")}
        try:
            settings = settings_module.load(on_warning=_warn, **overrides)
            setup_logging(settings)
            return subcommand(args.command).run(settings, args)
        except KeyboardInterrupt:
            raise
        except Stopped as exc:
            print(f"{args.command}: {exc}", file=sys.stderr)
            return exc.exit_code
        except Exception as exc:
            # Loaded only for a failure: it knows every layer's errors (asyncpg's among them).
            from .failures import StartupFailure, describe

            failure = exc if isinstance(exc, StartupFailure) else describe(exc, settings)
            if failure is None:
                raise
            print(f"error: {failure.message}", file=sys.stderr)
            return failure.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
