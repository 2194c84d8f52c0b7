"""Directories of session and module fixtures, removed with the fixture: an embedded database is tens of
megabytes (the session's, with its big table, hundreds), not to be kept once its tests are done, whatever
pytest's retention policy keeps of the tests' own tmp_path."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def scratch_directory(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    path = factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
