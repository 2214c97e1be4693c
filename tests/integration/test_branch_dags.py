"""dag.test() of the two DAGs whose first task is a branch (monitor_model, retrain_on_drift): with
nothing to emit, the follow-up task is skipped by the scheduler's rules (no task process), and the
first task's full result is still there as the XCom ``result``. The emitting paths run live in the
demo's e2e test (drift -> retrain_on_drift -> train_candidate)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def states(run):
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def result_of(run, task_id):
    (ti,) = [ti for ti in run.get_task_instances() if ti.task_id == task_id]
    return ti.xcom_pull(task_ids=task_id, key="result")


def dag(name):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{name}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(name)


def test_monitor_without_traffic_emits_nothing_and_keeps_its_result(airflow_db, runtime):
    run = dag("monitor_model").test()
    assert run.state == "success", states(run)
    assert states(run) == {"monitor": "success", "emit_drift": "skipped", "emit_decay": "skipped"}
    result = result_of(run, "monitor")
    assert result["status"] == "no_traffic" and result["summaries"] == [], result


def test_retrain_by_hand_without_a_reason_requests_nothing_and_says_why(airflow_db, runtime):
    run = dag("retrain_on_drift").test(run_conf={"reason": None, "event_time": None})
    assert run.state == "success", states(run)
    assert states(run) == {"govern": "success", "request_retrain": "skipped"}
    result = result_of(run, "govern")
    assert result["request"] is None and [v["reason_code"] for v in result["verdicts"]] == ["reason_required"]
    assert result["summary"].startswith("no retrain. refused (reason_required)")
    assert runtime.store.list_decisions(runtime.model_name, "governance") == []  # no trigger, nothing to govern


def test_retrain_by_hand_goes_through_governance(airflow_db, ml_runtime, mlflow_env, model_name, spec_variant):
    """A manual request with a reason is judged by the same rules as a drift event (cause ``manual``,
    at the given event time): refused while too few new rows, then accepted, and the run says so."""
    rt = ml_runtime
    conf = {"reason": "new fare rules from June", "event_time": "2013-06-01T00:00:00"}
    run = dag("retrain_on_drift").test(run_conf=conf)
    assert states(run) == {"govern": "success", "request_retrain": "skipped"}, states(run)
    result = result_of(run, "govern")
    assert [v["reason_code"] for v in result["verdicts"]] == ["not_enough_new_rows"] and result["request"] is None
    assert "refused (not_enough_new_rows)" in result["summary"]
    (d,) = rt.store.list_decisions(model_name, "governance")
    assert (d["outcome"], d["reason_code"]) == ("refused", "not_enough_new_rows")
    assert d["inputs"]["trigger"]["cause"] == "manual" and d["inputs"]["trigger"]["event_time"] == "2013-06-01T00:00:00"
    assert "manual: new fare rules from June" in d["reasons"]

    spec_variant("manual", retraining={"min_new_rows": 0})
    run = dag("retrain_on_drift").test(run_conf=conf)
    assert run.state == "success" and states(run) == {"govern": "success", "request_retrain": "success"}, states(run)
    result = result_of(run, "govern")
    assert result["request"]["cause"] == "manual" and "new fare rules" in result["request"]["reason"]
    assert result["summary"].startswith(f"retrain requested ({result['request']['request_id']})")
    d = rt.store.list_decisions(model_name, "governance")[-1]
    assert (d["outcome"], d["reason_code"]) == ("accepted", "retrain_requested")


def test_a_stale_champion_asks_for_a_retrain_when_a_window_closes(ml_runtime, mlflow_env, model_name, spec_variant):
    """retraining.max_model_age_days: a closed window whose end is too far past the champion's
    training data is a ``model_stale`` trigger through governance; a fresh champion asks nothing."""
    import json

    from include.mlops.adapters.registry import CHAMPION, mlflow_client, set_alias
    from include.mlops.steps.governance import govern_run

    spec_variant("fresh", retraining={"max_model_age_days": 30, "min_new_rows": 0})
    rt = ml_runtime
    client = mlflow_client(mlflow_env["url"])
    import mlflow

    with mlflow.start_run(run_name="stale") as run:  # a version needs a source inside a run's artifacts
        mlflow.log_text("not loaded here", "model/README.txt")
    client.create_registered_model(model_name)
    v1 = client.create_model_version(model_name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version
    client.set_model_version_tag(model_name, v1, "mlops.window", json.dumps({"holdout_end": "2013-03-07"}))
    set_alias(rt.store, client, model_name, CHAMPION, str(v1), strategy="direct", reason="t", actor="test", op_key="c1")

    from include.mlops.runtime import load_runtime

    rt = load_runtime()  # the variant spec
    fresh = govern_run(rt, [("inference_window_closed", {"window_end": "2013-03-20T00:00:00"})], {}, dag_id="t", run_id="r1")
    assert fresh["verdicts"] == [] and fresh["request"] is None  # 12 days old: nothing to judge, nothing recorded
    stale = govern_run(rt, [("inference_window_closed", {"window_end": "2013-04-20T00:00:00"})], {}, dag_id="t", run_id="r2")
    assert [v["reason_code"] for v in stale["verdicts"]] == ["retrain_requested"] and stale["request"]["cause"] == "model_stale"
    (d,) = rt.store.list_decisions(model_name, "governance")
    assert d["inputs"]["trigger"]["key"] == f"model_stale:v{v1}" and any("days old > 30" in r for r in d["reasons"])
