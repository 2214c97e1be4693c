"""The ops-store queries the ingest's guards use (schema version 6), on the database the tests run
against: SQLite by default, PostgreSQL with ``MLOPS_TEST_BACKEND=postgres``."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import insert, text

from include.mlops.adapters.store import LATEST_VERSION, Decision, Store, get_engine, inference_log, migrate
from tests.conftest import ops_db_url

pytestmark = pytest.mark.integration

M = "m"


@pytest.fixture
def store(tmp_path):
    return Store.open(ops_db_url(tmp_path))


def accepted(store: Store, day: date, profile: dict | None, name: str | None = None) -> int:
    batch_id = store.create_batch(M, name or f"outcomes_{day}.parquet", f"sha-{day}", None, None)
    decision = Decision(M, "ingest", "accepted", "batch_valid", f"batch #{batch_id}", [], {}, None, None, None)
    truth = [{"entity_id": f"e-{day}", "event_time": datetime(day.year, day.month, day.day), "label": 1, "outcome": 30.0}]
    store.accept_batch(batch_id, M, day, f"/pool/{day}.parquet", truth, decision, profile=profile)
    return batch_id


def test_attempts_are_counted_and_the_last_error_kept(store):
    batch_id = store.create_batch(M, "a.parquet", "x", None, None)
    assert store.get_batch(batch_id)["attempts"] == 0
    assert [store.start_attempt(batch_id) for _ in range(3)] == [1, 2, 3]
    store.finish_attempt(batch_id)  # the third one finished validating: not counted
    store.record_attempt_error(batch_id, "RuntimeError: " + "x" * 5000)
    row = Store(store.engine).get_batch(batch_id)
    assert row["attempts"] == 2 and row["last_error"].startswith("RuntimeError") and len(row["last_error"]) == 2000


def test_accepted_profiles_most_recent_day_first(store):
    first = accepted(store, date(2013, 1, 1), {"rows": 1, "value": 1.5})
    accepted(store, date(2013, 1, 3), {"rows": 3})
    legacy = accepted(store, date(2013, 1, 2), None)
    other = store.create_batch(M, "q.parquet", "q", None, None)  # not accepted: never in the history
    rows = store.accepted_batch_profiles(M, limit=10)
    assert [r["day"] for r in rows] == [date(2013, 1, 3), date(2013, 1, 2), date(2013, 1, 1)]
    assert rows[-1]["profile"] == {"rows": 1, "value": 1.5} and rows[1]["profile"] is None
    assert [r["day"] for r in store.accepted_batch_profiles(M, limit=2)] == [date(2013, 1, 3), date(2013, 1, 2)]
    assert first not in [r["id"] for r in store.accepted_batch_profiles(M, limit=10, exclude_id=first)]
    assert other not in [r["id"] for r in rows]
    store.set_batch_profile(legacy, {"rows": 2, "numbers": [1, 2.5]})
    assert store.get_batch(legacy)["profile"] == {"rows": 2, "numbers": [1, 2.5]}
    assert store.accepted_batch_profiles("another", limit=10) == []


def test_logged_entities_count_distinct_successful_predictions_of_the_model(store):
    now = datetime(2026, 1, 1)

    def rec(entity: str, status: str = "ok", model: str = M) -> dict:
        return {"request_id": "r", "entity_id": entity, "model_name": model, "route": "champion", "status": status, "created_at": now}

    records = [rec(f"e{i}") for i in range(1200)]
    records += [rec("e0"), rec("e1")]  # scored twice: counted once
    records += [rec("bad", status="rejected"), rec("elsewhere", model="other")]
    with store.begin() as conn:
        conn.execute(insert(inference_log), records)
    wanted = [f"e{i}" for i in range(0, 1500)] + ["bad", "elsewhere", "e0"]
    assert store.count_logged_entities(M, wanted) == 1200
    assert store.count_logged_entities(M, []) == 0


def test_a_v5_database_gets_the_attempts_and_profile_columns(tmp_path):
    engine = get_engine(ops_db_url(tmp_path))
    migrate(engine)
    with engine.begin() as conn:  # make it look like a v5 database with one accepted batch
        conn.execute(text("DROP TABLE window_quality"))  # v7
        conn.execute(text("ALTER TABLE inference_log DROP COLUMN model_ms"))  # v8
        for column in ("attempts", "last_error", "profile"):
            conn.execute(text(f"ALTER TABLE batches DROP COLUMN {column}"))
        conn.execute(text("DELETE FROM schema_version"))
        conn.execute(text("INSERT INTO schema_version (version, description, applied_at) VALUES (5, 'v5', '2026-01-01')"))
        conn.execute(
            text(
                "INSERT INTO batches (model_name, file_name, content_sha256, status, reason_codes, received_at, day) "
                "VALUES ('m', 'a.parquet', 'x', 'accepted', '[]', '2026-01-02 03:04:05', '2013-01-01')"
            )
        )
    assert migrate(engine) == LATEST_VERSION
    s = Store(engine)
    [row] = s.list_batches(M)
    assert row["attempts"] == 0 and row["last_error"] is None and row["profile"] is None
    assert s.start_attempt(row["id"]) == 1
    s.finish_attempt(row["id"])
    s.finish_attempt(row["id"])  # never below zero
    assert s.get_batch(row["id"])["attempts"] == 0
    assert s.accepted_batch_profiles(M, limit=5)[0]["profile"] is None
