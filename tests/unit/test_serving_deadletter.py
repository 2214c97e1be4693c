"""The inference-log writer and the journal replay survive any record (issue 17): a record the ops
store refuses (a NUL on PostgreSQL, a lone surrogate on both) goes to the dead-letter file with its
error and the rest is written. Runs on the test backend's ops store (SQLite, or PostgreSQL with
MLOPS_TEST_BACKEND=postgres)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from include.mlops.adapters.store import Store, inference_log, log_journal
from include.mlops.serving.deadletter import DeadLetter
from include.mlops.serving.journal import Journal, recover
from include.mlops.serving.logwriter import InferenceLogWriter
from include.mlops.serving.metrics import ServingMetrics
from tests.conftest import BACKEND, ops_db_url
from tests.unit.test_serving_logwriter import record

pytestmark = pytest.mark.unit

#: What killed the writer thread before, and whether the store refuses it: a lone surrogate (both
#: backends), a NUL in a text column (PostgreSQL); a NUL inside the features JSON is stored (escaped).
POISON = [
    ({"entity_id": "e\ud800x"}, True),
    ({"request_id": "r\udfff"}, True),
    ({"entity_id": "nul\x00id"}, BACKEND == "postgres"),
    ({"features": {"carrier": "A\x00A", "temp": None}}, False),
    ({"error": "x\ud83d"}, True),
]


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(ops_db_url(tmp_path))


def logged(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(conn.execute(select(inference_log.c.entity_id)).scalars())


def dead_lines(folder: Path) -> list[dict]:
    path = folder / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_writer_survives_records_the_store_refuses(store, tmp_path):
    metrics = ServingMetrics()
    dead = DeadLetter(tmp_path / "dead")
    writer = InferenceLogWriter(store.engine, metrics=metrics, flush_seconds=0.05, dead_letter=dead)
    writer.start()
    for i, (over, _) in enumerate(POISON):  # one at a time (each alone in its batch) and all together below
        writer.submit([record(100 + i, **{"entity_id": f"p{i}", **over})])
        writer.submit([record(i)])
        time.sleep(0.1)
        assert writer.alive, f"the writer died on {over!r}"
    writer.submit([record(200 + i, **{"entity_id": f"q{i}", **over}) for i, (over, _) in enumerate(POISON)] + [record(50)])
    deadline = time.monotonic() + 20
    while writer.depth and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.alive and writer.depth == 0
    assert writer.close() == 0  # nothing lost: written or dead-lettered

    refused = sum(refused for _, refused in POISON)
    assert writer.dead_lettered == dead.count == 2 * refused
    assert writer.written == len(POISON) + 1 + 2 * (len(POISON) - refused)
    assert {f"e{i}" for i in range(len(POISON))} | {"e50"} <= set(logged(store))
    lines = dead_lines(tmp_path / "dead")
    assert len(lines) == 2 * refused and all(line["error"] and line["record"]["model_name"] == "m" for line in lines)
    assert "\ud800" in {c for line in lines for c in str(line["record"]["entity_id"])}  # kept exactly
    assert f"mlops_serving_inference_log_dead_lettered_total {2.0 * refused}" in metrics.render().decode()
    assert DeadLetter(tmp_path / "dead").total == 2 * refused  # counted again by the next process


def dead_journal(folder: Path, records: list[dict]) -> Path:
    j = Journal(folder)
    j.open()
    j.append(records)
    assert j._fd is not None
    os.close(j._fd)  # the process is gone: its lock with it
    return folder / j.segment


def test_a_journal_replay_moves_a_bad_record_aside_instead_of_failing_at_every_start(store, tmp_path):
    records = [record(i) for i in range(6)]
    records[2] = record(2, entity_id="e\ud800")
    records[4] = record(4, request_id="r\x00" if BACKEND == "postgres" else "r\udc00")
    path = dead_journal(tmp_path / "j", records)
    # the first record was written, with its checkpoint, before the kill
    store.append_inference([records[0]], journal_marks={path.name: 1})
    dead = DeadLetter(tmp_path / "dead")
    assert recover(tmp_path / "j", store.engine, dead) == 3
    assert logged(store) == ["e0", "e1", "e3", "e5"]
    assert not path.exists()
    with store.engine.connect() as conn:
        assert conn.execute(select(log_journal)).all() == []
    assert [line["record"]["entity_id"] for line in dead_lines(tmp_path / "dead")] == ["e\ud800", "e4"]
    assert recover(tmp_path / "j", store.engine, dead) == 0  # the next start: nothing left


def test_a_big_journal_with_one_bad_record_replays_in_chunks(store, tmp_path):
    records = [record(i) for i in range(1200)]
    records[777] = record(777, entity_id="bad\udfff")
    dead_journal(tmp_path / "j", records)
    dead = DeadLetter(tmp_path / "dead")
    assert recover(tmp_path / "j", store.engine, dead) == 1199
    assert len(logged(store)) == 1199 and dead.count == 1
