"""The command line: serve (default) | seed | token | fetch | bench, one module per subcommand.

The only package that may import every other one: it wires the deliverables together. The subcommands
are imported inside main(), so that Ctrl+C while they load (aiohttp, asyncpg...) is an interruption
(exit 130), not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from .. import settings as settings_module
from ..settings import Settings

EXIT_INTERRUPTED = 130
NAMES = ("serve", "seed", "token", "fetch", "bench")


def _program() -> str:
    """How the user started us, for usage lines: python run.py, python -m streaming_api or streaming-api."""
    started_as = Path(sys.argv[0]).name
    if started_as == "run.py":
        return "python run.py"
    if started_as == "__main__.py":
        return "python -m streaming_api"
    return "streaming-api"


def subcommands() -> dict[str, ModuleType]:
    from . import bench, fetch, seed, serve, token

    return {"serve": serve, "seed": seed, "token": token, "fetch": fetch, "bench": bench}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program(),
        description="Export the points table over HTTP, buffered (/standard) or streamed (/chunked). "
        "Without a subcommand, serve.",
        epilog="Settings: settings.py beside run.py (see settings.example.py), overridden by "
        "STREAMING_API_<NAME> environment variables and DATABASE_URL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(NAMES) + "}")
    for module in subcommands().values():
        module.add_parser(sub)
    return parser


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit code. A foreseen failure is one line on stderr (see failures.py)."""
    settings: Settings | None = None
    try:
        from .failures import StartupFailure, describe
        from .signals import Stopped

        args_list = list(sys.argv[1:] if argv is None else argv)
        if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
            args_list.insert(0, "serve")
        args = build_parser().parse_args(args_list)
        overrides = {name: getattr(args, name, None) for name in ("host", "port", "workers")}
        try:
            settings = settings_module.load(on_warning=_warn, **overrides)
            subcommands()["serve"].setup_logging(settings)
            return subcommands()[args.command].run(settings, args)
        except KeyboardInterrupt:
            raise
        except Stopped as exc:
            print(f"{args.command}: {exc}", file=sys.stderr)
            return exc.exit_code
        except Exception as exc:
            failure = exc if isinstance(exc, StartupFailure) else describe(exc, settings)
            if failure is None:
                raise
            print(f"error: {failure.message}", file=sys.stderr)
            return failure.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
