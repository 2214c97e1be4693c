"""Helpers shared by the loop's integration tests: traffic written to the inference log as the
serving API would write it, with the ground truth that arrives later."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
from sqlalchemy import insert

from include.mlops.adapters.store import ground_truth, inference_log, utcnow
from tooling.replay import day_frame


def log_traffic(
    rt,
    flights,
    model_name,
    versions_routes,
    *,
    day=date(2013, 2, 10),
    errors_for=None,
    error_share=0.0,
    labels=True,
    mutate=None,
    rejected=0,
):
    """Insert scored requests into the inference log (and their ground truth), as serving would."""
    import mlflow.sklearn

    from include.mlops.domain.tasks import scores

    df = day_frame(flights, rt.spec, day)
    if mutate is not None:  # e.g. a feed that goes null, a category production traffic has
        df = mutate(df.copy())
    now = utcnow()
    rows, truth = [], []
    models = {v: mlflow.sklearn.load_model(f"models:/{model_name}/{v}") for v, _ in versions_routes}
    # each version scores the day in one batch (a row's score does not depend on the other rows)
    batch = {v: scores(rt.spec.task, m, df[rt.spec.feature_names]) for v, m in models.items()}
    rng = np.random.default_rng(0)
    for i, rec in enumerate(df.to_dict(orient="records")):
        version, route = versions_routes[i % len(versions_routes)]
        feats = {k: (None if isinstance(rec[k], float) and np.isnan(rec[k]) else rec[k]) for k in rt.spec.feature_names}
        failed = version == errors_for and rng.random() < error_share
        score = None if failed else float(batch[version][i])
        # a regressor's score is its predicted value; the log's integer prediction column keeps it rounded
        regression = rt.spec.task == "regression"
        rows.append(
            dict(
                request_id=f"r{i}",
                entity_id=rec["flight_id"],
                model_name=model_name,
                model_version=version,
                route=route,
                event_time=rec["sched_dep"].to_pydatetime(),
                features=json.loads(json.dumps(feats, default=str)),
                score=score,
                prediction=None if failed or score is None else (int(round(score)) if regression else int(score >= 0.5)),
                latency_ms=float(rng.uniform(3, 9)),
                status="error" if failed else "ok",
                error="boom" if failed else None,
                created_at=now + timedelta(milliseconds=i),
            )  # fmt: skip
        )
        truth.append(dict(model_name=model_name, entity_id=rec["flight_id"], event_time=rec["sched_dep"].to_pydatetime(),
                          label=int(rec["arr_delay"] > 15), outcome=float(rec["arr_delay"]), batch_id=1, day=day))  # fmt: skip
    for k in range(rejected):  # schema-invalid requests, as the serving API logs them
        bad = dict(request_id=f"bad{k}", entity_id=None, model_name=model_name, model_version=None, route="champion", event_time=None)
        bad.update(features=None, score=None, prediction=None, latency_ms=0.5, status="rejected", error="row 0: distance: not a number")
        rows.append({**bad, "created_at": now + timedelta(milliseconds=k)})
    with rt.store.begin() as conn:
        conn.execute(insert(inference_log), rows)
        if labels:
            conn.execute(insert(ground_truth), truth)
    return len(rows)
