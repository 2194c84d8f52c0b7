"""`run.py token`: print a JWT signed with the configured key."""

from __future__ import annotations

import argparse

from ..settings import Settings
from ..tokens import load_keys, mint_token
from . import SUMMARIES
from .args import positive


def add_parser(sub: argparse._SubParsersAction) -> None:
    token = sub.add_parser(
        "token",
        help=SUMMARIES["token"],
        description="Print a token signed with the configured key (send it as 'Authorization: JWT <token>').",
    )
    token.add_argument("--sub", default="cli", help="subject claim (default: cli)")
    token.add_argument("--ttl", type=positive, help="lifetime in seconds (default: the token_ttl setting, 3600)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    print(mint_token(load_keys(settings), subject=args.sub, ttl=args.ttl or settings.token_ttl))
    return 0
