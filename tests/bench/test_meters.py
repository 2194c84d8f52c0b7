"""The RSS sampler: one process, or a server with its workers, sampled off the event loop."""

import subprocess
import sys
import time

import psutil

from streaming_api.bench.meters import RssSampler

# A child that holds about 64 MB resident until told to stop.
HOLD = "import sys; b = bytearray(64 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); sys.stdin.read()"


def _with_worker() -> subprocess.Popen:
    """A parent process (like a server) with one child (like its worker), both running Python."""
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {HOLD!r}])"],
        stdin=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    return parent


def test_tree_sums_the_workers_present_at_start() -> None:
    parent = _with_worker()
    try:
        (worker,) = psutil.Process(parent.pid).children()
        deadline = time.monotonic() + 10
        while worker.memory_info().rss < 60 * 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.05)
        alone = RssSampler(parent.pid)
        tree = RssSampler(parent.pid, tree=True)
        alone.start()
        tree.start()
        time.sleep(0.1)
        alone_figures, tree_figures = alone.stop(), tree.stop()
        assert tree_figures.samples and alone_figures.samples
        # The worker's 64 MB are counted with tree and only then.
        assert tree_figures.peak_sampled - alone_figures.peak_sampled >= 60 * 1024 * 1024
        assert alone_figures.peak_sampled < 60 * 1024 * 1024
    finally:
        parent.communicate(b"", timeout=10)


def test_a_process_that_exits_ends_in_no_samples_not_an_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    sampler = RssSampler(child.pid, tree=True)
    sampler.start()
    child.communicate(b"", timeout=10)
    time.sleep(0.05)
    figures = sampler.stop()
    assert figures.idle is not None
    assert all(rss > 0 for _, rss in figures.samples)


def test_a_remote_servers_rss_is_read_from_its_metrics_as_the_full_parser_reads_it() -> None:
    from prometheus_client import generate_latest

    from streaming_api.bench.meters import _resident_bytes
    from streaming_api.bench.probe import metric_sum, parse_metrics

    exposition = generate_latest()  # this process's own, process_resident_memory_bytes included
    assert _resident_bytes(exposition) == int(
        metric_sum(parse_metrics(exposition.decode()), "process_resident_memory_bytes")
    )
    labelled = b'process_resident_memory_bytes{worker="1"} 1e+06\nprocess_resident_memory_bytes{worker="2"} 2.5e+06\n'
    assert _resident_bytes(labelled) == 3_500_000
    assert _resident_bytes(b"process_resident_memory_bytes_total 5\n# nothing else\n") is None
