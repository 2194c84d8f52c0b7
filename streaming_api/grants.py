"""Who may read what: a token's grant, the tables it may read and the PostgreSQL role it reads as.

A token's `tables` claim lists the tables it may read, as patterns like the `tables` setting's (a JSON list
of them, or one comma-separated string); a token without the claim reads what the `default_grant` setting
says ("*.*" by default: every served table). A table is read only when it is both served and granted.

Its `role` claim names the PostgreSQL role its requests run as (`SET LOCAL ROLE` in each transaction,
db.roles), so that the database's own GRANTs and row-level security apply; only where the `token_roles`
setting is on. Elsewhere a token naming a role is refused: reading with the service's own rights would
give it more than whoever signed it meant.

A link (links.py) carries the grant of the token that made it, in the same two claims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .names import BadName, Pattern, parse_patterns, split_list

TABLES_CLAIM = "tables"
ROLE_CLAIM = "role"
# PostgreSQL cuts a longer identifier to this many bytes (NAMEDATALEN - 1): it would name another role.
MAX_ROLE_BYTES = 63
MAX_PATTERNS = 1000
# What SET ROLE takes, quoted or not, for "back to the login's own role": never a role a token may name.
NO_ROLE = "none"


class GrantError(ValueError):
    """A token's claims that cannot be read as a grant (`refused` False: the token is unusable, 401), or
    that ask for what this server does not do (`refused` True: 403)."""

    def __init__(self, detail: str, refused: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.refused = refused


class Relation(Protocol):
    """A served table or view, as a grant sees it (db.catalog.Table)."""

    schema: str
    name: str
    # Whether search_path finds it without its schema (a pattern without a schema matches only those).
    visible: bool


@dataclass(frozen=True)
class Grant:
    """The tables a request may read (of those served), and the role its statements run as (None: the
    service's own login)."""

    patterns: tuple[Pattern, ...]
    role: str | None = None

    def covers(self, table: Relation) -> bool:
        return any(pattern.matches(table.schema, table.name, table.visible) for pattern in self.patterns)


def table_patterns(value: Any) -> tuple[Pattern, ...]:
    """A `tables` claim as patterns: a list of strings, or one comma-separated string; GrantError else."""
    items: Sequence[Any]
    if isinstance(value, str):
        items = split_list(value)
    elif isinstance(value, list):
        items = value
    else:
        raise GrantError("the token's tables claim must be a list of table names or patterns")
    if len(items) > MAX_PATTERNS or not all(isinstance(item, str) for item in items):
        raise GrantError(f"the token's tables claim must be a list of at most {MAX_PATTERNS} strings")
    try:
        return parse_patterns(tuple(items))
    except BadName as exc:
        raise GrantError(f"the token's tables claim: {exc}") from None


def role_name(value: Any) -> str:
    """A `role` claim as a role's name, exactly as PostgreSQL will read it quoted; GrantError else."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise GrantError("the token's role claim must be a role's name (a non-empty string)")
    if value == NO_ROLE:
        raise GrantError("the token's role claim names no role: to PostgreSQL, SET ROLE 'none' is the login's own")
    if len(value.encode()) > MAX_ROLE_BYTES:
        raise GrantError(f"the token's role claim is longer than PostgreSQL's {MAX_ROLE_BYTES}-byte names")
    return value


def grant_of(claims: Mapping[str, Any], default: tuple[Pattern, ...], roles: bool) -> Grant:
    """The grant a token's claims give: its tables (else the `default` patterns), and its role when `roles`."""
    patterns = table_patterns(claims[TABLES_CLAIM]) if TABLES_CLAIM in claims else default
    role = None
    if ROLE_CLAIM in claims:
        role = role_name(claims[ROLE_CLAIM])
        if not roles:
            raise GrantError(
                "the token names a role, but this server does not run requests as roles (setting token_roles)",
                refused=True,
            )
    return Grant(patterns, role)


def grant_claims(tables: Sequence[str] | None = None, role: str | None = None) -> dict[str, Any]:
    """The claims a token (or a link) carries for this grant: none for the default one."""
    claims: dict[str, Any] = {}
    if tables is not None:
        table_patterns(list(tables))  # checked now, not by the server that reads it later
        claims[TABLES_CLAIM] = list(tables)
    if role is not None:
        claims[ROLE_CLAIM] = role_name(role)
    return claims
