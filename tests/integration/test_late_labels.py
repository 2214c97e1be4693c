"""Late labels on the real ops store (SQLite, or PostgreSQL with MLOPS_TEST_BACKEND=postgres): a
window is judged with few of its labels (monitoring's own realized-quality check and decision
record), the rest arrive, and the revision measures it again: the revised value and labelled rows,
the verdict untouched, the trend test's history reading the revision, and a decay only the late
labels show recorded and alerted once. Also the v7 migration."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert, inspect, text

from include.mlops.adapters.store import Store, get_engine, ground_truth, inference_log, migrate, utcnow
from include.mlops.steps.monitoring.checks import Summary, check_realized_quality, quality_history
from include.mlops.steps.monitoring.reference import Reference
from include.mlops.steps.monitoring.revision import DECAY_REVISED, REVISION_KIND, revise_window_quality
from include.mlops.steps.monitoring.run import record_decision
from tests.conftest import ops_db_url

pytestmark = pytest.mark.integration

END = datetime(2013, 2, 15)  # the window [Feb 8, Feb 15); realized quality over its 7 days
HOLDOUT = {"roc_auc": 0.80}


def log_predictions(rt, n: int = 1400, *, version: str = "1", end: datetime = END, seed: int = 0) -> list[dict]:
    """``n`` scored requests of ``version`` spread over the 7 days before ``end``, as serving logs
    them; returns each entity with its score and a label that agrees with the score (ROC AUC ~0.9)."""
    rng = np.random.default_rng(seed)
    now = utcnow()
    labels = rng.random(n) < 0.3
    scores = np.clip(np.where(labels, rng.normal(0.65, 0.15, n), rng.normal(0.35, 0.15, n)), 0.001, 0.999)
    rows, truth = [], []
    for i in range(n):
        t = end - timedelta(days=7) + timedelta(seconds=int(i * 7 * 86400 / n))
        entity = f"{version}-{end:%m%d}-e{i}"
        rows.append(dict(request_id=f"r{i}", entity_id=entity, model_name=rt.model_name, model_version=version, route="champion",
                         event_time=t, features={}, score=float(scores[i]), prediction=int(scores[i] >= 0.5), latency_ms=4.0,
                         status="ok", error=None, created_at=now + timedelta(milliseconds=i)))  # fmt: skip
        truth.append({"entity_id": entity, "event_time": t, "label": int(labels[i])})
    # consistency probes are no window's traffic: never counted
    rows.append({**rows[0], "request_id": "p", "entity_id": f"probe-{entity}", "created_at": now})
    truth.append({**truth[0], "entity_id": f"probe-{entity}"})
    with rt.store.begin() as conn:
        conn.execute(insert(inference_log), rows)
    return truth


def land_labels(rt, truth: list[dict], *, flip: bool = False) -> None:
    """Ground truth of these entities arrives (``flip``: the opposite label, a model gone wrong)."""
    rows = [{**t, "label": 1 - t["label"] if flip else t["label"], "model_name": rt.model_name, "outcome": None, "batch_id": 7,
             "day": t["event_time"].date()} for t in truth]  # fmt: skip
    with rt.store.begin() as conn:
        conn.execute(insert(ground_truth), rows)


def judge(rt, end: datetime = END, version: str = "1") -> Summary:
    """The window's realized-quality verdict, recorded as monitoring records it."""
    start = end - timedelta(days=7)
    s = Summary(rt.model_name, version, "champion", start.isoformat(), end.isoformat(), rows=1400)
    ref = Reference(version, "run", {}, pd.DataFrame(), pd.DataFrame(), HOLDOUT)  # only the holdout metrics are read
    check_realized_quality(s, rt, end, ref)
    if not s.reason_codes:
        s.reason_codes.append("healthy")
    path = rt.lake.root / "reports" / rt.model_name / "monitoring" / f"v{version}" / f"{end:%Y%m%d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(s.to_dict(), default=str))
    record_decision(rt, s, (start, end), path, None, dag_id="monitor_model", run_id=f"judge-{end:%m%d}")
    return s


@pytest.fixture
def rt(runtime):
    assert runtime.spec.monitoring.trend_windows > 0 and runtime.spec.monitoring.min_labelled_rows == 300
    return runtime


