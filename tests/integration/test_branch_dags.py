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


def test_retrain_without_triggers_requests_nothing_and_keeps_the_verdicts(airflow_db, runtime):
    run = dag("retrain_on_drift").test()
    assert run.state == "success", states(run)
    assert states(run) == {"govern": "success", "request_retrain": "skipped"}
    assert result_of(run, "govern") == {"verdicts": [], "request": None}
