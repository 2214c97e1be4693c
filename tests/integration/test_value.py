"""The live loop's realized value (``steps.value``) against a real MLflow server: the first champion
is loaded from the registry, a monitoring pass stores the value the status page shows, and the
counterfactual weekly schedule is fitted on the lake's pool."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import insert

from include.mlops.adapters.registry import CHAMPION, mlflow_client, set_alias
from include.mlops.adapters.store import ground_truth, inference_log, utcnow
from include.mlops.steps.monitoring.run import run_windows
from include.mlops.steps.training import train_candidate
from include.mlops.steps.value import compute_value, load_version, read_value, value_path
from include.mlops.ui.status_page import gather, render
from tests.integration.conftest import fill_pool
from tooling.replay import day_frame

pytestmark = pytest.mark.integration

SERVED_DAYS = [date(2013, 2, 12), date(2013, 2, 20), date(2013, 3, 4)]


def serve_day(rt, flights, version, day):
    """A day of flights scored in one call by ``version``'s registry artifact, written to the
    inference log as the serving API writes it, with the ground truth that lands later."""
    df = day_frame(flights, rt.spec, day)
    scores = load_version(rt, version).predict_proba(df[rt.spec.feature_names])[:, 1]
    now = utcnow()
    rows, truth = [], []
    for i, (rec, score) in enumerate(zip(df.to_dict(orient="records"), scores, strict=True)):
        feats = {k: (None if isinstance(rec[k], float) and np.isnan(rec[k]) else rec[k]) for k in rt.spec.feature_names}
        rows.append(
            dict(request_id=f"{day}-{i // 100}", entity_id=rec["flight_id"], model_name=rt.model_name, model_version=version,
                 route="champion", event_time=rec["sched_dep"].to_pydatetime(), features=json.loads(json.dumps(feats, default=str)),
                 score=float(score), prediction=int(score >= 0.5), latency_ms=5.0, status="ok", error=None,
                 created_at=now + timedelta(milliseconds=i))
        )  # fmt: skip
        truth.append(dict(model_name=rt.model_name, entity_id=rec["flight_id"], event_time=rec["sched_dep"].to_pydatetime(),
                          label=int(rec["arr_delay"] > 15), outcome=float(rec["arr_delay"]), batch_id=1, day=day))  # fmt: skip
    with rt.store.begin() as conn:
        conn.execute(insert(inference_log), rows)
        conn.execute(insert(ground_truth), truth)


def test_the_first_champion_from_the_registry_matches_what_it_served(ml_runtime, mlflow_env, flights, spec_variant):
    spec_variant("value", monitoring={"min_rows": 100, "min_labelled_rows": 200})
    from include.mlops.runtime import load_runtime

    rt = load_runtime()
    fill_pool(rt, flights, date(2013, 1, 1), date(2013, 3, 5))
    version = train_candidate(rt, train_start=date(2013, 1, 1), train_end=date(2013, 1, 31), run_id="value-train")["version"]
    client = mlflow_client(mlflow_env["url"])
    set_alias(rt.store, client, rt.model_name, CHAMPION, version, strategy="direct", reason="first", actor="test", op_key="c1")
    for day in SERVED_DAYS:
        serve_day(rt, flights, version, day)

    # a monitoring pass stores served vs first champion (registry artifact) for the status page
    start = datetime.combine(SERVED_DAYS[-1], datetime.min.time())
    run_windows(rt, [(start.isoformat(), (start + timedelta(days=1)).isoformat())])
    stored = read_value(rt.lake)
    assert stored is not None and stored.note is None, stored
    assert [m.month for m in stored.months] == ["2013-02", "2013-03"]
    for m in stored.months:
        assert m.served is not None and m.first_champion == m.served  # the first champion served every row
        assert m.scheduled is None
    assert json.loads(value_path(rt.lake).read_text())["first_champion"] == version
    assert "Realized value" in render(gather(rt)) and f"first champion v{version}" in render(gather(rt))

    # the demo's full table: the weekly schedule refitted on the pool, scoring the same rows
    value = compute_value(rt)
    assert value.rows == stored.rows and value.first_champion == version
    # refits at the close of Feb 18, Feb 25, Mar 4 (the pool ends Mar 5), on the loop's window and on the newest labels
    assert value.scheduled == {"every_days": 7, "retrains": 3, "retrains_newest": 3}
    assert all(m.scheduled is not None and 0.5 < m.scheduled < 1 for m in value.months)
    assert all(m.scheduled_newest is not None and 0.5 < m.scheduled_newest < 1 for m in value.months)
    assert [m.first_champion for m in value.months] == [m.first_champion for m in stored.months]
