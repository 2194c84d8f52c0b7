"""The one start-up failure path: every failure the command line can foresee becomes one line and an exit code.

    2  the configuration: a bad setting, a broken settings.py, a bad argument
    1  the environment: a database that does not answer or refuses, a port already taken, a file not writable

Anything a subcommand raises goes through describe(); what it recognises is printed as one line by main()
(`error: ...`), what it does not is a bug and keeps its traceback. serve raises StartupFailure itself, or
lets the original error (asyncpg's, an OSError from the bind) propagate: both end up here.
"""

from __future__ import annotations

import errno
import re
import socket
from urllib.parse import parse_qs, urlsplit

import asyncpg

from ..db.disk import NoSpace
from ..db.pool import CONNECT_TIMEOUT_SECONDS
from ..db.postmaster import EmbeddedPostgresError
from ..db.schema import NotTheDemoTable
from ..db.served import CatalogError
from ..settings import Settings, SettingsError

EXIT_ENVIRONMENT = 1
EXIT_CONFIGURATION = 2

# What only a connection pooler says (PgBouncer's own error texts), lower case.
POOLER_PHRASES = (
    "pgbouncer",
    "no such database",
    "no such user",
    "server login has been failing",
    "query_wait_timeout",
    "client_login_timeout",
    "no more connections allowed",
    "unsupported startup parameter",
    "pooler error",
    "server_login_retry",
)
# Errors of a connection attempt that never reached a server.
UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ENOENT,
}


class StartupFailure(Exception):
    """A failure with its one line for the user (naming the cause and the setting to change) and exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ENVIRONMENT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def describe(exc: BaseException, settings: Settings | None = None) -> StartupFailure | None:
    """The one line for `exc` (or for the error it was raised from), or None when it is not a foreseen failure."""
    for cause in _chain(exc):
        failure = _describe_one(cause, settings)
        if failure is not None:
            return failure
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """exc, then what it was raised from or during, then the members of exception groups, each once."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return seen


def _describe_one(exc: BaseException, settings: Settings | None) -> StartupFailure | None:
    if isinstance(exc, StartupFailure):
        return exc
    if isinstance(exc, SettingsError):
        return StartupFailure(str(exc), EXIT_CONFIGURATION)
    if isinstance(exc, CatalogError):
        where = (
            "the embedded database" if settings is None or settings.database_url is None else "DATABASE_URL's database"
        )
        hint = " (python run.py seed makes the demo table there)" if "points" in str(exc) else ""
        return StartupFailure(
            f"setting tables: {exc} in {where}; change tables (STREAMING_API_TABLES){hint}", EXIT_CONFIGURATION
        )
    if isinstance(exc, NotTheDemoTable):
        return StartupFailure(
            f"{exc}: seeding writes only its own demo table; serve yours with the tables setting, or seed another "
            "database",
            EXIT_CONFIGURATION,
        )
    if isinstance(exc, NoSpace):
        return StartupFailure(str(exc))
    if isinstance(exc, EmbeddedPostgresError):
        return StartupFailure(f"{exc} (or set DATABASE_URL to use a PostgreSQL of your own)")
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return _refused(exc, settings)
    if isinstance(exc, OSError):
        return _bind_failure(exc, settings) or _unreachable(exc, settings) or _file_failure(exc)
    return None


# --- the database ------------------------------------------------------------------------------------


def database_address(settings: Settings | None) -> str:
    """Where the database is, for a person: host:port (or the socket directory), never the user or password."""
    if settings is None:
        return "the database"
    if not settings.database_url:
        return f"the embedded PostgreSQL in {settings.data_path / 'postgres'}"
    return f"the database at {_host_port(settings.database_url)}"


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
    if host.startswith("/"):
        return f"the socket in {host}"
    try:
        port = parts.port or 5432
    except ValueError:
        port = "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _setting(settings: Settings | None) -> str:
    if settings is not None and not settings.database_url:
        return "set DATABASE_URL to use a PostgreSQL of your own"
    return "check DATABASE_URL (unset it to use the embedded PostgreSQL)"


def _refused(exc: BaseException, settings: Settings | None) -> StartupFailure:
    """The database (or a pooler in front of it) answered, and said no."""
    where = database_address(settings)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if any(phrase in message.lower() for phrase in POOLER_PHRASES):
        pooler = _host_port(settings.database_url) if settings and settings.database_url else "DATABASE_URL"
        return StartupFailure(
            f"the connection pooler (PgBouncer) at {pooler} refused: {message}{_pooler_hint(message)} (DATABASE_URL)"
        )
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError):
        return StartupFailure(
            f"{where} closed the connection while logging in (a pooler such as PgBouncer in front of PostgreSQL "
            f"may be unable to reach it); {_setting(settings)}"
        )
    return StartupFailure(f"{where} refused: {message}; {_setting(settings)}")


def _pooler_hint(message: str) -> str:
    lowered = message.lower()
    if "unsupported startup parameter" in lowered:
        return "; add it to ignore_startup_parameters in pgbouncer.ini"
    if "no such database" in lowered:
        return "; add the database to [databases] in pgbouncer.ini, or fix its name in DATABASE_URL"
    if "cannot connect to server" in lowered or "login has been failing" in lowered:
        return "; PgBouncer cannot reach PostgreSQL behind it"
    return ""


def _unreachable(exc: OSError, settings: Settings | None) -> StartupFailure | None:
    if isinstance(exc, socket.gaierror):
        reason = "no such host"
    elif isinstance(exc, TimeoutError):
        reason = f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s"
    elif exc.errno in UNREACHABLE_ERRNOS or isinstance(exc, ConnectionError) or str(exc).startswith("Multiple"):
        reason = {errno.ECONNREFUSED: "connection refused (is PostgreSQL running there?)"}.get(
            exc.errno or 0, exc.strerror or str(exc)
        )
        if str(exc).startswith("Multiple exceptions"):
            reason = "connection refused on every address (is PostgreSQL running there?)"
    else:
        return None
    return StartupFailure(f"cannot connect to {database_address(settings)}: {reason}; {_setting(settings)}")


# --- the listening socket ----------------------------------------------------------------------------

_BIND_ADDRESS = re.compile(r"bind on address \('?([^',]*)'?, (\d+)")


def _bind_failure(exc: OSError, settings: Settings | None) -> StartupFailure | None:
    text = str(exc)
    if exc.errno != errno.EADDRINUSE and "bind" not in text:
        return None
    found = _BIND_ADDRESS.search(text)
    host, port = (found.group(1), found.group(2)) if found else ("", "")
    if settings is not None:
        host, port = host or settings.host, port or str(settings.port)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return StartupFailure(
            f"{address} is already in use (another server, or this one already running?): "
            "choose another port with --port, or set PORT (STREAMING_API_PORT)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupFailure(f"cannot listen on {host}: no such address on this machine: fix --host or HOST")
    if exc.errno == errno.EACCES:
        return StartupFailure(
            f"not allowed to listen on {address} (ports below 1024 need privileges): choose another with --port, "
            "or set PORT"
        )
    return StartupFailure(f"cannot listen on {address}: {exc.strerror or text}: check --host/HOST and --port/PORT")


def _file_failure(exc: OSError) -> StartupFailure | None:
    if exc.filename is None:
        return None
    return StartupFailure(f"{exc.strerror or type(exc).__name__}: {exc.filename} (check DATA_DIR and its permissions)")
