"""A filesystem of a few megabytes, for what a full disk does: a tmpfs mounted by the test (as root), unmounted
after it. Where mounting is impossible (not root, no mount(8), a container without CAP_SYS_ADMIN) the test is
skipped, saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_filesystem(mount_point: Path, kilobytes: int) -> Iterator[Path]:
    """`mount_point`, made and mounted as a tmpfs of `kilobytes` for the block; unmounted (lazily, should a
    process still hold a file there) and removed after it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small filesystem needs mount(8) as root: run the tests as root to cover a full disk")
    mount_point.mkdir(parents=True, exist_ok=True)
    # Mode 1777 as /tmp: the embedded PostgreSQL runs as its own user when the tests run as root.
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k,mode=1777", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode}): no full disk to test")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], capture_output=True, check=False)
        mount_point.rmdir()
