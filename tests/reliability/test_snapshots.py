"""One moment in time: a /chunked export reads one snapshot of the database, whatever its pages in flight
and whatever the writes going on, and a resume that presents it continues in it. The reference is
/standard's one COPY in the same snapshot (snapshot=): both give the same bytes.

A writer runs transactions all along: inserts, moves between pairs of rows (a ledger whose sum never
changes), deletes. Without a snapshot, a paged export sees some pages before a move and some after:
its sum is off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pyarrow as pa
import pytest

from streaming_api.client import RequestRejected, SnapshotGone, download, read_table, stream_rows
from streaming_api.client.errors import rejection
from streaming_api.web.app import create_app
from tests.support.processes import ServerProcess
from tests.support.relay import CuttingRelay
from tests.support.running import running

# Enough bytes (a note of 200 characters a row: about 25 MB in every format) that an export a client does
# not read yet is still running when the same snapshot is read by /standard beside it.
ROWS = 100_000
TOTAL = ROWS * 100
TABLE = "moment.ledger"
PATH = f"/chunked/{TABLE}"


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(database_url)
    await conn.execute(
        "DROP SCHEMA IF EXISTS moment CASCADE; CREATE SCHEMA moment;"
        " CREATE TABLE moment.ledger (id bigint PRIMARY KEY, account text NOT NULL, amount bigint NOT NULL,"
        " note text NOT NULL);"
        " INSERT INTO moment.ledger SELECT g, 'account-' || g, 100, repeat('n', 200)"
        f" FROM generate_series(1, {ROWS}) g;"
        " ANALYZE moment.ledger"
    )
    try:
        yield database_url
    finally:
        await conn.execute("DROP SCHEMA moment CASCADE")
        await conn.close()


@contextlib.asynccontextmanager
async def writing(url: str) -> AsyncIterator[list[int]]:
    """Transactions until the block ends: a move of 1,000 between two rows (the sum stays TOTAL), a new row
    and the deletion of a row of amount 0 (the sum stays too). Yields the transactions done so far."""
    done = [0]
    stop = asyncio.Event()

    async def write() -> None:
        conn = await asyncpg.connect(url)
        rng = random.Random(7)
        next_id = ROWS + 1
        try:
            while not stop.is_set():
                a, b = rng.sample(range(1, ROWS + 1), 2)
                async with conn.transaction():
                    await conn.execute("UPDATE moment.ledger SET amount = amount + 1000 WHERE id = $1", a)
                    await conn.execute("UPDATE moment.ledger SET amount = amount - 1000 WHERE id = $1", b)
                    await conn.execute("INSERT INTO moment.ledger VALUES ($1, 'new', 0, '')", next_id)
                    await conn.execute("DELETE FROM moment.ledger WHERE id = $1 AND amount = 0", next_id - 1)
                next_id += 1
                done[0] += 1
                await asyncio.sleep(0)
        finally:
            await conn.close()

    task = asyncio.ensure_future(write())
    try:
        await asyncio.sleep(0.05)
        yield done
    finally:
        stop.set()
        await task


def _sum(body: bytes) -> int:
    """The amounts of an NDJSON body, added up."""
    return sum(json.loads(line)["amount"] for line in body.splitlines())


async def _standard(session, base: str, auth: dict, fmt: str, snapshot: str) -> bytes:
    async with session.get(f"{base}/standard/{TABLE}?format={fmt}&snapshot={snapshot}", headers=auth) as response:
        assert response.status == 200, await response.text()
        return await response.read()


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "json", "arrow"])
async def test_a_paged_export_under_writes_equals_one_copy_of_its_snapshot(aiohttp_client, settings, ledger, auth, fmt):
    client = await aiohttp_client(create_app(settings.replace(tables=(TABLE,))))
    async with writing(ledger) as done:
        response = await client.get(f"{PATH}?format={fmt}&page_size=100", headers=auth)
        snapshot = response.headers["X-Snapshot"]
        assert snapshot.startswith("primary:")
        # While the export waits for this client to read (it holds its snapshot), the same moment whole:
        reference = await (await client.get(f"/standard/{TABLE}?format={fmt}&snapshot={snapshot}", headers=auth)).read()
        body = await response.read()
        assert done[0] > 10, "the writer ran during the export"
    if fmt == "arrow":
        chunked, standard = (pa.ipc.open_stream(b).read_all() for b in (body, reference))
        assert chunked.equals(standard) and sum(chunked.column("amount").to_pylist()) == TOTAL
    else:
        assert body == reference
    if fmt == "ndjson":
        assert _sum(body) == TOTAL


async def test_without_a_snapshot_pages_read_different_moments(aiohttp_client, settings, ledger, auth):
    """What the snapshot prevents (snapshot=off): a ledger whose sum does not balance. (A quiet writer
    could miss it by chance: the test looks for it over several exports.)"""
    client = await aiohttp_client(create_app(settings.replace(tables=(TABLE,))))
    sums = []
    async with writing(ledger):
        for _ in range(5):
            response = await client.get(f"{PATH}?format=ndjson&page_size=100&snapshot=off", headers=auth)
            assert "X-Snapshot" not in response.headers
            sums.append(_sum(await response.read()))
    assert any(total != TOTAL for total in sums), sums


async def test_a_download_cut_three_times_under_writes_equals_one_copy_of_its_start(
    aiohttp_server, settings, ledger, token, auth, tmp_path
):
    server = await aiohttp_server(create_app(settings.replace(tables=(TABLE,))))
    relay = await CuttingRelay(server.port, cuts=[40_000, 40_000, 40_000]).start()
    retried: list[str] = []
    try:
        async with writing(ledger):
            out = tmp_path / "ledger.ndjson"
            await download(
                relay.url(PATH), token, "ndjson", out, page_size=100, compressed=False, backoff=0,
                on_retry=lambda event: retried.append(str(event)),
            )  # fmt: skip
        first_snapshot = _snapshot_of(relay.request_lines)
    finally:
        await relay.close()
    assert len(retried) == 3
    assert all("snapshot=" in line for line in relay.request_lines[1:])
    async with aiohttp.ClientSession() as session:
        reference = await _standard(session, str(server.make_url("")).rstrip("/"), auth, "ndjson", first_snapshot)
    assert out.read_bytes() == reference
    assert _sum(reference) == TOTAL


def _snapshot_of(request_lines: list[str]) -> str:
    """The snapshot the first resume presented (the export's first one)."""
    return parse_qs(urlsplit(request_lines[1].split(" ")[1]).query)["snapshot"][0]


async def test_a_snapshot_past_its_grace_period_is_a_409_saying_to_restart(aiohttp_client, settings, ledger, auth):
    client = await aiohttp_client(create_app(settings.replace(tables=(TABLE,), snapshot_grace=0.2)))
    response = await client.get(f"{PATH}?page_size=100", headers=auth)
    snapshot = response.headers["X-Snapshot"]
    response.close()  # cut: the snapshot is kept 0.2 s for a resume
    await asyncio.sleep(0.05)
    resumed = await client.get(f"{PATH}?page_size=100&after=5&snapshot={snapshot}", headers=auth)
    assert resumed.status == 200 and resumed.headers["X-Snapshot"] != snapshot
    await resumed.read()
    await asyncio.sleep(0.6)  # both grace periods over
    expired = await client.get(f"{PATH}?after=5&snapshot={snapshot}", headers=auth)
    assert expired.status == 409
    body = await expired.json()
    assert body["error"] == "snapshot_gone" and "restart the export" in body["detail"]
    with pytest.raises(RequestRejected, match="409 snapshot_gone"):
        raise await rejection(expired)


async def test_a_snapshot_kept_for_a_resume_holds_no_lock_on_its_table(aiohttp_client, settings, ledger, auth):
    """The first page runs in the holder's transaction; its locks go with its savepoint, so a snapshot kept
    for a resume never blocks a migration (ALTER TABLE waits for any lock on the table)."""
    client = await aiohttp_client(create_app(settings.replace(tables=(TABLE,), snapshot_grace=60)))
    response = await client.get(f"{PATH}?format=ndjson&page_size=100&limit=250", headers=auth)
    await response.read()
    assert response.headers["X-Snapshot"]
    conn = await asyncpg.connect(ledger)
    try:
        await conn.execute("SET lock_timeout = '2s'; ALTER TABLE moment.ledger ADD COLUMN added int")
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'ledger'"
            " AND l.pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    assert held == 0


async def test_a_role_that_hears_no_notices_still_gets_its_snapshot(aiohttp_client, settings, ledger, auth):
    """The snapshot's name comes back in a NOTICE of the first page's query, whatever client_min_messages
    the database gives the service's role."""
    conn = await asyncpg.connect(ledger)
    database = await conn.fetchval("SELECT current_database()")
    await conn.execute(f'ALTER DATABASE "{database}" SET client_min_messages = error')
    try:
        client = await aiohttp_client(create_app(settings.replace(tables=(TABLE,), snapshot_grace=60)))
        response = await client.get(f"{PATH}?format=csv&page_size=100&limit=500", headers=auth)
        body = await response.read()
        snapshot = response.headers["X-Snapshot"]
        reference = await (
            await client.get(f"/standard/{TABLE}?format=csv&limit=500&snapshot={snapshot}", headers=auth)
        ).read()
        assert response.status == 200 and body == reference
    finally:
        await conn.execute(f'ALTER DATABASE "{database}" RESET client_min_messages')
        await conn.close()


async def test_a_snapshot_on_a_server_not_served_is_a_409(client, auth):
    response = await client.get("/chunked?snapshot=replica7:00000003-0000001B-1", headers=auth)
    assert response.status == 409


async def test_a_download_cut_three_times_through_pgbouncer_equals_one_copy_of_its_start(
    settings, ledger, pgbouncer, token, auth, tmp_path
):
    """Transaction pooling with 2 server connections: an export's transaction keeps one of them, and the
    snapshots kept for a resume give theirs up to whatever waits for one (the resumes' own statements)."""
    pooled = settings.replace(database_url=pgbouncer.url(), tables=(TABLE,), pool_max_size=2)
    async with running(pooled) as server:
        relay = await CuttingRelay(server.port, cuts=[40_000, 40_000, 40_000]).start()
        try:
            async with writing(ledger):
                out = tmp_path / "ledger.ndjson"
                await download(relay.url(PATH), token, "ndjson", out, page_size=100, compressed=False, backoff=0)
        finally:
            await relay.close()
        # The snapshot the last resume continued in: the same moment as the first.
        last = parse_qs(urlsplit(relay.request_lines[-1].split(" ")[1]).query)["snapshot"][0]
        reference = await _standard(server.session, server.url, auth, "ndjson", last)
    assert len(relay.request_lines) == 4
    assert out.read_bytes() == reference and _sum(reference) == TOTAL


async def test_a_resume_read_by_another_worker_continues_in_the_snapshot(ledger, jwt_secret, tmp_path, token, auth):
    """Two workers: the resumes land on either (the kernel spreads the connections); each continues in
    the snapshot the other exported, as they share the PostgreSQL server."""
    settings = {"database_url": ledger, "jwt_secret": jwt_secret, "data_dir": str(tmp_path), "workers": 2,
                "tables": (TABLE,)}  # fmt: skip
    server = ServerProcess.start(tmp_path, settings)
    try:
        await server.wait_ready(within=60)
        relay = await CuttingRelay(server.port, cut_every=2_500_000).start()
        try:
            async with writing(ledger):
                out = tmp_path / "ledger.csv"
                await download(
                    relay.url(PATH), token, "csv", out, page_size=100, compressed=False, backoff=0, retries=100
                )
                first_snapshot = _snapshot_of(relay.request_lines)
        finally:
            await relay.close()
        async with aiohttp.ClientSession() as session:
            reference = await _standard(session, f"http://127.0.0.1:{server.port}", auth, "csv", first_snapshot)
        assert out.read_bytes() == reference
        assert len(relay.request_lines) > 5  # cut every 2.5 MB of about 25 MB
    finally:
        server.stop()


async def test_once_the_snapshot_is_gone_a_download_starts_again_and_stream_rows_says_so(
    aiohttp_server, settings, ledger, token, auth, tmp_path
):
    """No grace: a cut export's snapshot goes at once, so its resume is refused. download() and read_table()
    start again (in a new snapshot); stream_rows, whose rows are already yielded, raises."""
    server = await aiohttp_server(create_app(settings.replace(tables=(TABLE,), snapshot_grace=0)))
    relays = [await CuttingRelay(server.port, cuts=[40_000]).start() for _ in range(3)]
    retried: list[str] = []
    # backoff: the cut export has ended (its snapshot let go) before the resume asks for it.
    options = {"page_size": 100, "compressed": False, "backoff": 1.0}
    try:
        out = tmp_path / "ledger.csv"
        on_retry = retried.append
        result = await download(relays[0].url(PATH), token, "csv", out, on_retry=on_retry, **options)
        table = await read_table(relays[1].url(PATH), token, **options)
        with pytest.raises(SnapshotGone, match="409 snapshot_gone"):
            async for _ in stream_rows(relays[2].url(PATH), token, **options):
                pass
    finally:
        for relay in relays:
            await relay.close()
    base = str(server.make_url("")).rstrip("/")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/standard/{TABLE}?format=csv", headers=auth) as response,
    ):
        assert out.read_bytes() == await response.read()
    assert result.rows == table.num_rows == ROWS
    # A cut (resumed), then the snapshot gone (started again).
    assert ["from the start" in str(event) for event in retried] == [False, True]
    assert "snapshot is gone" in str(retried[1])
