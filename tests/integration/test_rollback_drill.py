"""The rollback drill on the real serving API and MLflow server: a model that is fine offline and
bad in production (it fails on a category only production traffic has) starts as canary, the early
window rolls it back automatically, and no request fails, before, during or after the rollback."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import pytest

from include.mlops.adapters.registry import CHALLENGER, CHAMPION, aliases, mlflow_client, set_alias, set_challenger_mode
from tests.helpers import make_batch
from tests.integration.serving_fixtures import MlflowServer, Process, register, row_payload, start_serving

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_bad_canary_is_rolled_back_with_no_failed_request(
    airflow_db, ml_runtime, mlflow_env, model_name, spec_variant, tmp_path, monkeypatch
):
    import pandas as pd

    from include.mlops.domain.pipelines import default_pipeline
    from tooling.drills import fragile_pipeline

    spec_variant("drill", early_window={"min_requests": 60, "max_minutes": 5})
    rt = ml_runtime
    spec = rt.spec
    df = pd.concat([make_batch(spec, date(2013, 3, d), n=150, seed=d) for d in range(1, 5)], ignore_index=True)
    x, y = df[spec.feature_names], spec.target.derive(df[spec.target.source_column]).astype(int)
    unused = Process("mlflow", None, tmp_path / "unused.log")  # type: ignore[arg-type]
    server = MlflowServer(unused, mlflow_env["url"], Path(mlflow_env["artifacts"]), ops_db=rt.settings.ops_db_url)
    v1 = register(server, spec, model_name, default_pipeline(spec, {"max_iter": 15}).fit(x, y), x)
    v2 = register(
        server,
        spec,
        model_name,
        fragile_pipeline(spec, {"max_iter": 15}).fit(x, y),
        x,
        extra_trusted=tuple(fragile_pipeline.skops_trusted_types),
    )
    client = mlflow_client(mlflow_env["url"])
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="drill", op_key="d1")
    set_challenger_mode(client, model_name, "canary", 0.5)
    set_alias(rt.store, client, model_name, CHALLENGER, v2, strategy="canary", reason="drill: fragile canary", actor="drill", op_key="d2")

    serving = start_serving(tmp_path / "serving", server, model_name, {"MLOPS_OPS_DB_URL": rt.settings.ops_db_url})
    try:
        serving.wait_serving(v1, v2)
        monkeypatch.setenv("MLOPS_SERVING_URL", serving.url)
        # production traffic: one row in five flies to a destination the spec never heard of
        traffic = make_batch(spec, date(2013, 3, 9), n=2000, seed=42)
        traffic.loc[traffic.index[::5], "dest"] = "XXX"
        statuses: list[int] = []
        stop = threading.Event()

        def send() -> None:
            i = 0
            while not stop.is_set():
                k = i % len(traffic)
                status, _ = serving.predict(row_payload(spec, traffic[spec.feature_names], k, f"drill-{i}"))
                statuses.append(status)
                i += 1

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + 60
        from include.mlops.steps.release import Release, find_release
        from include.mlops.steps.release import traffic as release_traffic

        rel: Release = find_release(rt, v2)
        while time.monotonic() < deadline and release_traffic(rt, rel)[0] < 80:
            time.sleep(0.5)
        requests, errors = release_traffic(rt, rel)
        assert requests >= 80 and errors > 0, (requests, errors)

        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(dag_folder=str(ROOT / "dags" / "check_early_window.py")).get_dag("check_early_window")
        run = dag.test(run_conf={"version": v2})
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert states["roll_back"] == "success", states
        assert aliases(client, model_name) == {CHAMPION: v1}
        serving.wait_serving(v1, None, timeout=30)
        time.sleep(2)  # traffic keeps flowing through the swap
        stop.set()
        sender.join(timeout=30)
    finally:
        serving.process.stop()

    assert len(statuses) > 100 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    (decision,) = rt.store.list_decisions(model_name, "early_window")
    assert decision["outcome"] == "rollback" and any("error rate" in r for r in decision["reasons"])
    last = rt.store.list_ledger(model_name)[-1]
    assert (last["alias"], last["action"], last["from_version"]) == (CHALLENGER, "rolled_back", v2)
