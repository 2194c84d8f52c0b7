"""The command line: serve (default) | seed | token | fetch | bench, one module per subcommand.

The only package that may import every other one: it wires the deliverables together.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import settings as settings_module
from ..settings import SettingsError
from . import bench, fetch, seed, serve, token

SUBCOMMANDS = {"serve": serve, "seed": seed, "token": token, "fetch": fetch, "bench": bench}


def _program() -> str:
    """How the user started us, for usage lines: python run.py, python -m streaming_api or streaming-api."""
    started_as = Path(sys.argv[0]).name
    if started_as == "run.py":
        return "python run.py"
    if started_as == "__main__.py":
        return "python -m streaming_api"
    return "streaming-api"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program(),
        description="Export the points table over HTTP, buffered (/standard) or streamed (/chunked). "
        "Without a subcommand, serve.",
        epilog="Settings: settings.py beside run.py (see settings.example.py), overridden by "
        "STREAMING_API_<NAME> environment variables and DATABASE_URL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for module in SUBCOMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "serve")
    args = build_parser().parse_args(args_list)
    try:
        overrides = {"host": getattr(args, "host", None), "port": getattr(args, "port", None)}
        settings = settings_module.load(**overrides)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve.setup_logging(settings)
    try:
        return SUBCOMMANDS[args.command].run(settings, args)
    except KeyboardInterrupt:
        return 130
