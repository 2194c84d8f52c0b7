"""`serve --workers N`: N server processes on one port, started and stopped as one.

The supervisor (this process) checks the port, starts the database once (the embedded one, seeded when
empty), then starts the workers: fresh interpreters (multiprocessing's spawn), each serving the app on
its own socket bound with SO_REUSEPORT, so the kernel spreads new connections among them. (One socket
shared by every worker, gunicorn's way, measured the same here, in how evenly connections spread and in
latency; SO_REUSEPORT needs no socket handed across processes, and each worker keeps the guarded runner
`run.py serve` uses: see docs/scaling.md.) A worker that
dies is logged and replaced; Ctrl+C, SIGTERM or SIGHUP drain every worker, then the database stops (the
same again cuts the workers' requests in flight). A worker whose supervisor is gone, however it ended
(kill -9), sees its end of a pipe close and stops as on SIGTERM: no orphan keeps the port.

/metrics adds up every worker's figures through prometheus_client's multiprocess mode: the supervisor
gives the workers a directory of their own for them (PROMETHEUS_MULTIPROC_DIR), which the last process
using it removes (cli/metrics_directory.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from ..db.database import Database
from ..db.served import read_catalog
from ..settings import Settings
from ..tokens import load_keys
from ..web.metrics import MULTIPROCESS_DIRECTORY
from . import metrics_directory
from .console import StatusLine, rows_bar
from .failures import StartupFailure
from .running import STOP_SIGNALS, StopSignals, banner, banner_token

log = logging.getLogger(__name__)

# How long a worker may take to start serving; one that dies sooner than this after starting, three
# times in a row, means something is wrong with every worker (its settings, say): stop, do not loop.
READY_SECONDS = 120.0
QUICK_DEATH_SECONDS = 10.0
QUICK_DEATHS_ALLOWED = 3
# After SIGTERM, how long the workers get beyond shutdown_timeout before they are killed.
STOP_GRACE_SECONDS = 15.0


# A worker's signals: its supervisor decides. SIGTERM drains (sent again it stays a drain: a service manager
# may send it to every process, as the supervisor does), SIGUSR1 cuts. The terminal's Ctrl+C and SIGHUP are
# for the supervisor, which passes its decision on.
WORKER_CUT = signal.SIGUSR1
WORKER_SIGNALS = StopSignals(stop=(signal.SIGTERM,), cut=(WORKER_CUT,), again_cuts=False)
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGHUP)


def _worker(settings: Settings, index: int, ready: Connection, supervisor_alive: Connection) -> None:
    """A worker process: the app on its own SO_REUSEPORT socket until it is told to stop, or its supervisor
    is gone."""
    for signum in TERMINAL_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    # Imported here: this runs in a fresh interpreter whose environment already names the metrics directory.
    from ..web.connections import listening_socket
    from . import running

    running.setup_logging(settings, worker=index)
    supervisor = os.getppid()
    metrics = Path(os.environ[MULTIPROCESS_DIRECTORY])
    held = metrics_directory.hold(metrics)

    async def serve_here() -> None:
        loop = asyncio.get_running_loop()
        # Nothing is ever sent on this pipe: it reads as closed once the supervisor holds it no more.
        loop.add_reader(supervisor_alive.fileno(), _orphaned, loop, supervisor_alive, supervisor)
        sock = listening_socket(settings.host, settings.port, reuse_port=True)
        await running.serve_on(settings, sock, lambda _app: _say_ready(ready), signals=WORKER_SIGNALS)

    try:
        running.run_loop(serve_here())
    finally:
        metrics_directory.let_go(metrics, held)


def _orphaned(loop: asyncio.AbstractEventLoop, supervisor_alive: Connection, supervisor: int) -> None:
    """The supervisor's end of the pipe closed: it is gone, so stop as it would have told us to."""
    loop.remove_reader(supervisor_alive.fileno())
    log.warning("the supervisor (pid %d) is gone: stopping", supervisor)
    os.kill(os.getpid(), signal.SIGTERM)


def _say_ready(ready: Connection) -> None:
    # A supervisor gone meanwhile cannot hear it; its pipe tells this worker to stop.
    with contextlib.suppress(OSError):
        ready.send("ready")


