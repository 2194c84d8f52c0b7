"""`run.py token`: print a JWT signed with the configured key, with the grant it carries (grants.py)."""

from __future__ import annotations

import argparse

from .. import grants
from ..grants import GrantError, grant_claims
from ..names import split_list
from ..settings import Settings
from ..tokens import load_keys, mint_token
from . import SUMMARIES
from .args import positive


def table_list(text: str) -> list[str]:
    """--tables: comma-separated names or patterns ("a,b".c, sales.*), as the tables setting takes them."""
    items = split_list(text)
    try:
        grant_claims(tables=items)
    except GrantError as exc:
        raise argparse.ArgumentTypeError(exc.detail.replace("the token's tables claim", "--tables")) from None
    return items


def role_name(text: str) -> str:
    try:
        grants.role_name(text)
    except GrantError as exc:
        raise argparse.ArgumentTypeError(exc.detail.replace("the token's role claim", "--role")) from None
    return text


def add_grant_arguments(parser: argparse.ArgumentParser) -> None:
    """--tables and --role: the grant a token (or a link) carries."""
    parser.add_argument(
        "--tables",
        type=table_list,
        metavar="NAMES",
        help="the tables it may read, comma-separated names or patterns (default: what default_grant says)",
    )
    parser.add_argument(
        "--role", type=role_name, help="the PostgreSQL role its requests run as (needs the token_roles setting)"
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    token = sub.add_parser(
        "token",
        help=SUMMARIES["token"],
        description="Print a token signed with the configured key (send it as 'Authorization: JWT <token>').",
    )
    token.add_argument("--sub", default="cli", help="subject claim (default: cli)")
    token.add_argument("--ttl", type=positive, help="lifetime in seconds (default: the token_ttl setting, 3600)")
    add_grant_arguments(token)


def run(settings: Settings, args: argparse.Namespace) -> int:
    claims = grant_claims(args.tables, args.role)
    print(mint_token(load_keys(settings), subject=args.sub, ttl=args.ttl or settings.token_ttl, extra=claims))
    return 0
