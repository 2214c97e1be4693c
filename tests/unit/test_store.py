from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from include.mlops.adapters import store as store_mod
from include.mlops.adapters.store import LATEST_VERSION, Decision, Store, current_version, get_engine, migrate, schema
from include.mlops.adapters.store.schema import parse_legacy_subject

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

    monkeypatch.setattr(schema, "LATEST_VERSION", LATEST_VERSION + 1)
    monkeypatch.setattr(schema, "MIGRATIONS", [(LATEST_VERSION + 1, "alerts: who acknowledged", add_column)])
    assert migrate(engine) == LATEST_VERSION + 1
    assert "acknowledged_by" in {c["name"] for c in inspect(engine).get_columns("alerts")}
    with engine.connect() as conn:
        assert current_version(conn) == LATEST_VERSION + 1
    assert migrate(engine) == LATEST_VERSION + 1  # the step is not applied twice


def test_newer_schema_than_code_is_refused(url, monkeypatch):
    engine = get_engine(url)
    migrate(engine)
    monkeypatch.setattr(schema, "LATEST_VERSION", 0)
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
    """A database created before batches.arrived_at, log_journal and the decision keys existed gets
    them all and keeps its rows."""
    engine = get_engine(url)
    migrate(engine)
    with engine.begin() as conn:  # make it look like a v1 database with one batch
        conn.execute(text("ALTER TABLE batches DROP COLUMN arrived_at"))
        for column in ("attempts", "last_error", "profile"):  # v6
            conn.execute(text(f"ALTER TABLE batches DROP COLUMN {column}"))
        for table in ("model_digests", "alias_locks"):  # v5
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("DROP TABLE log_journal"))
        conn.execute(text("DROP TABLE window_quality"))  # v7
        conn.execute(text("ALTER TABLE inference_log DROP COLUMN model_ms"))  # v8
        conn.execute(text("DROP INDEX ix_decisions_version"))
        for column in ("version", "window_start", "window_end"):
            conn.execute(text(f"ALTER TABLE decisions DROP COLUMN {column}"))
        conn.execute(text("DELETE FROM schema_version"))
        conn.execute(text("INSERT INTO schema_version (version, description, applied_at) VALUES (1, 'v1', '2026-01-01')"))
        conn.execute(
            text(
                "INSERT INTO batches (model_name, file_name, content_sha256, status, reason_codes, received_at) "
                "VALUES ('m', 'a.parquet', 'x', 'accepted', '[]', '2026-01-02 03:04:05')"
            )
        )
    assert migrate(engine) == LATEST_VERSION == 8
    with engine.connect() as conn:
        assert conn.execute(text("select arrived_at from batches")).scalar_one() is not None
        assert conn.execute(text("select attempts from batches")).scalar_one() == 0
        assert [r[0] for r in conn.execute(text("select version from schema_version order by version"))] == [1, 2, 3, 4, 5, 6, 7, 8]
        assert conn.execute(text("select count(model_ms) from inference_log")).scalar_one() == 0
        assert conn.execute(text("select count(*) from log_journal")).scalar_one() == 0


def test_the_package_reexports_every_name_callers_use():
    import include.mlops.adapters.store as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    # the table objects, not the modules of the same concern
    assert pkg.alerts.name == "alerts" and pkg.decisions.name == "decisions" and pkg.batches.name == "batches"
    assert store_mod.Store is Store and issubclass(Store, pkg.StoreBase)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("v3 2013-02-08T00:00..2013-02-15T00:00", {"version": 3, "window_start": "2013-02-08T00:00", "window_end": "2013-02-15T00:00"}),
        (
            "v12 2013-02-08T06:30:15..2013-02-09T06:30:15",
            {"version": 12, "window_start": "2013-02-08T06:30:15", "window_end": "2013-02-09T06:30:15"},
        ),
        ("version 7", {"version": 7}),
        ("version 7 / probe", {"version": 7}),
        ("version 7 (canary)", {"version": 7}),
        ("v2", {"version": 2}),
        ("version None", {}),
        ("batch #4 outcomes_2013-02-11.csv", {}),
        ("drift:v3", {}),
        ("training window", {}),
        ("", {}),
        (None, {}),
    ],
)
def test_legacy_subjects_are_parsed_only_for_what_they_name(subject, expected):
    import datetime as dt

    want = {k: dt.datetime.fromisoformat(v) if k.startswith("window") else v for k, v in expected.items()}
    assert parse_legacy_subject(subject) == want


def test_decision_keys_are_stored_in_their_own_columns(url):
    import datetime as dt

    s = Store.open(url)
    start, end = dt.datetime(2013, 2, 8), dt.datetime(2013, 2, 15)
    s.record_decision("m", "monitor", "healthy", "healthy", subject="v3 window", version="3", window_start=start, window_end=end)
    s.record_decision("m", "deployment", "refused", "challenger_busy", subject="version 4", version=4)
    s.record_decision("m", "ingest", "accepted", "batch_valid", subject="batch #1 a.csv")
    rows = {d["kind"]: d for d in s.list_decisions("m")}
    assert (rows["monitor"]["version"], rows["monitor"]["window_start"], rows["monitor"]["window_end"]) == (3, start, end)
    assert rows["deployment"]["version"] == 4 and rows["deployment"]["window_start"] is None
    assert rows["ingest"]["version"] is None and rows["ingest"]["subject"] == "batch #1 a.csv"


def test_an_aware_window_is_stored_and_found_as_naive_utc(url):
    import datetime as dt

    s = Store.open(url)
    aware = dt.datetime(2013, 2, 8, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    s.record_decision("m", "monitor", "healthy", "healthy", version=3, window_start=aware, window_end=aware)
    (d,) = s.list_decisions("m")
    assert d["window_start"] == dt.datetime(2013, 2, 8, 0, 0)
    assert s.decision_exists("m", "monitor", window_start=aware) and s.decision_exists("m", "monitor", window_end=dt.datetime(2013, 2, 8))
