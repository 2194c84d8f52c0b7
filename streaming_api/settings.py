"""Settings: defaults < settings.py beside run.py < environment (STREAMING_API_<NAME>, DATABASE_URL).

No aiohttp here: the command line, the benchmark and the web app all read the same Settings."""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import os
import re
import traceback
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from .names import BadName, Pattern, parse_patterns, split_list

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "STREAMING_API_"
# The content codings the service can send (web.encoding implements each).
CODINGS = ("zstd", "gzip")
ALLOWED_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


# A browser Origin: scheme://host[:port], no path.
_ORIGIN = re.compile(r"https?://[^/\s:]+(:[0-9]{1,5})?")


class SettingsError(ValueError):
    """A setting has a bad value, or settings.py cannot be run; the message names the setting or the line."""


class SettingsWarning(UserWarning):
    """A name that looks meant as a setting but is not one (a misspelt variable, a lowercase name)."""


Warn = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    # Where to listen. 127.0.0.1 keeps the service on this machine unless asked otherwise.
    host: str = "127.0.0.1"
    port: int = 8080
    # Server processes sharing the port (SO_REUSEPORT spreads connections); 0 or "auto": one per core.
    workers: int = 1
    # postgresql://user:pass@host:port/db; None starts the embedded PostgreSQL under data_dir.
    database_url: str | None = None
    # Read replicas exports read from (spread across them; the primary when none answers). Seeding and
    # schema changes only ever run on the primary (database_url, or the embedded one).
    replica_urls: tuple[str, ...] = ()
    # Embedded database files and the generated JWT secret live here (relative to the project).
    data_dir: str = ".data"
    # The tables and views served: names and patterns (psql's rules: schema.name, "Quoted" keeps case and
    # dots, * and ? are wildcards). The first, when it names one table, is what the bare /chunked serves.
    tables: tuple[str, ...] = ("points",)
    # How often the served tables are read again from the catalog (new columns, new tables), in s; 0: at start.
    catalog_refresh: float = 10.0
    # Rows the embedded database's demo table gets on its first start, and `seed`'s default.
    rows: int = 500_000
    # /chunked rows per page (and per chunk) when the request has no page_size.
    page_size: int = 1000
    max_page_size: int = 10_000
    # /chunked Arrow rows a page (a batch) without page_size, at most max_page_size: pages cost, Arrow's rows little.
    arrow_page_size: int = 10_000
    # /chunked's first page holds at most this many rows (0: page_size), so the first bytes leave sooner.
    first_page_size: int = 100
    # About the most bytes a /chunked page holds: where rows are wide, a page holds fewer rows than page_size.
    page_bytes: int = 8 << 20
    pool_min_size: int = 2
    pool_max_size: int = 10
    # HS* secret; None generates one into data_dir/jwt_secret (mode 0600) on first use.
    jwt_secret: str | None = None
    # Algorithms a token may be signed with; never "none".
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    # PEM public key for RS*/ES* verification, and the private key `token` signs with.
    jwt_public_key_file: str | None = None
    jwt_private_key_file: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Clock skew tolerated on exp / nbf / iat, in seconds.
    jwt_leeway: int = 30
    # Lifetime of tokens minted by `run.py token` and the start-up banner, in seconds.
    token_ttl: int = 3600
    # What a token without a `tables` claim may read (patterns as in tables; "*.*": all; empty: nothing).
    default_grant: tuple[str, ...] = ("*.*",)
    # Run a request as the PostgreSQL role its token's `role` claim names (off: such a token gets a 403).
    token_roles: bool = False
    log_level: str = "INFO"
    # /standard builds whole bodies in memory: at most this many at once, the rest get 503 at once.
    standard_max_concurrency: int = 2
    # /chunked's exports each read one snapshot of the database (as /standard's one COPY does), in a
    # transaction held open for them on a connection of their own; kept snapshot_grace seconds after the
    # export ends, so a resume (snapshot=) continues in it; at most max_snapshots held at once per process
    # (more exports wait for one). False: /chunked's pages read the database as it is when each runs.
    snapshots: bool = True
    snapshot_grace: float = 60.0
    max_snapshots: int = 32
    # /standard answers 413 (pointing to /chunked) for more rows than this, or a body of more bytes.
    standard_max_rows: int = 1_000_000
    standard_max_bytes: int = 256 << 20
    # PostgreSQL statement_timeout for every query the service runs, in seconds.
    statement_timeout: float = 30.0
    # The longest a /standard or /chunked request may take in all, in seconds (503 before headers, abort after).
    request_deadline: float = 600.0
    # A client that takes none of the pending response bytes for this long is dropped, in seconds.
    send_timeout: float = 60.0
    # On SIGTERM, how long in-flight requests may still run before they are aborted, in seconds.
    shutdown_timeout: float = 30.0
    # A client must send a whole request head within this many seconds of connecting (or of starting its
    # next request on a kept-alive connection), else it gets 408 and the connection is closed.
    request_head_timeout: float = 10.0
    # Open client connections at most; 0: as many as the open-file limit leaves room for. At the cap, the
    # connection idle longest (no request head yet, or between requests) is closed to make room.
    max_connections: int = 0
    # Content codings offered to clients that ask (Accept-Encoding), in order of preference; empty: never.
    compression: tuple[str, ...] = ("zstd", "gzip")
    zstd_level: int = 1
    gzip_level: int = 1
    # Proxies (addresses or networks) whose X-Forwarded-For names the client in the access log; from
    # anyone else the header is ignored.
    trusted_proxies: tuple[str, ...] = ()
    # Origins a browser page may call the API from (CORS); empty sends no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    # Serve Prometheus figures at /metrics (requests, first byte and total time, rows, bytes, memory).
    metrics_enabled: bool = True
    # Put /metrics behind the same JWT as the data endpoints.
    metrics_require_token: bool = False

    @property
    def table_patterns(self) -> tuple[Pattern, ...]:
        return parse_patterns(self.tables)

    @property
    def data_path(self) -> Path:
        path = Path(self.data_dir).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def worker_count(self) -> int:
        """workers, with 0 (auto) resolved to the cores this process may run on."""
        if self.workers:
            return self.workers
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # macOS
            return os.cpu_count() or 1

    @property
    def base_url(self) -> str:
        """The server's address as a client on this machine reaches it (0.0.0.0 and :: mean loopback)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def replace(self, **changes: Any) -> Settings:
        merged = {f.name: getattr(self, f.name) for f in fields(self)}
        merged.update(changes)
        return build(merged)


def _coerce(name: str, hint: Any, raw: Any) -> Any:
    """Turn a value from settings.py or the environment into the setting's type, or raise SettingsError."""
    if name == "workers" and isinstance(raw, str) and raw.strip().lower() == "auto":
        return 0
    args = get_args(hint)
    optional = get_origin(hint) in (types.UnionType,) and type(None) in args
    if optional:
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            return None
        hint = next(a for a in args if a is not type(None))
    try:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(str(raw).replace("_", "")) if isinstance(raw, str) else int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            if not isinstance(raw, str):
                raise ValueError(raw)
            return raw
        if get_origin(hint) is tuple:
            items = split_list(raw) if isinstance(raw, str) else list(raw)
            return tuple(str(i).strip() for i in items if str(i).strip())
    except (TypeError, ValueError):
        pass
    else:
        return raw
    raise SettingsError(f"setting {name}: {raw!r} is not a valid {getattr(hint, '__name__', hint)}")