@dataclass
class Worker:
    index: int
    process: BaseProcess
    ready: Connection
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(self, settings: Settings, metrics: Path) -> None:
        self.settings = settings
        self.metrics = metrics
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, Worker] = {}
        self.quick_deaths = 0
        # Only this process holds the writing end, and never writes: its end, however it comes, closes it.
        self._alive, self._alive_writer = self.context.Pipe(duplex=False)

    def start(self, index: int) -> Worker:
        receive, send = self.context.Pipe(duplex=False)
        args = (self.settings, index, send, self._alive)
        process = self.context.Process(target=_worker, args=args, name=f"worker {index}")
        process.start()
        send.close()
        worker = self.workers[index] = Worker(index, process, receive)
        return worker

    def wait_ready(self, workers: list[Worker]) -> None:
        """Until every one of `workers` serves; StartupFailure when one dies first or takes too long."""
        deadline = time.monotonic() + READY_SECONDS
        for worker in workers:
            while not worker.ready.poll(0.1):
                if not worker.process.is_alive():
                    raise StartupFailure(
                        f"worker {worker.index} exited ({worker.process.exitcode}) while starting: see its log above",
                        1,
                    )
                if time.monotonic() > deadline:
                    raise StartupFailure(f"worker {worker.index} did not start within {READY_SECONDS:g} s", 1)
            worker.ready.recv()

    def replace_the_dead(self, stopping: asyncio.Event) -> None:
        """Blocks until a worker exits (or stopping is set); replaces it unless the service is stopping."""
        sentinels = {worker.process.sentinel: worker for worker in self.workers.values()}
        ended = wait(list(sentinels), timeout=0.5)
        if stopping.is_set():
            return
        for sentinel in ended:
            worker = sentinels[sentinel]
            worker.process.join()
            self._forget(worker)
            quick = time.monotonic() - worker.started_at < QUICK_DEATH_SECONDS
            self.quick_deaths = self.quick_deaths + 1 if quick else 0
            if self.quick_deaths >= QUICK_DEATHS_ALLOWED:
                raise StartupFailure(
                    f"workers keep dying within {QUICK_DEATH_SECONDS:g} s of starting: stopping (see their log)", 1
                )
            log.warning(
                "worker %d (pid %d) exited with status %s: starting another",
                worker.index,
                worker.process.pid,
                worker.process.exitcode,
            )
            self.wait_ready([self.start(worker.index)])

    def _forget(self, worker: Worker) -> None:
        """A dead worker's gauges no longer count (its counters and histograms still do)."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.process.pid, str(self.metrics))

    def signal_all(self, signum: int) -> None:
        for worker in self.workers.values():
            if worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signum)

    def stop(self) -> None:
        """SIGTERM to every worker (each drains its requests), then wait; kill what is left after the grace."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout + STOP_GRACE_SECONDS
        for worker in self.workers.values():
            worker.process.join(max(deadline - time.monotonic(), 0))
            if worker.process.is_alive():
                log.warning("worker %d did not stop in time: killing it", worker.index)
                worker.process.kill()
                worker.process.join()


def _check_port(settings: Settings) -> None:
    """Fail at once on a port someone else holds: our own workers' sockets would share it with theirs."""
    from ..web.connections import listening_socket

    listening_socket(settings.host, settings.port).close()


async def supervise(settings: Settings) -> int:
    _check_port(settings)
    count = settings.worker_count
    stopping = asyncio.Event()
    serving = False
    supervisor: Supervisor | None = None
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            # Again (a second Ctrl+C): the workers cut their requests in flight rather than drain them.
            log.warning("stopping now (%s): the workers cut their requests in flight", signal.Signals(signum).name)
            if supervisor is not None:
                supervisor.signal_all(WORKER_CUT)
            return
        stopping.set()
        if not serving:
            main.cancel()  # still starting (seeding, workers starting): stop that at once

    # Kept until the end: a signal while the workers drain is a request to hurry, never a KeyboardInterrupt.
    for signum in STOP_SIGNALS.stop:
        loop.add_signal_handler(signum, on_signal, signum)
    metrics, held = metrics_directory.make()
    os.environ[MULTIPROCESS_DIRECTORY] = str(metrics)
    database = Database(settings)
    stopped_database = False
    try:
        await database.start()
        await database.ensure_demo(settings.rows, rows_bar(StatusLine()))
        assert database.url is not None
        # The tables are checked once here: a missing one is one line, before any worker starts.
        catalog = await read_catalog(database.url, settings.table_patterns)
        # Made here once (a generated secret included), before the workers read the same keys.
        keys = load_keys(settings)
        # The workers use the database this process started (and seeded) for them.
        supervisor = Supervisor(settings.replace(database_url=database.url), metrics)
        workers = [supervisor.start(index) for index in range(1, count + 1)]
        await asyncio.to_thread(supervisor.wait_ready, workers)
        serving = True
        description = f"{database.description}, {count} workers"
        print(banner(settings, catalog, description, banner_token(keys, settings)), flush=True)
        while not stopping.is_set():
            await asyncio.to_thread(supervisor.replace_the_dead, stopping)
        log.info("stopping: every worker drains its requests in flight")
    except asyncio.CancelledError:
        if not stopping.is_set():
            raise
    finally:
        try:
            if supervisor is not None:
                await asyncio.to_thread(supervisor.stop)
            stopped_database = await database.stop()
            os.environ.pop(MULTIPROCESS_DIRECTORY, None)
            metrics_directory.let_go(metrics, held)
        finally:
            for signum in STOP_SIGNALS.stop:
                loop.remove_signal_handler(signum)
    also = f"; so is the {database.description}" if stopped_database else ""
    print(f"streaming_api: stopped {count} workers{also}", flush=True)
    return 0
