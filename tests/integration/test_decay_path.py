"""The decay path end to end on the real components: a champion trained by the loop serves a week in
which the relation between the flights' features and their delays breaks (the labels that arrive no
longer follow the inputs: the inputs themselves do not drift). dag.test() of monitor_model judges the
window: decay (``quality_decay``), a critical alert, and the ``performance_degraded`` asset event in
Airflow's metadata DB, queued for retrain_on_drift. retrain_on_drift then runs on that event as the
scheduler would start it (the queued event linked to the run as its triggering event); governance,
with ``decay_evidence: significant``, tests the decay on the window's labelled requests against the
holdout, accepts, and emits ``retrain_requested``."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from include.mlops.adapters.registry import CHAMPION, mlflow_client, set_alias
from tests.integration.loop_candidates import register, train_module_candidates
from tests.integration.loop_helpers import log_traffic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
WINDOW = {"window_start": "2013-02-12T00:00:00", "window_end": "2013-02-14T00:00:00"}


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="module")
def trained(mlflow_server, flights, tmp_path_factory):
    """A champion trained by the loop on five weeks of January (enough weekly chunks to calibrate its
    drift thresholds), evaluated on the week after."""
    return train_module_candidates(
        mlflow_server, flights, tmp_path_factory, "decay_src", {"jan": (date(2013, 1, 1), date(2013, 2, 4), None)}
    )


def labels_unrelated_to_inputs(df):
    """Concept drift: each flight keeps its inputs, the delays are those of other flights."""
    df["arr_delay"] = np.random.default_rng(7).permutation(df["arr_delay"].to_numpy())
    return df


def asset_events(name: str, run_id: str) -> list[Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == name, AssetEvent.source_run_id == run_id)
        ).all()
        return [(e.id, dict(e.extra)) for e in rows]


def set_paused(dag_id: str, paused: bool) -> None:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=paused))


def queued_for(dag_id: str) -> list[str]:
    """The assets whose events wait in the scheduler's queue to start ``dag_id``."""
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(
            session.scalars(
                select(AssetModel.name)
                .join(AssetDagRunQueue, AssetDagRunQueue.asset_id == AssetModel.id)
                .where(AssetDagRunQueue.target_dag_id == dag_id)
            )
        )


@contextmanager
def triggered_by(dag_id: str, event_ids: list[int]):
    """While active, a new run of ``dag_id`` consumes the asset events ``event_ids`` (the link the
    scheduler makes when it creates an asset-triggered run from its queue), and the queue is emptied."""
    from airflow.models.asset import AssetDagRunQueue, association_table
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete, event, insert

    def link(mapper: Any, connection: Any, run: Any) -> None:
        if run.dag_id == dag_id:
            connection.execute(insert(association_table), [{"dag_run_id": run.id, "event_id": e} for e in event_ids])

    event.listen(DagRun, "after_insert", link)
    try:
        with create_session() as session:
            session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag_id))
        yield
    finally:
        event.remove(DagRun, "after_insert", link)


def states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def xcom_result(run, task_id: str) -> dict[str, Any]:
    (ti,) = [ti for ti in run.get_task_instances() if ti.task_id == task_id]
    return ti.xcom_pull(task_ids=task_id, key="result")


def test_a_decaying_champion_is_detected_and_a_retrain_is_requested_through_the_assets(
    airflow_db, ml_runtime, mlflow_env, model_name, flights, trained, dags, spec_variant
):
    spec_variant(
        "decay",
        monitoring={"min_rows": 100, "min_labelled_rows": 300, "max_quality_drop": 0.02},
        retraining={"decay_evidence": "significant", "min_new_rows": 1000},
    )
    from include.mlops.runtime import load_runtime

    rt = load_runtime()
    client = mlflow_client(mlflow_env["url"])
    (v1,) = register(client, model_name, trained, "jan")
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="test", op_key="first")
    rows = sum(
        log_traffic(rt, flights, model_name, [(v1, CHAMPION)], day=d, mutate=labels_unrelated_to_inputs)
        for d in (date(2013, 2, 12), date(2013, 2, 13))
    )

    # retrain_on_drift is unpaused (as in a running loop): the event is queued for it
    dags.get_dag("retrain_on_drift").test(run_conf={"reason": None, "event_time": None})  # registers the DAGs; requests nothing
    set_paused("retrain_on_drift", False)
    try:
        run = dags.get_dag("monitor_model").test(run_conf={**WINDOW, "force": False})
    finally:
        set_paused("retrain_on_drift", True)

    # 1. monitoring: decay, not drift (the inputs are those of any February week)
    assert run.state == "success" and states(run) == {"monitor": "success", "emit_drift": "skipped", "emit_decay": "success"}, states(run)
    (summary,) = [s for s in xcom_result(run, "monitor")["summaries"] if s["role"] == CHAMPION]
    assert summary["rows"] == rows and summary["outcome"] == "decay" and "quality_decay" in summary["reason_codes"], summary
    quality = summary["quality"]
    assert quality["status"] == "measured" and quality["holdout"] - quality["live"] > rt.spec.monitoring.max_quality_drop
    assert abs(quality["live"] - 0.5) < 0.05  # labels unrelated to the scores: a coin toss
    (decision,) = rt.store.list_decisions(model_name, "monitor")
    assert (decision["outcome"], decision["version"]) == ("decay", int(v1))
    assert any("labelled predictions vs" in r for r in decision["reasons"]), decision["reasons"]
    (alert,) = [a for a in rt.store.list_alerts(model_name) if a["kind"] == "performance_degraded"]
    assert alert["severity"] == "critical" and f"v{v1} decay" in alert["message"]

    # 2. the asset event, in Airflow's metadata DB, waiting for retrain_on_drift
    assert asset_events("drift_detected", run.run_id) == []
    ((event_id, extra),) = asset_events("performance_degraded", run.run_id)
    assert extra["version"] == v1 and extra["reason_codes"] == ["quality_decay"] and extra["window_end"] == WINDOW["window_end"]
    assert extra["quality"] == pytest.approx(quality["live"])
    assert "performance_degraded" in queued_for("retrain_on_drift")

    # 3. retrain_on_drift on that event: the decay is tested, found real, and a retrain requested
    with triggered_by("retrain_on_drift", [event_id]):
        gov = dags.get_dag("retrain_on_drift").test(run_conf={"reason": None, "event_time": None})
    assert gov.state == "success" and states(gov) == {"govern": "success", "request_retrain": "success"}, states(gov)
    assert queued_for("retrain_on_drift") == []
    result = xcom_result(gov, "govern")
    (verdict,) = result["verdicts"]
    assert (verdict["outcome"], verdict["reason_code"]) == ("accepted", "retrain_requested"), result
    request = result["request"]
    assert request["cause"] == "performance_degraded" and result["summary"].startswith(f"retrain requested ({request['request_id']})")
    (d,) = rt.store.list_decisions(model_name, "governance")
    assert (d["outcome"], d["reason_code"]) == ("accepted", "retrain_requested")
    trigger = d["inputs"]["trigger"]
    assert trigger["cause"] == "performance_degraded" and trigger["key"] == f"performance_degraded:v{v1}"
    test = trigger["evidence"]["decay_test"]
    assert test["decayed"] and test["reason"] == "decayed" and test["rows"] >= rt.spec.monitoring.min_labelled_rows, test
    ((_, requested),) = asset_events("retrain_requested", gov.run_id)
    assert requested["request_id"] == request["request_id"] and requested["cause"] == "performance_degraded"