def _validate(s: Settings) -> None:
    def bad(name: str, why: str) -> SettingsError:
        return SettingsError(f"setting {name}: {why} (got {getattr(s, name)!r})")

    if not 0 <= s.port <= 65535:
        raise bad("port", "must be 0..65535")
    if not 0 <= s.workers <= 256:
        raise bad("workers", "must be 1..256, or 0 or auto for one per core")
    if s.rows < 0:
        raise bad("rows", "must be >= 0")
    if not s.tables:
        raise bad("tables", "names no table (the default is points)")
    for name in ("tables", "default_grant"):
        try:
            parse_patterns(getattr(s, name))
        except BadName as exc:
            raise SettingsError(f"setting {name}: {exc}") from None
    if not 0 <= s.catalog_refresh <= 86_400:
        raise bad("catalog_refresh", "must be 0..86,400 seconds (0: read the catalog at start-up only)")
    if not 0 <= s.snapshot_grace <= 86_400:
        raise bad("snapshot_grace", "must be 0..86,400 seconds")
    if not 1 <= s.max_snapshots <= 10_000:
        raise bad("max_snapshots", "must be 1..10,000")
    if not 4096 <= s.page_bytes <= 1 << 30:
        raise bad("page_bytes", "must be 4,096..1,073,741,824")
    if not 1 <= s.standard_max_bytes <= 1 << 30:
        raise bad("standard_max_bytes", "must be 1..1,073,741,824 (PostgreSQL makes no value over 1 GB)")
    if not 1 <= s.max_page_size <= 1_000_000:
        raise bad("max_page_size", "must be 1..1,000,000")
    for name, least in (("page_size", 1), ("first_page_size", 0)):
        if not least <= getattr(s, name) <= s.max_page_size:
            raise bad(name, f"must be {least}..max_page_size ({s.max_page_size})")
    if s.arrow_page_size < 1:
        raise bad("arrow_page_size", "must be 1 or more (max_page_size caps it)")
    if s.pool_min_size < 0 or s.pool_max_size < 1 or s.pool_min_size > s.pool_max_size:
        raise bad("pool_max_size", "needs 0 <= pool_min_size <= pool_max_size and pool_max_size >= 1")
    if s.database_url is not None and not s.database_url.startswith(("postgresql://", "postgres://")):
        raise SettingsError("setting database_url: must start with postgresql:// (value not shown)")
    for index, url in enumerate(s.replica_urls, start=1):
        if not url.startswith(("postgresql://", "postgres://")) or not _parses(url):
            raise SettingsError(
                f"setting replica_urls: replica {index} is not a postgresql://user@host:port/db URL (value not shown)"
            )
    if not s.jwt_algorithms:
        raise bad("jwt_algorithms", "needs at least one algorithm")
    for alg in s.jwt_algorithms:
        if alg not in ALLOWED_ALGORITHMS:
            raise bad("jwt_algorithms", f"{alg!r} is not one of {', '.join(ALLOWED_ALGORITHMS)}")
    families = {alg[:2] for alg in s.jwt_algorithms}
    if families & {"RS", "ES"} and not s.jwt_public_key_file:
        raise bad("jwt_public_key_file", "is required when jwt_algorithms has RS* or ES*")
    if len(families) > 1 and "HS" in families:
        # Mixing a shared secret with public keys invites algorithm confusion.
        raise bad("jwt_algorithms", "cannot mix HS* with RS*/ES*")
    if s.jwt_secret is not None and len(s.jwt_secret.encode()) < 32:
        raise SettingsError("setting jwt_secret: must be at least 32 bytes (value not shown)")
    if s.jwt_leeway < 0:
        raise bad("jwt_leeway", "must be >= 0")
    if s.token_ttl < 1:
        raise bad("token_ttl", "must be >= 1")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise bad("log_level", "must be DEBUG, INFO, WARNING or ERROR")
    if s.standard_max_concurrency < 1:
        raise bad("standard_max_concurrency", "must be >= 1")
    if s.standard_max_rows < 1:
        raise bad("standard_max_rows", "must be >= 1")
    for name in ("statement_timeout", "request_deadline", "send_timeout"):
        if not 0.001 <= getattr(s, name) <= 86_400:
            raise bad(name, "must be 0.001..86,400 seconds")
    if not 0 <= s.shutdown_timeout <= 86_400:
        raise bad("shutdown_timeout", "must be 0..86,400 seconds")
    if not 0.1 <= s.request_head_timeout <= 3_600:
        raise bad("request_head_timeout", "must be 0.1..3,600 seconds")
    if s.max_connections < 0:
        raise bad("max_connections", "must be >= 0 (0: from the open-file limit)")
    for coding in s.compression:
        if coding not in CODINGS:
            raise bad("compression", f"{coding!r} is not one of {', '.join(CODINGS)} (or leave it empty: none)")
    if len(set(s.compression)) != len(s.compression):
        raise bad("compression", "names a coding twice")
    if not -7 <= s.zstd_level <= 22:
        raise bad("zstd_level", "must be -7..22 (1 is fast and compresses these rows best)")
    if not 0 <= s.gzip_level <= 3:
        raise bad("gzip_level", "must be 0..3 (ISA-L's levels)")
    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise bad("trusted_proxies", f"{proxy!r} is not an IP address or network") from None
    for origin in s.cors_origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise bad("cors_origins", f"{origin!r} is not '*' or scheme://host[:port]")


