"""The inference-log writer against a real SQLite ops store in a temp folder."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest
from sqlalchemy import create_engine, func, select

from include.mlops.adapters.store import Store, inference_log
from include.mlops.serving.logwriter import InferenceLogWriter
from include.mlops.serving.metrics import ServingMetrics

pytestmark = pytest.mark.unit


def record(i: int, **over) -> dict:
    base = {
        "request_id": f"r{i // 10}",
        "entity_id": f"e{i}",
        "model_name": "m",
        "model_version": "1",
        "route": "champion",
        "event_time": datetime(2013, 3, 1, 9),
        "features": {"carrier": "AA", "temp": None},
        "score": 0.25,
        "prediction": 0,
        "latency_ms": 4.2,
        "status": "ok",
        "error": None,
        "created_at": datetime(2026, 1, 1),
    }
    return {**base, **over}


def count(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(inference_log)).scalar_one())


def test_every_record_is_written_in_batches_and_close_drains(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'ops.db'}")
    metrics = ServingMetrics()
    writer = InferenceLogWriter(store.engine, metrics=metrics, batch_size=100)
    writer.start()
    for chunk in range(50):
        writer.submit([record(chunk * 7 + j) for j in range(7)])
    assert writer.close() == 0
    assert count(store.engine) == 350 == writer.written and writer.depth == 0
    with store.engine.connect() as conn:
        row = conn.execute(select(inference_log).where(inference_log.c.entity_id == "e3")).mappings().one()
    assert row["features"] == {"carrier": "AA", "temp": None} and row["event_time"] == datetime(2013, 3, 1, 9)
    assert "mlops_serving_inference_log_written_total 350.0" in metrics.render().decode()


def test_a_database_that_is_not_ready_is_retried_not_dropped(tmp_path):
    url = f"sqlite:///{tmp_path / 'late.db'}"
    engine = create_engine(url)  # no tables yet: inserts fail with OperationalError
    metrics = ServingMetrics()
    writer = InferenceLogWriter(engine, metrics=metrics, flush_seconds=0.05)
    writer.start()
    writer.submit([record(i) for i in range(20)])
    deadline = time.monotonic() + 5
    while metrics.log_write_errors._value.get() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metrics.log_write_errors._value.get() >= 2 and writer.written == 0 and writer.depth == 20
    Store.open(url)  # the database comes up
    assert writer.close() == 0
    assert count(engine) == 20 and writer.dropped == 0


def test_shutdown_gives_up_after_the_drain_timeout_and_says_how_many(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'never.db'}")
    writer = InferenceLogWriter(engine, flush_seconds=0.05, drain_timeout=0.5)
    writer.start()
    writer.submit([record(i) for i in range(5)])
    started = time.monotonic()
    assert writer.close() == 5
    assert time.monotonic() - started < 5


def test_a_refused_record_does_not_block_the_others(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'ops.db'}")
    writer = InferenceLogWriter(store.engine)
    writer.submit([record(1), record(2, route=None), record(3)])  # route is NOT NULL
    assert writer.close() == 1
    assert count(store.engine) == 2


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'ops.db'}")
    writer = InferenceLogWriter(store.engine, max_pending=10)
    assert writer.submit([record(i) for i in range(8)])
    assert not writer.submit([record(i) for i in range(3)])
    assert writer.dropped == 3 and writer.depth == 8
    writer.close()
    assert count(store.engine) == 8


def test_concurrent_submitters(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'ops.db'}")
    writer = InferenceLogWriter(store.engine, batch_size=64)
    writer.start()

    def submit(t: int) -> None:
        for i in range(100):
            writer.submit([record(t * 1000 + i)])

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert writer.close() == 0 and count(store.engine) == 400
