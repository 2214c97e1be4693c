from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from include.mlops.adapters import store as store_mod
from include.mlops.adapters.store import LATEST_VERSION, Decision, Store, current_version, get_engine, migrate

pytestmark = pytest.mark.unit


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'ops.db'}"


def test_new_database_is_created_at_latest_version(url):
    engine = get_engine(url)
    assert migrate(engine) == LATEST_VERSION
    tables = set(inspect(engine).get_table_names())
    expected = {"batches", "quarantine", "ground_truth", "inference_log", "deployment_ledger", "decisions", "alerts", "governance_state"}
    assert expected <= tables
    assert migrate(engine) == LATEST_VERSION  # idempotent
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from schema_version")).scalar_one() == 1


def test_older_database_is_migrated_forward(url, monkeypatch):
    engine = get_engine(url)
    migrate(engine)

    def add_column(conn):
        conn.execute(text("ALTER TABLE alerts ADD COLUMN acknowledged_by VARCHAR(100)"))

    monkeypatch.setattr(store_mod, "LATEST_VERSION", LATEST_VERSION + 1)
    monkeypatch.setattr(store_mod, "MIGRATIONS", [(LATEST_VERSION + 1, "alerts: who acknowledged", add_column)])
    assert migrate(engine) == LATEST_VERSION + 1
    assert "acknowledged_by" in {c["name"] for c in inspect(engine).get_columns("alerts")}
    with engine.connect() as conn:
        assert current_version(conn) == LATEST_VERSION + 1
    assert migrate(engine) == LATEST_VERSION + 1  # the step is not applied twice


def test_newer_schema_than_code_is_refused(url, monkeypatch):
    engine = get_engine(url)
    migrate(engine)
    monkeypatch.setattr(store_mod, "LATEST_VERSION", 0)
    with pytest.raises(RuntimeError, match="newer than this code"):
        migrate(engine)


def test_foreign_tables_without_version_are_refused(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'foreign.db'}")
    store_mod.metadata.create_all(engine, tables=[store_mod.batches])
    with pytest.raises(RuntimeError, match="no schema_version"):
        migrate(engine)


def test_alert_dedupe_key_makes_one_alert_per_incident(url):
    s = Store.open(url)
    first = s.upsert_alert("m", "warning", "drift", "drift:temp", "temp drifted", {"p": 0.01})
    again = s.upsert_alert("m", "warning", "drift", "drift:temp", "temp drifted again", {"p": 0.001})
    other = s.upsert_alert("m", "warning", "drift", "drift:humid", "humid drifted", {})
    assert first[1] and not again[1] and other[1]
    assert first[0] == again[0] != other[0]
    rows = {a["dedupe_key"]: a for a in s.list_alerts("m")}
    assert rows["drift:temp"]["count"] == 2 and rows["drift:temp"]["message"] == "temp drifted again"


def test_decision_inputs_are_stored_as_plain_json(url):
    import datetime as dt

    import numpy as np

    s = Store.open(url)
    s.record_decision("m", "gate", "refused", "metric_floor", inputs={"auc": np.float64(0.61), "at": dt.date(2013, 1, 5)})
    (d,) = s.list_decisions("m")
    assert d["inputs"] == {"auc": 0.61, "at": "2013-01-05"}
    assert d["reason_code"] == "metric_floor"


def test_decision_dataclass_defaults():
    d = Decision("m", "ingest", "accepted", "batch_valid")
    assert d.reasons == [] and d.inputs == {}


def test_v1_database_is_migrated_to_the_latest(url):
    """A database created before batches.arrived_at and log_journal existed gets both and keeps its rows."""
    engine = get_engine(url)
    migrate(engine)
    with engine.begin() as conn:  # make it look like a v1 database with one batch
        conn.execute(text("ALTER TABLE batches DROP COLUMN arrived_at"))
        conn.execute(text("DROP TABLE log_journal"))
        conn.execute(text("DELETE FROM schema_version"))
        conn.execute(text("INSERT INTO schema_version (version, description, applied_at) VALUES (1, 'v1', '2026-01-01')"))
        conn.execute(
            text(
                "INSERT INTO batches (model_name, file_name, content_sha256, status, reason_codes, received_at) "
                "VALUES ('m', 'a.parquet', 'x', 'accepted', '[]', '2026-01-02 03:04:05')"
            )
        )
    assert migrate(engine) == 3
    with engine.connect() as conn:
        assert conn.execute(text("select arrived_at from batches")).scalar_one() is not None
        assert [r[0] for r in conn.execute(text("select version from schema_version order by version"))] == [1, 2, 3]
        assert conn.execute(text("select count(*) from log_journal")).scalar_one() == 0
