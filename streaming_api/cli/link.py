"""`run.py link`: print a URL that opens one export without a header (links.py), signed with the configured
key, for a tool that takes a URL and nothing else (polars, pandas, DuckDB, a spreadsheet's import)."""

from __future__ import annotations

import argparse

from yarl import URL

from ..grants import grant_claims
from ..links import BadTarget, export_target, sign
from ..settings import Settings
from ..tokens import load_keys
from . import SUMMARIES
from .args import positive
from .token import add_grant_arguments


def target(text: str) -> tuple[str | None, str]:
    """(the server's address when the URL names one, the export's path and query)."""
    url = URL(text)
    base = None
    if url.is_absolute():
        base, text = str(url.origin()), str(url.relative())
    try:
        export_target(text)
    except BadTarget as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return base, text


def add_parser(sub: argparse._SubParsersAction) -> None:
    link = sub.add_parser(
        "link",
        help=SUMMARIES["link"],
        description="Print a URL that opens one export (its path and query, as given) and its resumes, with no "
        "header, until it expires: python run.py link '/chunked/orders.csv?columns=id,total' --ttl 900",
    )
    link.add_argument(
        "target", type=target, metavar="URL", help="the export's path and query (/chunked/..., /standard/...) or URL"
    )
    link.add_argument("--ttl", type=positive, help="lifetime in seconds (default: the token_ttl setting, 3600)")
    link.add_argument("--sub", default="cli", help="subject claim, for the logs (default: cli)")
    link.add_argument(
        "--base-url", help="the server's address as users reach it (default: the URL's, or host and port)"
    )
    add_grant_arguments(link)


def run(settings: Settings, args: argparse.Namespace) -> int:
    base, path = args.target
    claims = grant_claims(args.tables, args.role)
    signed = sign(load_keys(settings), path, args.ttl or settings.token_ttl, claims, args.sub)
    print((args.base_url or base or settings.base_url).rstrip("/") + signed)
    return 0