def _closest(name: str) -> str | None:
    """The setting `name` was most likely meant to be (lower case), or None."""
    found = difflib.get_close_matches(name.lower(), [f.name for f in fields(Settings)], n=1, cutoff=0.6)
    return found[0] if found else None


def _did_you_mean(name: str, spell: Callable[[str], str]) -> str:
    closest = _closest(name)
    return f" (did you mean {spell(closest)}?)" if closest else ""


def _parses(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        return False
    return bool(parts.hostname or "host=" in parts.query)


def build(values: Mapping[str, Any]) -> Settings:
    """Settings from a mapping of raw values (unknown names are an error), validated."""
    hints = get_type_hints(Settings)
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]}{_did_you_mean(unknown[0], str)}")
    settings = Settings(**{name: _coerce(name, hints[name], raw) for name, raw in values.items()})
    _validate(settings)
    return settings


def _run_module(path: Path) -> types.ModuleType:
    """settings.py, run; a file that fails to run is a SettingsError naming its line."""
    spec = importlib.util.spec_from_file_location("_streaming_api_local_settings", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise SettingsError(f"{path}, line {exc.lineno}: {exc.msg} (a Python syntax error)") from None
    except Exception as exc:
        lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == str(path)]
        where = f", line {lines[-1]}" if lines else ""
        raise SettingsError(f"{path}{where}: {type(exc).__name__}: {exc}") from None
    return module


