"""Statements run as a PostgreSQL role: the one a request's token names (grants.py), set with `SET LOCAL
ROLE` inside every transaction that reads the request's rows, so the database's own GRANTs and row-level
security policies decide what it reads.

SET LOCAL ends with its transaction. That is why it works behind a transaction pooler (each unit of work is
a transaction, and the role leaves with it), and why it cannot stay on a connection for its next user: a
COMMIT, a ROLLBACK (asyncpg's on release, a holder's when its snapshot is let go), or the end of a
multi-statement query's implicit transaction ends it. Nothing ever sets a role for the session.

Where the role goes, for each kind of unit (db.lanes.Units):
- a COPY (a page, /standard's one): `SET LOCAL ROLE ...;` in front of it, in the same query string. Straight
  to PostgreSQL that string is one implicit transaction (behind the SETs that import a snapshot, db.lanes.
  Reading); behind a pooler, or on a snapshot's holder, it runs in the unit's open transaction. A snapshot
  export's first page runs in a savepoint on its holder (db.snapshot_units.Opening): rolling that back ends the
  role, and the snapshot is exported by the login (another role may import it: it holds no privilege).
- a connection for other statements (a count, the page planner's walk of the key, a cursor): SET LOCAL in
  its transaction, or BEGIN; SET LOCAL ROLE ... COMMIT around it where it has none.

The role is an identifier, always quoted; checked (check_role) before the request's first statement, so a
role the login cannot assume is refused before any byte is sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import asyncpg

from .lanes import Lanes, Output, Units, transaction_on
from .statements import quote_identifier

# What PostgreSQL says when SET ROLE is refused: no such role (22023), not a member of it (42501).
REFUSED = (asyncpg.InvalidParameterValueError, asyncpg.InsufficientPrivilegeError)


class RoleRefused(Exception):
    """The service's login cannot assume the role: it does not exist, or the login is not a member of it
    (with the SET option, PostgreSQL 16 and later). The message is PostgreSQL's."""


def set_role(role: str) -> str:
    return f"SET LOCAL ROLE {quote_identifier(role)}"


def refused_role(exc: BaseException) -> bool:
    """Whether an error is PostgreSQL refusing a SET ROLE (not a statement the role may not run)."""
    text = str(exc)
    if isinstance(exc, asyncpg.InvalidParameterValueError):
        return text.startswith('role "') and text.endswith('" does not exist')
    return isinstance(exc, asyncpg.InsufficientPrivilegeError) and text.startswith("permission denied to set role")


async def check_role(lanes: Lanes, role: str) -> None:
    """RoleRefused unless the login can assume `role` now: tried, in a transaction of its own that ends at
    once (one round trip straight to PostgreSQL)."""
    try:
        async with lanes.connection(Lanes.FIRST) as conn:
            await conn.execute(f"{set_role(role)}; SELECT 1")
    except REFUSED as exc:
        raise RoleRefused(str(exc).splitlines()[0]) from None


class AsRole:
    """Units of work (db.lanes.Units) whose every transaction runs as `role`.

    Where units share one transaction (db.snapshot_units.HeldLane, behind a pooler), the first refused statement
    aborts it and the others then fail with "current transaction is aborted": they raise the refusal
    instead, so the request is answered for its cause (403), not for that."""

    def __init__(self, units: Units, role: str) -> None:
        self.units = units
        self.role = role
        self._set = set_role(role)
        self._refusal: asyncpg.PostgresError | None = None

    async def copy(self, priority: int, statement: str, output: Output, long: bool = False) -> str:
        with self._causes():
            return await self.units.copy(priority, f"{self._set}; {statement}", output, long)

    @contextlib.asynccontextmanager
    async def connection(self, priority: int) -> AsyncIterator[asyncpg.Connection]:
        with self._causes():
            async with self.units.connection(priority) as conn:
                if conn.is_in_transaction():
                    await conn.execute(self._set)
                    yield conn
                    return
                async with transaction_on(conn, f"BEGIN; {self._set}"):
                    yield conn

    @contextlib.asynccontextmanager
    async def transaction(self, priority: int, long: bool = False) -> AsyncIterator[asyncpg.Connection]:
        with self._causes():
            async with self.units.transaction(priority, long) as conn:
                await conn.execute(self._set)
                yield conn

    @contextlib.contextmanager
    def _causes(self) -> Iterator[None]:
        """Remember a refusal; raise it in place of the aborted transaction it leaves behind."""
        try:
            yield
        except asyncpg.InFailedSQLTransactionError:
            if self._refusal is not None:
                raise self._refusal from None
            raise
        except asyncpg.PostgresError as exc:
            if isinstance(exc, asyncpg.InsufficientPrivilegeError) or refused_role(exc):
                self._refusal = exc
            raise


def as_role(units: Units, role: str | None) -> Units:
    """`units` with every transaction run as `role` (None: as the service's login, unchanged)."""
    return units if role is None else AsRole(units, role)


def role_of(units: Units) -> str | None:
    """The role the units run as, None for the service's login."""
    return units.role if isinstance(units, AsRole) else None