def test_late_labels_revise_the_windows_quality_and_the_trend_reads_it(rt):
    truth = log_predictions(rt)
    land_labels(rt, truth[:400])  # the first days' labels: the rest are still on their way
    first = judge(rt)
    assert first.quality["status"] == "measured" and first.quality["labelled_rows"] == 400
    assert revise_window_quality(rt)["revised"] == []  # nothing new yet: nothing measured again

    land_labels(rt, truth[400:])
    out = revise_window_quality(rt, dag_id="ingest_outcomes", run_id="late-1")
    (r,) = out["revised"]
    assert (r["labelled_rows_before"], r["labelled_rows"], r["version"]) == (400, 1400, "1")
    assert r["value_before"] == pytest.approx(first.quality["live"]) and r["value"] != r["value_before"]
    assert 0.8 < r["value"] < 0.95 and r["reason_code"] is None and out["decay_revised"] == []
    (row,) = rt.store.list_window_quality(rt.model_name)
    assert (row["labelled_rows"], row["status"], row["metric"], row["run_id"]) == (1400, "measured", "roc_auc", "late-1")
    assert row["value"] == pytest.approx(r["value"]) and row["quality"]["live_metrics"]["roc_auc"] == pytest.approx(r["value"])
    (verdict,) = rt.store.list_decisions(rt.model_name, "monitor")
    assert verdict["inputs"]["quality"]["labelled_rows"] == 400 and row["decision_id"] == verdict["id"]  # the verdict stays

    # the count has not changed since: nothing is measured again
    assert revise_window_quality(rt)["revised"] == [] and len(rt.store.list_window_quality(rt.model_name)) == 1

    # the next window's trend test reads the revised value; so does the status page
    assert quality_history(rt, "1", END + timedelta(days=1)) == [pytest.approx(r["value"])]
    later = judge(rt, END + timedelta(days=1))
    assert later.quality["trend_test"]["windows"] == 2
    from include.mlops.ui.status_page import gather, render

    status = gather(rt)
    assert [w["quality"]["labelled_rows"] for w in status.windows] == [1400, later.quality["labelled_rows"]]
    assert "revised, 1400 labelled" in render(status)


def test_a_decay_only_the_late_labels_show_is_recorded_and_alerted_once(rt):
    truth = log_predictions(rt, seed=1)
    land_labels(rt, truth[:400])
    first = judge(rt)
    assert "quality_decay" not in first.reason_codes and first.quality["live"] > 0.8
    land_labels(rt, truth[400:1000], flip=True)  # the late labels say the model got those days wrong
    out = revise_window_quality(rt)
    (r,) = out["decay_revised"]
    assert r["reason_code"] == DECAY_REVISED and r["value"] < HOLDOUT["roc_auc"] - rt.spec.monitoring.max_quality_drop
    (d,) = rt.store.list_decisions(rt.model_name, REVISION_KIND)
    assert (d["outcome"], d["reason_code"], d["version"], d["window_end"]) == ("decay", DECAY_REVISED, 1, END)
    assert "labels that arrived after the verdict" in d["reasons"][0] and d["inputs"]["labelled_rows_before"] == 400
    (alert,) = [a for a in rt.store.list_alerts(rt.model_name) if a["kind"] == "performance_degraded"]
    assert (alert["severity"], alert["dedupe_key"], alert["status"]) == ("critical", "decay:v1", "open")
    assert alert["payload"]["reason_codes"] == [DECAY_REVISED]

    # more late labels: measured again, still decayed, but reported once
    land_labels(rt, truth[1000:], flip=True)
    again = revise_window_quality(rt)
    assert [x["labelled_rows"] for x in again["revised"]] == [1400] and again["decay_revised"] == []
    assert len(rt.store.list_decisions(rt.model_name, REVISION_KIND)) == 1
    rows = rt.store.list_window_quality(rt.model_name)
    assert [(w["decayed"], w["reason_code"]) for w in rows] == [(1, DECAY_REVISED), (1, None)]
    assert [a["count"] for a in rt.store.list_alerts(rt.model_name) if a["kind"] == "performance_degraded"] == [1]


def test_only_the_recent_windows_are_looked_at(rt):
    for k in range(3):
        end = END + timedelta(days=7 * k)
        truth = log_predictions(rt, 600, end=end, seed=k)
        land_labels(rt, truth[:350])
        judge(rt, end)
        land_labels(rt, truth[350:])
    out = revise_window_quality(rt, windows=2)
    assert out["windows"] == 2 and [r["window_end"] for r in out["revised"]] == [(END + timedelta(days=d)).isoformat() for d in (7, 14)]
    assert [r["window_end"] for r in revise_window_quality(rt, windows=3)["revised"]] == [END.isoformat()]


def test_a_v6_database_gets_the_window_quality_table(tmp_path, monkeypatch):
    from include.mlops.adapters.store import schema

    # only the migrations up to v7 (later ones belong to other changes and are tested with them)
    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] <= 7])
    monkeypatch.setattr(schema, "LATEST_VERSION", 7)
    engine = get_engine(ops_db_url(tmp_path))
    migrate(engine)
    with engine.begin() as conn:  # take the database back to v6, as a deployment made before this change
        conn.execute(text("DROP TABLE window_quality"))
        conn.execute(text("DELETE FROM schema_version"))
        conn.execute(text("INSERT INTO schema_version (version, description, applied_at) VALUES (6, 'v6', '2026-01-01')"))
    assert migrate(engine) == 7
    assert "window_quality" in inspect(engine).get_table_names()
    s = Store(engine)
    key = ("2", datetime(2013, 2, 8), datetime(2013, 2, 15))
    s.record_window_quality("m", key, decision_id=1, quality={"labelled_rows": 5, "metric": "roc_auc", "live": None}, decayed=False)
    assert s.latest_window_quality("m")[key]["labelled_rows"] == 5
    assert s.count_labelled("m", "2", event_from=key[1], event_to=key[2], routes=["champion"], exclude_prefix="probe-") == 0
