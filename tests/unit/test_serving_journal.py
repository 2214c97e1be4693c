"""The serving journal: what a killed process answered reaches the inference log exactly once."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from include.mlops.adapters.store import Store, inference_log, log_journal
from include.mlops.serving.journal import Journal, recover
from include.mlops.serving.logwriter import InferenceLogWriter
from tests.unit.test_serving_logwriter import record

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path):
    return Store.open(f"sqlite:///{tmp_path / 'ops.db'}").engine


def logged(engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(inference_log.c.entity_id)).scalars())


def checkpoints(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(log_journal.c.segment, log_journal.c.records)).tuples().all())


def dead_journal(folder: Path, records: list[dict]) -> Path:
    """A journal file as a killed process leaves it: written, no longer locked."""
    j = Journal(folder)
    j.open()
    j.append(records)
    os.close(j._fd)  # the process is gone: its lock with it
    return folder / j.segment


def test_records_round_trip_with_their_types(engine, tmp_path):
    recs = [record(i) for i in range(3)]
    dead_journal(tmp_path / "j", recs)
    assert recover(tmp_path / "j", engine) == 3
    with engine.connect() as conn:
        row = conn.execute(select(inference_log).where(inference_log.c.entity_id == "e1")).mappings().one()
    assert row["event_time"] == recs[1]["event_time"] and row["features"] == recs[1]["features"] and row["score"] == 0.25


def test_only_records_after_the_checkpoint_are_replayed_and_the_file_goes(engine, tmp_path):
    path = dead_journal(tmp_path / "j", [record(i) for i in range(5)])
    # the first two were written, with their checkpoint, before the kill
    Store(engine).append_inference([record(0), record(1)], journal_marks={path.name: 2})
    assert recover(tmp_path / "j", engine) == 3
    assert logged(engine) == [f"e{i}" for i in range(5)]
    assert not path.exists() and checkpoints(engine) == {}
    assert recover(tmp_path / "j", engine) == 0  # nothing left


def test_a_torn_last_line_is_ignored(engine, tmp_path):
    path = dead_journal(tmp_path / "j", [record(0), record(1)])
    with path.open("ab") as fh:
        fh.write(b'{"request_id": "r9", "entity_')  # the process died inside this write: never answered
    assert recover(tmp_path / "j", engine) == 2
    assert logged(engine) == ["e0", "e1"]


def test_a_live_processs_journal_is_left_alone(engine, tmp_path):
    live = Journal(tmp_path / "j")
    live.open()
    live.append([record(0)])
    assert recover(tmp_path / "j", engine) == 0
    assert (tmp_path / "j" / live.segment).exists() and logged(engine) == []


def test_a_crash_between_replay_and_delete_replays_nothing_twice(engine, tmp_path, monkeypatch):
    path = dead_journal(tmp_path / "j", [record(i) for i in range(3)])
    real_unlink = Path.unlink

    def crash(self, *a, **k):
        if self == path:
            raise KeyboardInterrupt("killed after the commit, before the file was deleted")
        return real_unlink(self, *a, **k)

    monkeypatch.setattr(Path, "unlink", crash)
    with pytest.raises(KeyboardInterrupt):
        recover(tmp_path / "j", engine)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert recover(tmp_path / "j", engine) == 0
    assert logged(engine) == ["e0", "e1", "e2"]


def test_the_writer_checkpoints_in_the_insert_transaction_and_cleans_up_at_close(engine, tmp_path):
    j = Journal(tmp_path / "j", segment_bytes=600)  # a new file every few records
    j.open()
    writer = InferenceLogWriter(engine, flush_seconds=0.01, journal=j)
    writer.start()
    for i in range(12):
        assert writer.submit([record(i)])
    assert writer.close() == 0
    assert logged(engine) == sorted(f"e{i}" for i in range(12))
    assert not list((tmp_path / "j").glob("*.jsonl")) and checkpoints(engine) == {}


def test_kill_after_answering_loses_nothing(engine, tmp_path, monkeypatch):
    """Records submitted (answered) but not yet written when the process dies come back once."""
    j = Journal(tmp_path / "j")
    j.open()
    writer = InferenceLogWriter(engine, flush_seconds=60, journal=j)  # nothing flushed before the "kill"
    writer.start()
    writer.submit([record(0), record(1)])
    writer.submit([record(2)])
    os.close(j._fd)  # SIGKILL: the queue is lost with the process, the journal file is not
    assert logged(engine) == []
    assert recover(tmp_path / "j", engine) == 3
    assert logged(engine) == ["e0", "e1", "e2"]


def test_lock_is_exclusive_per_file(tmp_path):
    j = Journal(tmp_path / "j")
    j.open()
    fd = os.open(tmp_path / "j" / j.segment, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
