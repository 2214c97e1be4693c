"""Every query of the ops store, on the database the tests run against: SQLite by default,
PostgreSQL with ``MLOPS_TEST_BACKEND=postgres`` (a fresh database per test, tests/conftest.py).

The store package is the only code that speaks SQL to the ops-store tables; each of its typed
methods is exercised here, and so is the schema migration that back-fills the decision keys.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import text

from include.mlops.adapters.store import LATEST_VERSION, Decision, Store, get_engine, migrate
from tests.conftest import ops_db_url

pytestmark = pytest.mark.integration

T0 = datetime(2013, 2, 8, 0, 0)
M = "m"


@pytest.fixture
def store(tmp_path):
    return Store.open(ops_db_url(tmp_path))


def decision(kind: str = "ingest", outcome: str = "accepted", code: str = "batch_valid", **kw) -> Decision:
    return Decision(M, kind, outcome, code, **kw)


# -- schema ------------------------------------------------------------------------------------------
def test_a_v3_database_gets_its_decision_keys_back_filled_from_the_subject(tmp_path):
    """The v4 migration is the one place that reads subjects: monitoring windows, "version N"."""
    engine = get_engine(ops_db_url(tmp_path))
    migrate(engine)
    with engine.begin() as conn:  # make it look like a v3 database with decisions of every shape
        conn.execute(text("DROP INDEX ix_decisions_version"))
        conn.execute(text("ALTER TABLE inference_log DROP COLUMN model_ms"))  # v8
        conn.execute(text("DROP TABLE window_quality"))  # v7
        for column in ("attempts", "last_error", "profile"):  # v6
            conn.execute(text(f"ALTER TABLE batches DROP COLUMN {column}"))
        for table in ("model_digests", "alias_locks"):  # v5
            conn.execute(text(f"DROP TABLE {table}"))
        for column in ("version", "window_start", "window_end"):
            conn.execute(text(f"ALTER TABLE decisions DROP COLUMN {column}"))
        conn.execute(text("DELETE FROM schema_version"))
        conn.execute(text("INSERT INTO schema_version (version, description, applied_at) VALUES (3, 'v3', '2026-01-01')"))
        subjects = [
            ("monitor", "v3 2013-02-08T00:00..2013-02-15T00:00"),
            ("gate", "version 4 / probe"),
            ("early_window", "version 4 (canary)"),
            ("deployment", "version 5"),
            ("ingest", "batch #2 outcomes_2013-02-11.csv"),
            ("governance", "drift:v3"),
            ("rollback", None),
        ]
        for kind, subject in subjects:
            conn.execute(
                text(
                    "INSERT INTO decisions (model_name, kind, subject, outcome, reason_code, reasons, inputs, created_at) "
                    "VALUES ('m', :kind, :subject, 'x', 'y', '[]', '{}', '2026-01-02 03:04:05')"
                ),
                {"kind": kind, "subject": subject},
            )
    assert migrate(engine) == LATEST_VERSION
    s = Store(engine)
    got = {d["kind"]: (d["version"], d["window_start"], d["window_end"], d["subject"]) for d in s.list_decisions(M)}
    assert got["monitor"] == (3, T0, T0 + timedelta(days=7), "v3 2013-02-08T00:00..2013-02-15T00:00")
    assert got["gate"][:3] == got["early_window"][:3] == (4, None, None)
    assert got["deployment"][:3] == (5, None, None)
    assert got["ingest"][:3] == got["governance"][:3] == got["rollback"][:3] == (None, None, None)
    assert s.decision_exists(M, "monitor", version=3, window_start=T0, window_end=T0 + timedelta(days=7))
    assert migrate(engine) == LATEST_VERSION  # nothing applied twice


# -- batches, quarantine, ground truth -------------------------------------------------------------
def test_batch_lifecycle_queries(store):
    b1 = store.create_batch(M, "a.csv", "sha-a", "ingest_outcomes", "r1", arrived_at=T0)
    assert store.open_batch_for(M, "a.csv", "sha-a")["id"] == b1
    assert store.open_batch_for(M, "a.csv", "other") is None
    store.set_batch_day(b1, date(2013, 2, 8), 2)
    assert store.get_batch(b1)["day"] == date(2013, 2, 8) and store.get_batch(b1)["rows"] == 2
    truth = [
        {"entity_id": "e1", "event_time": T0, "label": 1, "outcome": 3.0},
        {"entity_id": "e2", "event_time": T0 + timedelta(hours=1), "label": 0, "outcome": None},
    ]
    store.accept_batch(b1, M, date(2013, 2, 8), "/pool/a.parquet", truth, decision(subject="batch #1 a.csv"))
    store.accept_batch(b1, M, date(2013, 2, 8), "/pool/a.parquet", truth, decision())  # re-runnable: same ground truth
    assert store.count_ground_truth(M) == 2 and store.count_ground_truth(M, event_from=T0 + timedelta(minutes=1)) == 1
    accepted = store.get_batch(b1)
    assert accepted["status"] == "accepted" and accepted["pool_path"] == "/pool/a.parquet" and accepted["rows"] == 2
    store.mark_moved(b1, "/archive/a.csv")
    assert store.open_batch_for(M, "a.csv", "sha-a") is None  # moved: finished

    b2 = store.create_batch(M, "a-again.csv", "sha-a", None, None, arrived_at=T0 + timedelta(days=1))
    assert store.accepted_batch_with_sha(M, "sha-a", exclude_id=b2)["id"] == b1
    assert store.accepted_batch_with_sha(M, "sha-a", exclude_id=b1) is None
    assert store.accepted_batch_for_day(M, date(2013, 2, 8), exclude_id=b2)["id"] == b1
    assert store.accepted_batch_for_day(M, date(2013, 2, 9), exclude_id=b2) is None
    assert store.known_entity_ids(M, ["e1", "e3", "e1"], exclude_batch=b2) == ["e1"]
    assert store.known_entity_ids(M, ["e1"], exclude_batch=b1) == []
    assert store.latest_accepted_day(M) == date(2013, 2, 8)
    assert store.latest_accepted_day(M, arrived_before=T0) is None  # arrived exactly at T0: not before
    assert store.latest_accepted_day("other") is None

    reasons = [{"code": "duplicate_batch", "column": None, "message": "same content as #1"}]
    assert store.quarantine_batch(b2, M, "a-again.csv", reasons, "/q/a-again.csv", None, decision(outcome="quarantined", code="dup"))
    assert not store.quarantine_batch(b2, M, "a-again.csv", reasons, "/q/a-again.csv", None, decision(outcome="quarantined"))
    assert store.get_batch(b2)["status"] == "quarantined" and store.get_batch(b2)["reason_codes"] == ["duplicate_batch"]
    (q,) = store.list_quarantine(M)
    assert q["batch_id"] == b2 and q["reasons"] == reasons and store.list_quarantine("other") == []
    assert [b["id"] for b in store.list_batches(M)] == [b1, b2] and len(store.list_batches()) == 2
    assert [d["outcome"] for d in store.list_decisions(M, "ingest")] == ["accepted", "accepted", "quarantined"]


def test_accepted_batches_are_counted_by_decision_time(store):
    b1 = store.create_batch(M, "a.csv", "a", None, None)
    store.accept_batch(b1, M, date(2013, 2, 8), "/p", [], decision())
    decided = store.get_batch(b1)["decided_at"]
    b2 = store.create_batch(M, "b.csv", "b", None, None)
    store.quarantine_batch(b2, M, "b.csv", [{"code": "x"}], "/q", None, decision(outcome="quarantined"))
    assert store.count_accepted_batches(M) == 1
    assert store.count_accepted_batches(M, decided_after=decided - timedelta(seconds=1)) == 1
    assert store.count_accepted_batches(M, decided_after=decided) == 0


# -- inference log and its journal ----------------------------------------------------------------
def rec(i: int, *, version: str = "1", route: str = "champion", status: str = "ok", entity: str | None = None, **kw) -> dict:
    return {
        "request_id": f"r{i}",
        "entity_id": entity or f"e{i}",
        "model_name": M,
        "model_version": version,
        "route": route,
        "event_time": T0 + timedelta(hours=i),
        "features": {"x": i},
        "score": i / 10,
        "prediction": i % 2,
        "latency_ms": 1.0 + i,
        "status": status,
        "error": None,
        "created_at": T0 + timedelta(minutes=i),
        **kw,
    }


def test_inference_rows_filter_and_keep_id_order(store):
    store.append_inference([rec(0), rec(1, version="2", route="challenger"), rec(2, version="2", route="shadow"), rec(3)])
    all_rows = store.inference_rows(M, ["id", "request_id", "features"])
    assert [r[1] for r in all_rows] == ["r0", "r1", "r2", "r3"] and all_rows[0][2] == {"x": 0}
    first_id = all_rows[0][0]
    assert [r[0] for r in store.inference_rows(M, ["request_id"], after_id=first_id, limit=2)] == ["r1", "r2"]
    assert [r[0] for r in store.inference_rows(M, ["request_id"], created_from=T0 + timedelta(minutes=2))] == ["r2", "r3"]
    assert [r[0] for r in store.inference_rows(M, ["request_id"], versions=["2"], routes=("challenger",))] == ["r1"]
    assert store.inference_rows("other", ["request_id"]) == []


def test_status_counts_and_rejected_requests(store):
    store.append_inference(
        [
            rec(0),
            rec(1, status="error"),
            rec(2, version="2", route="challenger"),
            rec(3, status="rejected", version=None, route="champion"),
            rec(4, status="rejected", version=None, route="champion", request_id="r3"),  # one request, two rows
        ]
    )
    assert store.inference_status_counts(M, created_from=T0) == {"ok": 2, "error": 1, "rejected": 2}
    assert store.inference_status_counts(M, created_from=T0, version="1", routes=["champion"]) == {"ok": 1, "error": 1}
    assert store.inference_status_counts(M, created_from=T0, distinct_requests=True) == {"ok": 2, "error": 1, "rejected": 1}
    assert store.inference_status_counts(M, created_from=T0 + timedelta(minutes=2), version="2") == {"ok": 1}
    assert store.count_rejected(M, T0, T0 + timedelta(minutes=4)) == 2
    assert store.count_rejected(M, T0, T0 + timedelta(minutes=3)) == 1


def test_labelled_inference_joins_successful_predictions_to_ground_truth(store):
    b = store.create_batch(M, "a.csv", "a", None, None)
    truth = [{"entity_id": f"e{i}", "event_time": T0, "label": i % 2, "outcome": None} for i in range(4)]
    store.accept_batch(b, M, date(2013, 2, 8), "/p", truth, decision())
    store.append_inference(
        [
            rec(0),
            rec(1, version="2", route="challenger"),
            rec(2, version="2", route="shadow"),
            rec(3, status="error"),  # not a prediction
            rec(4),  # no label
            rec(5, entity="e0", version="2", route="challenger"),  # e0 scored twice
        ]
    )
    both = store.labelled_inference(M, ["entity_id", "model_version"], routes=["champion", "challenger"])
    assert sorted(both) == [("e0", "1", 0), ("e0", "2", 0), ("e1", "2", 1)]
    v2 = store.labelled_inference(M, ["entity_id", "score"], routes=["champion", "challenger", "shadow"], version="2")
    assert sorted(v2) == [("e0", 0.5, 0), ("e1", 0.1, 1), ("e2", 0.2, 0)]
    window = store.labelled_inference(
        M, ["entity_id"], routes=["challenger", "shadow"], event_from=T0 + timedelta(hours=2), event_to=T0 + timedelta(hours=5)
    )
    assert window == [("e2", 0)]
    since = store.labelled_inference(
        M, ["entity_id", "features"], routes=["champion", "challenger"], created_from=T0 + timedelta(minutes=1)
    )
    assert sorted(since, key=lambda r: r[0]) == [("e0", {"x": 5}, 0), ("e1", {"x": 1}, 1)]


def journal_rows(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return dict(conn.execute(text("SELECT segment, records FROM log_journal")).tuples().all())


def test_journal_checkpoints_move_with_the_records(store):
    store.append_inference([rec(0), rec(1)], journal_marks={"a.jsonl": 2})
    assert journal_rows(store) == {"a.jsonl": 2} and len(store.inference_rows(M, ["id"])) == 2
    store.append_inference([rec(2)], journal_marks={"a.jsonl": 3, "b.jsonl": 1})
    store.checkpoint_journal({"b.jsonl": 4})
    assert journal_rows(store) == {"a.jsonl": 3, "b.jsonl": 4}
    store.forget_journal_segments(["a.jsonl"])
    store.forget_journal_segments([])
    assert journal_rows(store) == {"b.jsonl": 4}
    store.checkpoint_journal({"c.jsonl": 1})
    assert store.prune_journal(["c.jsonl"]) == ["b.jsonl"] and journal_rows(store) == {"c.jsonl": 1}


def test_a_journal_segment_is_replayed_past_its_checkpoint_once(store):
    store.append_inference([rec(0)], journal_marks={"s.jsonl": 1})
    assert store.replay_journal_segment("s.jsonl", [rec(0), None, rec(2)]) == 1  # None: an unreadable line
    assert journal_rows(store) == {"s.jsonl": 3}
    assert store.replay_journal_segment("s.jsonl", [rec(0), None, rec(2)]) == 0
    assert [r[0] for r in store.inference_rows(M, ["request_id"])] == ["r0", "r2"]
    assert store.replay_journal_segment("new.jsonl", [rec(3)]) == 1 and journal_rows(store)["new.jsonl"] == 1


# -- deployment ledger ---------------------------------------------------------------------------------
def ledger(store: Store, alias: str, to: str | None, key: str, *, strategy: str | None = None, action: str = "set") -> dict:
    return store.append_ledger(
        model=M, alias=alias, action=action, from_version=None, to_version=to, strategy=strategy, reason="t", actor="test", op_key=key
    )


def test_ledger_queries_and_who_holds_an_alias(store):
    assert store.alias_holder(M, "champion") is None and store.ledger_latest(M, "champion") is None
    first = ledger(store, "champion", "1", "k1", strategy="direct")
    assert ledger(store, "champion", "9", "k1")["id"] == first["id"]  # idempotent by op key
    assert store.ledger_entry("k1")["to_version"] == "1" and store.ledger_entry("nope") is None
    ledger(store, "challenger", "2", "k2", strategy="canary")
    assert store.alias_holder(M, "challenger")["to_version"] == "2"
    removed = ledger(store, "challenger", None, "k3", action="removed")
    assert store.alias_holder(M, "challenger") is None and store.ledger_latest(M, "challenger")["id"] == removed["id"]
    ledger(store, "champion", "2", "k4", strategy="promotion")
    assert store.alias_holder(M, "champion")["to_version"] == "2"
    assert [r["op_key"] for r in store.list_ledger(M)] == ["k1", "k2", "k3", "k4"]
    assert [r["op_key"] for r in store.list_ledger(M, "challenger")] == ["k2", "k3"] and store.list_ledger("other") == []
    # deployments: a version set with a deployment strategy (a promotion is not one)
    assert store.latest_deployment(M)["op_key"] == "k2"
    assert store.latest_deployment(M, "1")["op_key"] == "k1"
    assert store.latest_deployment(M, "3") is None and store.latest_deployment("other") is None


# -- decisions -------------------------------------------------------------------------------------------
def test_decision_lookups_by_version_and_window(store):
    end = T0 + timedelta(days=7)
    store.record_decision(M, "monitor", "healthy", "healthy", subject="v3 w", version="3", window_start=T0, window_end=end)
    store.record_decision(M, "monitor", "drift", "dataset_drift", version=4, window_start=end, window_end=end + timedelta(days=7))
    store.record_decision(M, "deployment", "refused", "challenger_busy", subject="version 5", version=5, inputs={"a": 1})
    assert store.decision_exists(M, "monitor", version="3", window_start=T0, window_end=end)
    assert not store.decision_exists(M, "monitor", version=4, window_start=T0, window_end=end)
    assert store.decision_exists(M, "monitor", window_end=end) and not store.decision_exists(M, "monitor", window_end=T0)
    assert store.decision_exists(M, "deployment", version=5) and not store.decision_exists(M, "gate")
    assert store.last_decision(M, "monitor")["outcome"] == "drift" and store.last_decision(M, "training") is None
    assert [d["kind"] for d in store.list_decisions(M)] == ["monitor", "monitor", "deployment"]
    assert store.list_decisions(M, "deployment")[0]["inputs"] == {"a": 1} and store.list_decisions("other") == []


def test_decided_since_matches_kinds_with_their_outcomes(store):
    store.record_decision(M, "training", "registered", "candidate_trained")
    at = store.list_decisions(M)[0]["created_at"]
    wanted = {"training": ["refused"], "deployment": ["deployed", "refused"]}
    assert not store.decided_since(M, at, wanted)
    store.record_decision(M, "deployment", "deployed", "deployed_canary")
    assert store.decided_since(M, at, wanted)
    assert not store.decided_since(M, at + timedelta(days=1), wanted)
    assert not store.decided_since(M, at, {}) and not store.decided_since("other", at, wanted)


# -- alerts -------------------------------------------------------------------------------------------------
def test_alert_queries(store):
    a, new = store.upsert_alert(M, "warning", "drift", "drift:v1", "drifted", {"share": 0.5})
    assert new and store.upsert_alert(M, "warning", "drift", "drift:v1", "drifted again", {}) == (a, False)
    b, _ = store.upsert_alert(M, "info", "no_change", "no_change:x", "nothing", {})
    row = store.get_alert(a)
    assert row["count"] == 2 and row["message"] == "drifted again" and store.get_alert(10_000) is None
    assert store.find_open_alert(M, "drift:v1")["id"] == a and store.find_open_alert(M, "nope") is None
    store.set_alert_severity(a, "critical")
    assert store.get_alert(a)["severity"] == "critical"
    assert [r["id"] for r in store.pending_alerts(M, severities=["critical", "warning"])] == [a]
    assert store.pending_alerts(M, severities=["critical"], since=row["last_seen"] + timedelta(days=1)) == []
    now = datetime(2026, 1, 1)
    assert store.claim_alert_delivery(a, now=now) and not store.claim_alert_delivery(a, now=now)
    assert store.pending_alerts(severities=["critical"]) == []
    assert store.claim_alert_delivery(a, now=now + timedelta(hours=1), due_before=now)  # a reminder is due
    store.release_alert_delivery(a, claimed_at=now + timedelta(hours=1), previous=None)  # its delivery failed
    assert store.get_alert(a)["delivered_at"] is None
    with pytest.raises(ValueError):
        store.resolve_alerts(M)
    closed = store.resolve_alerts(M, dedupe_prefix="drift:")
    assert [r["id"] for r in closed] == [a] and closed[0]["status"] == "open"
    assert store.find_open_alert(M, "drift:v1") is None and store.resolve_alerts(M, kind="drift") == []
    assert store.resolve_alerts(M, kind="no_change", dedupe_key="no_change:x")[0]["id"] == b
    assert {r["status"] for r in store.list_alerts(M)} == {"resolved"} and store.list_alerts("other") == []


# -- governance state ----------------------------------------------------------------------------------
def test_state_values_are_replaced_per_model_and_key(store):
    assert store.get_state(M, "k") is None and store.get_state(M, "k", []) == []
    store.set_state(M, "k", [{"id": "rr-0001"}])
    store.set_state(M, "k", [{"id": "rr-0001"}, {"id": "rr-0002"}])
    store.set_state("other", "k", 7)
    assert store.get_state(M, "k") == [{"id": "rr-0001"}, {"id": "rr-0002"}] and store.get_state("other", "k") == 7