def _from_module(path: Path, warn: Warn) -> dict[str, Any]:
    module = _run_module(path)
    known = {f.name.upper(): f.name for f in fields(Settings)}
    values = {}
    for attr, value in vars(module).items():
        if attr.startswith("_") or isinstance(value, types.ModuleType | types.FunctionType | type):
            continue
        if attr.isupper():
            if attr not in known:
                raise SettingsError(f"unknown setting {attr} in {path}{_did_you_mean(attr, str.upper)}")
            values[known[attr]] = value
        elif (closest := _closest(attr)) is not None:
            # Lower- or mixed-case names are helpers, unless they look like a setting: then say it is ignored.
            warn(f"{attr} in {path} is ignored: settings are UPPER_CASE (did you mean {closest.upper()}?)")
    return values


def _warn_about_unknown_variables(environ: Mapping[str, str], warn: Warn) -> None:
    known = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            hint = _did_you_mean(name[len(ENV_PREFIX) :], lambda n: ENV_PREFIX + n.upper())
            warn(f"environment variable {name} is not a setting and is ignored{hint}")


def load(
    settings_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    on_warning: Warn | None = None,
    **overrides: Any,
) -> Settings:
    """Defaults, then settings.py (UPPER_CASE names), then the environment, then explicit overrides.

    A name that looks meant as a setting but is not one is reported to on_warning (default: warnings.warn)."""
    warn = on_warning or (lambda message: warnings.warn(message, SettingsWarning, stacklevel=3))
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = settings_file if settings_file is not None else PROJECT_ROOT / "settings.py"
    if path.exists():
        values.update(_from_module(path, warn))
    _warn_about_unknown_variables(environ, warn)
    for f in fields(Settings):
        env_name = ENV_PREFIX + f.name.upper()
        if env_name in environ:
            values[f.name] = environ[env_name]
    if "DATABASE_URL" in environ and ENV_PREFIX + "DATABASE_URL" not in environ:
        values["database_url"] = environ["DATABASE_URL"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build(values)
