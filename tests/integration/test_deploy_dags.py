"""dag.test() of train_candidate and deploy_validated_model against a real MLflow server and a
temporary ops store: the first model becomes champion, a better candidate starts as canary, a
worse one is refused, a broken artifact is refused, and every step is in the ledger."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from include.mlops.adapters.registry import CHALLENGER, CHAMPION, TAG_MODE, aliases, mlflow_client
from include.mlops.domain.policy import GATE_TASKS, GATES
from tests.integration.conftest import fill_pool

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WEAK = {"params": {"max_iter": 4, "max_leaf_nodes": 4, "learning_rate": 0.1}}
LOW_FLOORS = {"floors": {"roc_auc": 0.53}}


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


def states(run):
    return {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}


def labels(run, task_id):
    return sorted(ti.rendered_map_index or "" for ti in run.get_task_instances() if ti.task_id == task_id)


def train(dags, start, end):
    run = dags.get_dag("train_candidate").test(run_conf={"train_start": start, "train_end": end, "reason": "test"})
    assert run.state == "success", states(run)
    return run


def deploy(dags, **conf):
    run = dags.get_dag("deploy_validated_model").test(run_conf=conf)
    assert run.state == "success", states(run)
    return run


def corrupt_model_files(artifacts_root: Path, client, model, version) -> int:
    source = client.get_model_version(model, version).source  # models:/m-<id>
    model_id = source.rsplit("/", 1)[-1]
    hits = [p for p in artifacts_root.rglob("*") if p.is_file() and model_id in str(p) and p.suffix in {".skops", ".pkl"}]
    for p in hits:
        p.write_bytes(b"not a model any more")
    return len(hits)


def test_train_and_deploy_story(airflow_db, ml_runtime, mlflow_env, model_name, flights, spec_variant, dags):
    rt = ml_runtime
    client = mlflow_client(mlflow_env["url"])
    fill_pool(rt, flights, date(2013, 1, 1), date(2013, 3, 10))

    # 1. a first (weak) model becomes champion directly, through every gate
    spec_variant("weak", training=WEAK, deployment=LOW_FLOORS)
    train(dags, "2013-01-01", "2013-01-28")
    run = deploy(dags)
    assert states(run)[("deploy", -1)] == "success" and states(run)[("refuse", -1)] == "skipped"
    assert aliases(client, model_name) == {CHAMPION: "1"}
    gate_labels = labels(run, "gate")
    assert len(gate_labels) == len(GATE_TASKS) and all("passed" in label for label in gate_labels), gate_labels
    assert any("no champion to compare with" in label for label in gate_labels)

    # 2. a better candidate on a later window is gated against the champion and starts as canary
    spec_variant("normal", deployment=LOW_FLOORS)
    train(dags, "2013-01-15", "2013-02-11")
    run = deploy(dags)
    assert aliases(client, model_name) == {CHAMPION: "1", CHALLENGER: "2"}
    assert client.get_registered_model(model_name).tags[TAG_MODE] == "canary"
    assert any("beats_champion: passed" in label for label in labels(run, "gate")), labels(run, "gate")

    # 3. a deliberately worse candidate is refused, with its reason in MLflow and the ops store
    spec_variant("worse", training={"pipeline": "tests.helpers:weak_pipeline", "skops_trusted_types": []}, deployment=LOW_FLOORS)
    train(dags, "2013-01-22", "2013-02-18")
    run = deploy(dags)
    assert states(run)[("refuse", -1)] == "success" and states(run)[("deploy", -1)] == "skipped"
    assert aliases(client, model_name) == {CHAMPION: "1", CHALLENGER: "2"}  # nothing changed in serving
    tags = client.get_model_version(model_name, "3").tags
    assert tags["mlops.status"] == "refused" and "beats_champion" in tags["mlops.refused_by"]
    assert "does not" in tags["mlops.refusal"] or "vs champion" in tags["mlops.refusal"]
    refusal = [d for d in rt.store.list_decisions(model_name, "deployment") if d["outcome"] == "refused"]
    assert len(refusal) == 1 and refusal[0]["subject"] == "version 3"
    assert any(a["kind"] == "candidate_refused" for a in rt.store.list_alerts(model_name))

    # 4. a broken artifact is refused by the clean-process load gate
    spec_variant("normal2", deployment=LOW_FLOORS)
    train(dags, "2013-02-01", "2013-02-28")
    assert corrupt_model_files(mlflow_env["artifacts"], client, model_name, "4") >= 1
    run = deploy(dags, version="4")
    assert states(run)[("refuse", -1)] == "success"
    assert any(label.startswith("loads: FAILED") for label in labels(run, "gate")), labels(run, "gate")
    assert client.get_model_version(model_name, "4").tags["mlops.status"] == "refused"
    assert aliases(client, model_name) == {CHAMPION: "1", CHALLENGER: "2"}

    # every alias change is in the ledger, which agrees with MLflow
    ledger = [(r["alias"], r["from_version"], r["to_version"], r["strategy"]) for r in rt.store.list_ledger(model_name)]
    assert ledger == [(CHAMPION, None, "1", "direct"), (CHALLENGER, None, "2", "canary")]
    gates = rt.store.list_decisions(model_name, "gate")
    assert {d["subject"].split(" / ")[1] for d in gates} == set(GATES)
    assert all(d["reason_code"] for d in rt.store.list_decisions(model_name))
