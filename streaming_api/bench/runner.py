"""The plan and its execution: every size, format, endpoint and concurrency level, each measured the same way.

For every size, format and endpoint ("a group"), when the bench owns the server it starts a fresh server
process, so no figure depends on which groups ran before it (memory a previous /standard left in the
heap, say). In a group: one warm-up request; then at concurrency 1, `repeat` runs alternating with
`repeat` runs of the matching COPY floor (so machine load drifts affect both alike); then at every
higher level one warm-up round and `repeat` runs, all clients starting together. Warm-ups are verified
and recorded, but left out of the statistics.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os

import asyncpg

from ..db.database import Database
from ..settings import Settings
from ..tokens import load_keys, mint_token
from . import filtering
from . import floor as floors
from .direct import DirectReaders
from .link import Built, RelayProcess, link_up
from .linkspec import LinkSpec
from .meters import CpuMeter, RunMeters, rss_figures
from .plan import Group, describe_options, describe_server, groups, guards, server_settings, too_big
from .probe import metrics_delta
from .progress import Progress
from .reads import TableReads, direct_readers
from .results import BenchResult, FloorRunResult, GroupResult, Options, RunResult, machine_info
from .server import ServerProcess, free_port, server_environment
from .stats import MB
from .subject import Subject, from_catalog, from_server
from .verify import Verifier, evaluate
from .wire import Received, Target, fetch_together


class Runner:
    def __init__(self, options: Options, settings: Settings, progress: Progress) -> None:
        self.options = options
        self.settings = settings
        self.progress = progress
        self.owned = options.url is None
        self.verifier = Verifier()
        self.conn: asyncpg.Connection | None = None
        self.database: Database | None = None
        self.data_path = options.data_path(settings)
        self.server_settings = server_settings(options, settings, self.data_path) if self.owned else settings
        self.result = BenchResult(
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            machine=machine_info(),
            server=describe_server(options, self.server_settings, self.owned, self.data_path),
            options=describe_options(options, self.owned or bool(options.database_url)),
        )
        # The link the groups now run over (None: loopback).
        self.link: Built | None = None
        # The table measured, once found (bench.subject).
        self.subject: Subject | None = None
        # The direct connections Arrow is read through beside the service (bench.direct).
        self.direct: DirectReaders | None = None
        # Per filter and limit: the condition its floor runs and the rows its bodies hold (filtering.judged).
        self.judged: dict[tuple[str, int | None], tuple[str | None, int | None]] = {}

    def _token(self) -> str | None:
        if self.options.token:
            return self.options.token
        try:
            return mint_token(load_keys(self.server_settings), subject="bench", ttl=self.settings.token_ttl)
        except (OSError, RuntimeError, ValueError) as exc:
            if self.owned:
                raise
            self.result.notes.append(f"no --token given and none could be minted here ({exc}): requests go without")
            return None

    # --- the whole plan ---------------------------------------------------------------------------

    async def run(self) -> BenchResult:
        try:
            if self.owned:
                # One log per bench run: the server processes of every group append to it.
                (self.data_path / "server.log").unlink(missing_ok=True)
                self.database = Database(self.server_settings, self.data_path)
                self.progress.stage(f"starting the bench's embedded PostgreSQL in {self.data_path}")
                self.conn = await floors.connect(await self.database.start())
            elif self.options.database_url:
                self.conn = await floors.connect(self.options.database_url)
            else:
                self.result.notes.append(
                    "no floor: the bench did not start the server and has no --database-url to run COPY against"
                )
            if self.conn is not None:
                self.result.machine["postgresql"] = await floors.postgres_version(self.conn)
                if "arrow" in self.options.formats:
                    url = self.database.url if self.database is not None else self.options.database_url
                    self.direct = direct_readers(url, self.result.notes)
            sizes: tuple[int | None, ...] = self.options.sizes if self.owned else (self.options.rows or (None,))
            for rows in sizes:
                await self._run_size(rows)
        finally:
            if self.direct is not None:
                self.direct.close()
            if self.conn is not None:
                await self.conn.close()
            if self.database is not None:
                await self.database.stop()
            self.result.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
            self.result.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            self.result.verification = {
                "parsed_in_full": self.verifier.parsed,
                "identical_to_a_parsed_body": self.verifier.matched,
            }
        return self.result

    async def _run_size(self, rows: int | None) -> None:
        table = self.options.table
        if self.owned and self.database is not None:
            assert rows is not None
            self.progress.stage(f"making the bench's {table} table hold {rows:,} rows")
            seeding = await self.database.ensure_rows(rows, "different", self.progress.seeding(), table)
            self.result.seeding.append(
                {"table": table, "rows": rows, "seeded": seeding.seeded, "seconds": round(seeding.seconds, 2)}
            )
        subject = await self._find_subject()
        # A limit only where the bench does not own the table (its own holds exactly the rows asked for).
        limit = None if self.owned else rows
        if rows is None and self.conn is not None and subject.table is not None:
            rows = await floors.count_rows(self.conn, subject.table)
        for index, spec in enumerate(self.options.links or (None,)):
            async with self._link(spec, index) as built:
                self.link = built
                try:
                    rows = await self._run_groups(rows, limit)
                finally:
                    self.link = None

    async def _find_subject(self) -> Subject:
        """The table measured, read again for every size (its sampled width follows the reseeding)."""
        name = self.options.table
        if self.owned or self.options.database_url:
            url = self.database.url if self.database is not None else self.options.database_url
            assert url is not None
            subject = await from_catalog(url, name, demo=self.owned)
        else:
            assert self.options.url is not None
            subject = await from_server(Target.from_url(self.options.url, self._token()), name)
        self.subject = subject
        self.verifier.expected = subject.expected
        self.result.table = subject.describe()
        return subject

    def _link(self, spec: LinkSpec | None, index: int) -> contextlib.AbstractAsyncContextManager[Built | None]:
        if spec is None:
            return contextlib.nullcontext()
        return self._built_link(spec, index)

    @contextlib.asynccontextmanager
    async def _built_link(self, spec: LinkSpec, index: int):  # type: ignore[no-untyped-def]
        self.progress.stage(f"building the link {spec.label}")
        async with link_up(spec, self.options.shaper, index) as built:
            if not any(known.get("label") == spec.label for known in self.result.links):
                self.result.links.append(built.description)
            self.progress.link(built.description)
            yield built

    async def _run_groups(self, rows: int | None, limit: int | None) -> int | None:
        assert self.subject is not None
        for spec in groups(self.options, rows, self.subject.name):
            group = await self._run_group(spec, limit)
            self.result.groups.append(group)
            # Remote, whole table: the count the first verified (unfiltered) body had stands for the rest.
            if rows is None and spec.filter is None:
                rows = next((r.rows for run in group.runs for r in run.requests if r.verified), None)
        return rows

    # --- one group: one endpoint, one format, one size ----------------------------------------------

    async def _run_group(self, spec: Group, limit: int | None) -> GroupResult:
        rows = spec.rows
        kept = None
        if spec.filter is not None:
            # Checked and counted once per filter and limit: the table does not change between groups.
            if (spec.filter, limit) not in self.judged:
                assert self.subject is not None
                self.judged[spec.filter, limit] = await filtering.judged(
                    self.conn, self.subject.table, spec.filter, limit
                )
            kept = self.judged[spec.filter, limit][1]
        group = GroupResult(
            rows,
            spec.format,
            spec.endpoint,
            spec.path(limit),
            floors.FLOOR_OF_FORMAT[spec.format],
            coding=spec.coding,
            page_size=spec.page_size,
            snapshot=spec.snapshot,
            filter=spec.filter,
            kept_rows=kept,
            link=self.link.spec.label if self.link else None,
        )
        server: ServerProcess | None = None
        relay: RelayProcess | None = None
        token = self._token()
        label = spec.label() + (f" over {group.link}" if group.link else "")
        try:
            if self.owned:
                assert rows is not None
                host = self.link.server_host if self.link else "127.0.0.1"
                port = free_port(host)
                log_path = self.data_path / "server.log"
                env = server_environment(self.data_path, port, guards(self.options), host)
                server = ServerProcess(env, port, log_path, host)
                group.server_log = str(log_path)
                self.progress.stage(f"{label}: starting a fresh server")
                control = await server.start(token or "")
                await server.prime(control, spec, self.options.workers)
                group.format_load_bytes = server.format_load_rss
                if server.format_load_rss and server.format_load_rss > 5 * MB:
                    self.result.notes.append(
                        f"{label}: the server's first one-row {spec.format} export loaded "
                        f"{server.format_load_rss / MB:.0f} MB (once per process); not counted per request"
                    )
            else:
                assert self.options.url is not None
                control = Target.from_url(self.options.url, token)
            target = control
            if self.link is not None:
                relay = RelayProcess(self.link, control.port, self.data_path / "relay.log")
                target = Target("http", "127.0.0.1", await relay.start(), control.base_path, token)
            await self._run_levels(group, spec, (target, control), server, limit, label)
        finally:
            if relay is not None:
                await relay.stop()
            if server is not None:
                await server.stop()
        return group

    async def _run_levels(
        self,
        group: GroupResult,
        spec: Group,
        targets: tuple[Target, Target],
        server: ServerProcess | None,
        limit: int | None,
        label: str,
    ) -> None:
        """targets: where the timed requests go (over the link, if any), and where the meters ask (not)."""
        rows = group.body_rows
        warmup = await self._run_once(group, targets, server, 1, rows, warmup=True, label=f"{label} warm-up")
        group.runs.append(warmup)
        refused = [r for r in warmup.requests if r.refused]
        if refused and len(refused) == len(warmup.requests):
            # /standard's 413 for a body too big to buffer: what it should do, measured as such.
            group.refused = {"error": refused[0].refused, "detail": refused[0].error}
            self.result.notes.append(f"{label}: refused (413 {refused[0].refused}), as it should: {refused[0].error}")
            return
        if rows is None:
            rows = next((r.rows for r in warmup.requests if r.verified), None)
            group.rows, group.kept_rows = (rows, None) if group.filter is None else (group.rows, rows)
        body_bytes = max((r.bytes for r in warmup.requests), default=0)
        levels = self.options.concurrency
        floor = spec.with_floor and self.conn is not None
        reads = self._table_reads(spec, targets[0], server, limit) if spec.reads_tables and 1 in levels else None
        if 1 not in levels and floor:
            await self._floor_runs(group, limit, self.options.repeat)
        for concurrency in levels:
            reason = too_big(self.owned and group.endpoint == "standard", concurrency, body_bytes)
            if reason:
                group.skipped.append({"concurrency": concurrency, "reason": reason})
                self.result.notes.append(f"{label} {group.rows or '?'} rows ×{concurrency} skipped: {reason}")
                continue
            if concurrency > 1:
                group.runs.append(
                    await self._run_once(
                        group, targets, server, concurrency, rows, warmup=True, label=f"{label} ×{concurrency} warm-up"
                    )
                )
            elif floor:
                group.floor_runs.append(await self._floor_run(group, limit, warmup=True))
            if concurrency == 1 and reads is not None:
                self.progress.stage(f"{label}: warm-up reads into a pyarrow.Table ({', '.join(reads.readers)})")
                await reads.round(group, warmup=True)
            for repeat in range(self.options.repeat):
                if concurrency == 1 and floor:
                    group.floor_runs.append(await self._floor_run(group, limit, warmup=False))
                if concurrency == 1 and reads is not None:
                    self.progress.stage(f"{label}: reads into a pyarrow.Table, {repeat + 1}/{self.options.repeat}")
                    await reads.round(group, warmup=False)
                group.runs.append(
                    await self._run_once(
                        group,
                        targets,
                        server,
                        concurrency,
                        rows,
                        warmup=False,
                        label=f"{label} ×{concurrency} run {repeat + 1}/{self.options.repeat}",
                    )
                )

    def _table_reads(self, spec: Group, target: Target, server: ServerProcess | None, limit: int | None) -> TableReads:
        assert self.subject is not None
        postgres = self._postgres_meter()
        where = (target.url + spec.resource, target.token, limit, spec.page_size)
        return TableReads(self.direct, self.subject.table, *where, server.pid if server else None, postgres)

    # --- the floor --------------------------------------------------------------------------------

    async def _floor_runs(self, group: GroupResult, limit: int | None, count: int) -> None:
        if self.conn is None:
            return
        group.floor_runs.append(await self._floor_run(group, limit, warmup=True))
        for _ in range(count):
            group.floor_runs.append(await self._floor_run(group, limit, warmup=False))

    async def _floor_run(self, group: GroupResult, limit: int | None, warmup: bool) -> FloorRunResult:
        assert self.conn is not None
        kind, rows = group.floor_kind, group.body_rows
        self.progress.stage(f"floor: {kind}{' warm-up' if warmup else ''}")
        postgres = self._postgres_meter()
        before = postgres.snapshot() if postgres else None
        assert self.subject is not None and self.subject.table is not None
        where = None if group.filter is None else self.judged[group.filter, limit][0]
        run = await floors.measure_floor(self.conn, kind, self.subject.table, limit, where)
        used = CpuMeter.used(before, postgres.snapshot()) if postgres and before is not None else None
        figures = (run.total_ms, run.first_byte_ms, run.bytes, run.rows, run.client_cpu_s, used)
        return FloorRunResult(kind, warmup, *figures, ok=rows is None or run.rows == rows)

    def _postgres_meter(self) -> CpuMeter | None:
        pid = self.database.embedded.postmaster_pid() if self.database and self.database.embedded else None
        return CpuMeter(pid, descendants=True) if pid else None

    # --- one run: `concurrency` requests started together -------------------------------------------

    async def _run_once(
        self,
        group: GroupResult,
        targets: tuple[Target, Target],
        server: ServerProcess | None,
        concurrency: int,
        rows: int | None,
        warmup: bool,
        label: str,
    ) -> RunResult:
        keep_series = concurrency == 1
        postgres_pid = self.database.embedded.postmaster_pid() if self.database and self.database.embedded else None
        probe = self.options.healthz_probe and concurrency > 1 and not warmup
        target, control = targets
        meters = RunMeters(control, server.pid if server else None, postgres_pid, probe_healthz=probe)
        received = [Received(group.path, group.coding) for _ in range(concurrency)]
        await meters.start()
        self.progress.run_started(label, received)
        try:
            await fetch_together(target, received, self.options.timeout)
        finally:
            self.progress.run_finished()
            costs = await meters.stop()

        self.progress.stage(f"{label}: verifying {concurrency} bod{'y' if concurrency == 1 else 'ies'}")
        requests = [evaluate(self.verifier, group.format, one, rows, keep_series, group.filter) for one in received]
        starts = [one.started for one in received if one.started]
        ends = [one.times[-1] for one in received if one.times]
        wall = (max(ends) - min(starts)) if starts and ends else 0.0
        verified_rows = sum(r.rows or 0 for r in requests if r.verified)
        body_bytes = sum(r.bytes for r in requests if r.verified)
        server_metrics = metrics_delta(costs.metrics_before, costs.metrics_after, group.endpoint, group.format)
        server_cpu_s = costs.server_cpu_s
        if server_cpu_s is None and server_metrics is not None:
            server_cpu_s = server_metrics["cpu_s"]
        healthz = costs.healthz
        run = RunResult(
            concurrency=concurrency,
            warmup=warmup,
            wall_ms=round(wall * 1000, 3),
            aggregate_rows_per_s=round(verified_rows / wall, 1) if wall else None,
            aggregate_mb_per_s=round(body_bytes / wall / 1e6, 3) if wall else None,
            client_cpu_s=round(costs.client_cpu_s, 4),
            client_cpu_share=round(costs.client_cpu_s / wall, 4) if wall else 0.0,
            server_cpu_s=server_cpu_s,
            postgres_cpu_s=costs.postgres_cpu_s,
            rss=rss_figures(
                costs.rss,
                server.fresh_rss if server else None,
                concurrency,
                min(starts) if starts else 0.0,
                keep_series,
            ),
            healthz=None if healthz is None else {"latencies_ms": healthz.latencies_ms, "errors": healthz.errors},
            server_metrics=server_metrics,
            requests=requests,
        )
        self.progress.run_done(label, run)
        return run


async def run_bench(options: Options, settings: Settings, progress: Progress) -> BenchResult:
    return await Runner(options, settings, progress).run()
