"""A model registered straight into MLflow (not by the loop's training) as a pickle that runs code
when loaded: the deploy gate refuses it with a decision and leaves the aliases alone, serving keeps
its last good model and says why in /health, and nothing in the pickle ever runs (issue 17, item 1)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest

from include.mlops.adapters.registry import CHAMPION, aliases, mlflow_client, set_alias

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Boobytrap:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('executed')",))


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


def register_hostile(client, model_name: str, spec, fitted, x, folder: Path, marker: Path) -> str:
    """What anyone with access to the (unauthenticated) MLflow can do: log a model directory whose
    MLmodel says pickle and whose model.pkl runs code, and register it as a new version."""
    import mlflow
    import mlflow.sklearn

    local = folder / "hostile-model"
    mlflow.sklearn.save_model(fitted, str(local), serialization_format="pickle", input_example=x.head(2))
    (local / "model.pkl").write_bytes(pickle.dumps(Boobytrap(marker)))
    with mlflow.start_run(run_name="not the loop") as run:
        mlflow.log_artifacts(str(local), "model")
    version = client.create_model_version(model_name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version
    return str(version)


@pytest.fixture
def champion_and_hostile(ml_runtime, mlflow_env, model_name, tmp_path):
    import mlflow

    from include.mlops.adapters.model_artifacts import register_sklearn_model
    from tests.integration.serving_fixtures import train_tiny

    rt = ml_runtime
    client = mlflow_client(mlflow_env["url"])
    model, x = train_tiny(rt.spec, rows=400, max_iter=10)
    mlflow.set_experiment(f"trust-{model_name}")
    with mlflow.start_run(run_name="good"):
        good = register_sklearn_model(
            rt.store,
            model,
            model_name,
            list(rt.spec.training.skops_trusted_types),
            input_example=x.head(2),
            pip_requirements=["scikit-learn"],
        )
    set_alias(rt.store, client, model_name, CHAMPION, good, strategy="direct", reason="first", actor="test", op_key="first")
    marker = tmp_path / "executed.txt"
    hostile = register_hostile(client, model_name, rt.spec, model, x, tmp_path, marker)
    return rt, client, good, hostile, marker


def test_the_deploy_gate_refuses_a_pickle_registered_outside_the_loop(airflow_db, champion_and_hostile, model_name, dags):
    rt, client, good, hostile, marker = champion_and_hostile
    before = rt.store.list_ledger(model_name)
    run = dags.get_dag("deploy_validated_model").test(run_conf={"version": hostile})
    assert run.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("refuse", -1)] == "success" and states[("deploy", -1)] == "skipped", states
    loads = [ti.rendered_map_index or "" for ti in run.get_task_instances() if ti.task_id == "gate"]
    assert any(label.startswith("loads: FAILED") and "not_skops" in label for label in loads), loads

    assert aliases(client, model_name) == {CHAMPION: good}  # nothing changed in serving
    assert rt.store.list_ledger(model_name) == before
    tags = client.get_model_version(model_name, hostile).tags
    assert tags["mlops.status"] == "refused" and "loads" in tags["mlops.refused_by"]
    refusal = [d for d in rt.store.list_decisions(model_name, "deployment") if d["outcome"] == "refused"]
    assert len(refusal) == 1 and refusal[0]["reason_code"] == "not_skops" and refusal[0]["version"] == int(hostile)
    gate_codes = {d["subject"].split(" / ")[1]: d["reason_code"] for d in rt.store.list_decisions(model_name, "gate")}
    assert gate_codes["loads"] == "not_skops" and gate_codes["probe"] == "not_skops" and gate_codes["floors"] == "not_skops"
    assert not marker.exists(), "the hostile pickle ran"


def test_serving_keeps_its_model_and_says_why_when_the_champion_is_a_pickle(champion_and_hostile, mlflow_env, model_name, tmp_path):
    from include.mlops.adapters.registry import set_alias as move
    from tests.integration.serving_fixtures import MlflowServer, Process, start_serving

    rt, client, good, hostile, marker = champion_and_hostile
    server = MlflowServer(
        Process("mlflow", None, tmp_path / "unused.log"),  # type: ignore[arg-type]
        mlflow_env["url"],
        Path(mlflow_env["artifacts"]),
        ops_db=rt.settings.ops_db_url,
    )
    serving = start_serving(tmp_path / "serving", server, model_name, {"MLOPS_OPS_DB_URL": rt.settings.ops_db_url})
    try:
        serving.wait_serving(good)
        # someone points the champion alias at the hostile version by hand
        move(rt.store, client, model_name, CHAMPION, hostile, strategy="direct", reason="by hand", actor="someone", op_key="by-hand")
        deadline = time.monotonic() + 60
        health = serving.health()
        while time.monotonic() < deadline and not health["load_errors"]:
            time.sleep(0.3)
            health = serving.health()
        assert health["serving"]["champion"] == good and health["registry"]["champion"] == hostile
        [error] = health["load_errors"]
        assert error["version"] == hostile and "UntrustedModelError" in error["error"] and "not_skops" in error["error"], error
        assert health["ready"]  # still answering with the last good model
    finally:
        serving.process.stop()
    assert not marker.exists(), "the hostile pickle ran in the serving API"
