"""The workers' metrics directory: held by every process that uses it, removed by the last one out."""

from __future__ import annotations

import pytest

from streaming_api.cli import metrics_directory


@pytest.fixture(autouse=True)
def temporary(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    return tmp_path


def test_a_new_directory_is_held_and_removed_when_its_only_holder_lets_go(temporary):
    directory, held = metrics_directory.make()
    assert directory.parent == temporary and directory.name.startswith(metrics_directory.PREFIX)
    assert metrics_directory.sweep() == []  # held: not abandoned
    assert metrics_directory.let_go(directory, held)
    assert list(temporary.iterdir()) == []


def test_the_directory_stays_while_another_process_holds_it(temporary):
    directory, supervisor = metrics_directory.make()
    worker = metrics_directory.hold(directory)  # a second open file description, as another process has
    assert not metrics_directory.let_go(directory, worker)
    assert directory.is_dir()
    assert metrics_directory.let_go(directory, supervisor)
    assert not directory.exists()


def test_a_directory_without_a_lock_file_is_never_swept(temporary):
    unknown = temporary / f"{metrics_directory.PREFIX}unknown"
    unknown.mkdir()
    assert metrics_directory.sweep() == []
    assert unknown.is_dir()
