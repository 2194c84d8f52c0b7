"""The routes: /standard buffers the whole body, /chunked streams it page by page, /healthz.

Both export endpoints run the same export with the same error path (`_send_export`); they differ only
in their sink, what is done with each chunk: `Buffered` collects it, `Streamed` writes it (web.sinks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import asyncpg
from aiohttp import ClientConnectionResetError, web

from ..db.filters import REQUEST_ERRORS
from ..db.lanes import Lanes, Units
from ..db.pool import DB_ERRORS
from ..db.roles import RoleRefused, as_role, check_role, refused_role
from ..db.snapshot_units import HeldLane, Moment, Opening
from ..db.snapshots import NOT_HELD, SnapshotGone
from ..db.sources import Source, where
from ..export import count
from ..export.count import RowCount
from ..export.pages import encoded_chunks
from . import problems
from .guards import exact_rows
from .keys import CATALOG, GRANT, LANES, SETTINGS, SOURCES, STANDARD_SLOTS, TIMING
from .middleware.auth import accepts_link
from .replies import Reply, make_reply, resolve_values
from .sending import ClientGone, ClientTooSlow, abort
from .sinks import Buffered, Streamed, content_headers, count_headers

log = logging.getLogger(__name__)

# What PostgreSQL says when a table changed under a request planned with its old shape (a column or the
# table dropped, a privilege revoked): read the catalog again, and let the client retry.
SCHEMA_CHANGED = (asyncpg.UndefinedColumnError, asyncpg.UndefinedTableError, asyncpg.InsufficientPrivilegeError)
# What PostgreSQL may still say of a filter once the export runs: the request's fault, a 400.
FILTER_REFUSED = (*REQUEST_ERRORS, asyncpg.FeatureNotSupportedError)


async def _role_checked(request: web.Request) -> str | None:
    """The role the request runs as (its token's), once the service's login has shown it can assume it:
    403 before the first byte when it cannot."""
    role = request[GRANT].role
    if role is None:
        return None
    try:
        await check_role(request.app[LANES], role)
    except RoleRefused as exc:
        raise _cannot_assume(role, exc) from None
    except DB_ERRORS as exc:
        raise problems.unavailable(exc) from None
    return role


def _cannot_assume(role: str, exc: BaseException) -> web.HTTPException:
    return problems.role_refused(f"the service's login cannot assume role {role!r}: {exc}", role)


def _refusal(role: str | None, exc: BaseException, reply: Reply) -> web.HTTPException | None:
    """The 403 for what the database refused the request's role (its GRANTs), the 400 for a filter it
    refused; None for anything else."""
    if role is not None and refused_role(exc):
        return _cannot_assume(role, exc)
    if role is not None and isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return problems.role_may_not_read(role, reply.export.table.qualified, exc)
    if isinstance(exc, FILTER_REFUSED) and reply.export.filters:
        return problems.filter_refused(exc, reply.export.filter_parameters)
    return None


async def _headers_only(request: web.Request, reply: Reply, endpoint: str) -> web.StreamResponse:
    """HEAD: the headers a GET would send, with no export run (so no length: it is not known). /standard's
    count is exact, as its GET's is (a 413 stays a 413); /chunked's is what its GET would send."""
    role = await _role_checked(request)
    lanes = as_role(request.app[LANES], role)
    try:
        export = await resolve_values(request.app[LANES], reply.export)
        reply = replace(reply, export=export)
        if endpoint == "standard":
            cap = request.app[SETTINGS].standard_max_rows
            rows = await exact_rows(lanes, export, cap)
            if rows > cap:
                raise problems.too_many_rows(request, cap)
            counted = RowCount(rows, True)
        else:
            counted = await count.expected(lanes, export)
    except DB_ERRORS as exc:
        raise problems.unavailable(exc) from None
    except asyncpg.PostgresError as exc:
        refusal = _refusal(role, exc, reply)
        if refusal is None:
            raise
        raise refusal from None
    response = web.StreamResponse()
    content_headers(response, reply)
    count_headers(response, counted)
    await response.prepare(request)
    request[TIMING].mark_headers(response.status)
    await response.write_eof()
    return response


async def _send_export(
    request: web.Request, reply: Reply, make_sink: Callable[[Reply, Units, Lanes], Buffered | Streamed]
) -> web.StreamResponse:
    """Run the export into a sink, within request_deadline, reading from the first source that works: a
    replica that fails before anything was sent is set aside and the next one (at last the primary) tried.
    Before the headers are out a failure is a JSON error (503 for the database or the deadline); after,
    the connection is cut, never ended cleanly."""
    settings = request.app[SETTINGS]
    timing = request[TIMING]
    sources = request.app[SOURCES]
    deadline = asyncio.timeout(settings.request_deadline)
    candidates = sources.for_export()
    asked = reply.export.snapshot_asked
    if isinstance(asked, tuple):
        # A snapshot lives on the server that exported it: the export reads that one, or none.
        named = sources.named(asked[0])
        if named is None or named.lanes is None:
            raise problems.snapshot_gone(asked, "its server is not one this service reads")
        candidates = [named]
    sink = make_sink(reply, request.app[LANES], request.app[LANES])
    role = None
    try:
        async with deadline:
            role = await _role_checked(request)
            # A resume's key values and the filters', read by PostgreSQL as their types (a 400 if they are not).
            reply = replace(reply, export=await resolve_values(request.app[LANES], reply.export))
            for attempt, source in enumerate(candidates):
                assert source.lanes is not None
                timing.source = source.label
                try:
                    async with _in_snapshot(request, reply, source) as (made, units):
                        lanes = as_role(units, role)
                        sink = make_sink(made, lanes, source.lanes)
                        await _export_into(request, made, sink, lanes)
                except DB_ERRORS as exc:
                    if sink.response.prepared or attempt == len(candidates) - 1:
                        raise
                    sources.failed(source, exc)
                    log.warning(
                        "%s failed before the first byte: reading from %s", source.name, candidates[attempt + 1].name
                    )
                    continue
                sources.worked(source)
                break
    except web.HTTPException:
        raise
    except (ClientGone, ClientConnectionResetError):
        # ClientConnectionResetError: aiohttp's own word for a transport the client already closed.
        timing.outcome = "client_gone"
        log.info("client went away after %d rows", timing.rows)
    except asyncio.CancelledError:
        if sink.response.prepared:
            timing.outcome = "aborted"
            abort(request)
        raise
    except Exception as exc:
        refusal = None if sink.response.prepared else _refusal(role, exc, reply)
        if refusal is not None:
            raise refusal from None
        if isinstance(exc, SCHEMA_CHANGED):
            request.app[CATALOG].refresh_soon(request.app[LANES])
        if not sink.response.prepared:
            if isinstance(exc, (SnapshotGone, *NOT_HELD)) and isinstance(asked, tuple):
                raise problems.snapshot_gone(asked, "it is no longer held (its grace period passed)") from None
            if deadline.expired():
                raise problems.deadline_passed(settings.request_deadline) from None
            if isinstance(exc, DB_ERRORS):
                raise problems.unavailable(exc) from None
            if isinstance(exc, SCHEMA_CHANGED):
                raise problems.table_changed(reply.export.table.qualified) from None
            raise
        # Headers are out: the only honest signal left is to cut the connection (no final chunk).
        timing.outcome = "aborted"
        abort(request)
        if isinstance(exc, ClientTooSlow):
            log.info(
                "client took no data for %g s (send_timeout): dropped after %d rows", settings.send_timeout, timing.rows
            )
        elif deadline.expired():
            log.error(
                "stream aborted after %d rows: request_deadline (%g s) passed", timing.rows, settings.request_deadline
            )
        else:
            log.error("stream aborted after %d rows: %s", timing.rows, _describe(exc))
    return sink.response


@contextlib.asynccontextmanager
async def _in_snapshot(request: web.Request, reply: Reply, source: Source) -> AsyncIterator[tuple[Reply, Units]]:
    """The reply and where its statements run. /chunked's paged export reads a snapshot held for it (db.
    snapshots: a new one, or the one snapshot= names, continued), kept for a resume when it ends; an export
    given snapshot= reads that one; a single statement (/standard, a relation without a key) reads one
    moment by itself."""
    assert source.lanes is not None and source.snapshots is not None
    export = reply.export
    asked = export.snapshot_asked
    resumable = export.page_size is not None and bool(export.table.key)
    if not resumable or asked == "off" or (asked is None and not request.app[SETTINGS].snapshots):
        if isinstance(asked, tuple):
            moment = Moment(source.label, asked[1])
            yield replace(reply, export=replace(export, snapshot=moment)), source.lanes.reading(asked[1])
        else:
            yield reply, source.lanes
        return
    snapshots = source.snapshots
    held = await snapshots.hold(asked[1] if isinstance(asked, tuple) else None)
    whole = False
    try:
        lanes: Units
        if source.lanes.unit_begin is None:
            # The first statement on the holder, the rest in parallel on the shared lanes (db.snapshots).
            moment = Moment(source.label)
            lanes = Opening(snapshots, held, source.lanes, moment)
        else:
            # Behind a transaction pooler, every statement on the holder's server connection: one that
            # waited for a second while it held its first could wait for ever.
            await snapshots.begin(held)
            moment = Moment(source.label, held.id)
            lanes = HeldLane(held, source.lanes.long_timeout)
        yield replace(reply, export=replace(export, snapshot=moment)), lanes
        whole = True
    finally:
        await snapshots.done(held, whole)


async def _export_into(request: web.Request, reply: Reply, sink: Buffered | Streamed, lanes: Units) -> None:
    """The export itself: where /standard and /chunked part ways is the sink, what it does with each chunk."""
    await sink.before_export()
    key_range = reply.export.table.key_range
    smallest = None if key_range is None else key_range[0]
    chunks = encoded_chunks(lanes, reply.export, request[TIMING], smallest, sink.counting)
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            await sink.take(chunk)
    await sink.finish()


@accepts_link
async def standard(request: web.Request) -> web.StreamResponse:
    """Every requested row from one COPY, the whole body built in memory, sent with a Content-Length."""
    reply = make_reply(request, "standard")
    if request.method == "HEAD":
        return await _headers_only(request, reply, "standard")
    # One more row than the cap: enough to know the cap is passed, without reading the rest.
    cap = request.app[SETTINGS].standard_max_rows
    limit = cap + 1 if reply.export.limit is None else min(reply.export.limit, cap + 1)
    reply = replace(reply, export=replace(reply.export, limit=limit))
    slots = request.app[STANDARD_SLOTS]
    # Each buffered body costs memory in proportion to its size: refuse at once rather than queue.
    if not slots.try_acquire():
        raise problems.standard_busy(slots.limit)
    try:
        return await _send_export(request, reply, lambda made, lanes, _: Buffered(request, made, lanes))
    finally:
        slots.release()


@accepts_link
async def chunked(request: web.Request) -> web.StreamResponse:
    """Each page written as its own chunk as soon as PostgreSQL returns it, awaiting every write."""
    reply = make_reply(request, "chunked")
    if request.method == "HEAD":
        return await _headers_only(request, reply, "chunked")
    return await _send_export(request, reply, lambda made, lanes, shared: Streamed(request, made, lanes, shared))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__


async def healthz(request: web.Request) -> web.Response:
    """The primary and each replica: 200 while exports can be served (from a replica if need be), else 503."""
    sources = request.app[SOURCES]

    async def state(source: Source) -> dict[str, str]:
        described = {"name": source.label, "at": where(source.url)} if source.replica else {}
        try:
            await sources.ping(source)
        except DB_ERRORS as exc:
            if source.replica:
                sources.failed(source, exc)
            return {**described, "status": "unavailable", "error": type(exc).__name__}
        if source.replica:
            sources.worked(source)
        return {**described, "status": "ok"}

    primary, *replicas = await asyncio.gather(state(sources.primary), *(state(r) for r in sources.replicas))
    serving = primary["status"] == "ok" or any(replica["status"] == "ok" for replica in replicas)
    body: dict[str, object] = {"status": "ok" if serving else "unavailable", "database": primary["status"]}
    if primary["status"] != "ok":
        body["error"] = primary["error"]
    if replicas:
        body["replicas"] = replicas
    headers = None if serving else {"Retry-After": problems.RETRY_AFTER_SECONDS}
    return web.json_response(body, status=200 if serving else 503, headers=headers)
