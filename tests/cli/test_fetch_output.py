"""`run.py fetch --out`: a regular file is replaced whole, never half; a device, a FIFO or stdout is written
into as the rows come, never replaced; a write that fails (a full disk, a closed pipe) is one line."""

from __future__ import annotations

import asyncio
import os
import select
import stat
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from streaming_api.cli.fetch import EXIT_FAILED, EXIT_PIPE_CLOSED
from streaming_api.client.download import download
from tests.support.cli import start_cli
from tests.support.processes import communicate_within
from tests.support.smallfs import small_filesystem

# Bounded waits: far above what a fetch of the test table takes, so only a hang trips them.
DEADLINE_SECONDS = 60
NULL_DEVICE = os.makedev(1, 3)
FULL_DEVICE = os.makedev(1, 7)


async def _clean_body(server: TestServer, token: str, fmt: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.make_url(f"/chunked?format={fmt}"), headers={"Authorization": f"JWT {token}"}) as response,
    ):
        return await response.read()


def _device(path: Path, device: int) -> Path:
    """A character device node like /dev/null or /dev/full, made in the test's own directory."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, device)
        with path.open("wb"):
            pass
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD) and a filesystem mounted without nodev")
    return path


def _read_fifo(path: Path, into: bytearray) -> None:
    """Everything written into the FIFO until its writer closes it (or the deadline passes)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opens at once, writer or not
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        while select.select([fd], [], [], max(deadline - time.monotonic(), 0))[0]:
            data = os.read(fd, 1 << 16)
            if not data:
                return  # the writer closed it
            into.extend(data)
    finally:
        os.close(fd)


async def test_a_fifo_is_written_into_as_the_rows_come_and_stays_a_fifo(server, token, tmp_path):
    fifo = tmp_path / "points.fifo"
    os.mkfifo(fifo)
    received = bytearray()
    reader = threading.Thread(target=_read_fifo, args=(fifo, received))
    reader.start()
    try:
        await download(str(server.make_url("/chunked")), token, "csv", fifo)
    finally:
        reader.join(DEADLINE_SECONDS)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert bytes(received) == await _clean_body(server, token, "csv")
    assert [p.name for p in tmp_path.iterdir()] == ["points.fifo"]


async def test_a_device_is_written_into_and_stays_a_device(server, token, tmp_path):
    null = _device(tmp_path / "null", NULL_DEVICE)
    result = await download(str(server.make_url("/chunked")), token, "ndjson", null)
    assert result.bytes == len(await _clean_body(server, token, "ndjson"))
    assert stat.S_ISCHR(null.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


# --- the command line, as a subprocess ----------------------------------------------------------


async def _fetch(server: TestServer, jwt_secret: str, tmp_path: Path, *args: str, stdout: int | None = None):
    url = str(server.make_url("/chunked"))
    return await start_cli(["fetch", "--url", url, *args], tmp_path / "data", stdout=stdout, jwt_secret=jwt_secret)


async def _finished(process: asyncio.subprocess.Process) -> str:
    """Its stderr once it exits."""
    _, stderr = await communicate_within(process, DEADLINE_SECONDS)
    return stderr.decode()


async def test_a_full_device_is_one_line_and_exit_1_and_stays_a_device(server, jwt_secret, tmp_path):
    full = _device(tmp_path / "full", FULL_DEVICE)
    stderr = await _finished(await _fetch(server, jwt_secret, tmp_path, "--out", str(full)))
    assert [stderr.strip()] == [f"fetch: cannot write {full}: No space left on device"]
    assert stat.S_ISCHR(full.stat().st_mode)


async def test_a_full_disk_under_a_file_is_one_line_and_leaves_no_part_file(server, jwt_secret, tmp_path):
    # Room for a fifth of the body.
    with small_filesystem(tmp_path / "small", kilobytes=64) as small:
        out = small / "points.json"
        process = await _fetch(server, jwt_secret, tmp_path, "--format", "json", "--out", str(out))
        stderr = await _finished(process)
        assert process.returncode == EXIT_FAILED
        assert [stderr.strip()] == [f"fetch: cannot write {out}: No space left on device"]
        assert list(small.iterdir()) == []


async def test_fetch_into_a_pipe_its_reader_closes_ends_quietly(server, jwt_secret, tmp_path):
    # As `fetch | head -1`: the test table's body is several times what a pipe buffers.
    read_end, write_end = os.pipe()
    process = await _fetch(server, jwt_secret, tmp_path, stdout=write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        # Returns once fetch writes a line, or exits: bounded by the process itself.
        first = await asyncio.to_thread(pipe.readline)
    assert first.startswith(b'{"id":1,')
    stderr = await _finished(process)
    assert (process.returncode, stderr) == (EXIT_PIPE_CLOSED, "")
