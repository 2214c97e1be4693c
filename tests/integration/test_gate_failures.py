"""Real refusals by the offline gates of deploy_validated_model (dag.test() against a real MLflow
registry and a temporary ops store), one gate at a time, on models that genuinely fail it:

* ``floors``: a sound candidate whose holdout ROC AUC is below the spec's floor;
* ``signature``: a model trained and logged when the feature set was different (one input fewer);
* ``probe``: a version whose artifact is not the model its training run scored the probe set with.

Each refusal leaves serving alone (aliases, ledger), is recorded with the gate's reason code (gate
decisions, the deployment decision, the version's tags, an alert) and emits ``candidate_refused``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from include.mlops.adapters.registry import CHAMPION, aliases, mlflow_client, set_alias
from include.mlops.domain.policy import GATES
from tests.integration.loop_candidates import WEAK, register, train_module_candidates

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="module")
def trained(mlflow_server, flights, tmp_path_factory):
    """A poor January model and a normal one, trained by the loop's training."""
    return train_module_candidates(
        mlflow_server,
        flights,
        tmp_path_factory,
        "gates_src",
        {"weak": (date(2013, 1, 1), date(2013, 1, 21), WEAK), "normal": (date(2013, 1, 1), date(2013, 1, 28), None)},
    )


@pytest.fixture
def with_champion(ml_runtime, mlflow_env, model_name, trained):
    """The poor model serving as champion of this test's model."""
    rt = ml_runtime
    client = mlflow_client(mlflow_env["url"])
    (v1,) = register(client, model_name, trained, "weak")
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="test", op_key="first")
    return client, v1


def deploy(dags, version: str):
    run = dags.get_dag("deploy_validated_model").test(run_conf={"version": version, "strategy": None, "require_approval": None})
    assert run.state == "success"
    return run, {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}


def gate_decisions(rt, model_name: str, version: str) -> dict[str, dict[str, Any]]:
    found = {d["subject"].split(" / ")[1]: d for d in rt.store.list_decisions(model_name, "gate") if d["version"] == int(version)}
    assert set(found) == set(GATES), found
    return found


def refused_event(run) -> dict[str, Any]:
    """The extra of the ``candidate_refused`` asset event the run emitted (Airflow's metadata DB)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "candidate_refused", AssetEvent.source_run_id == run.run_id)
        ).all()
        assert len(events) == 1, events
        return dict(events[0].extra)


def assert_refused(rt, client, run, st, model_name, version, champion, gate, code, ledger_before):
    """Nothing changed in serving; the refusal is recorded everywhere with ``gate``'s reason ``code``."""
    assert st[("refuse", -1)] == "success" and st[("deploy", -1)] == "skipped", st
    assert aliases(client, model_name) == {CHAMPION: champion}
    assert rt.store.list_ledger(model_name) == ledger_before
    (refusal,) = rt.store.list_decisions(model_name, "deployment")
    assert (refusal["outcome"], refusal["reason_code"], refusal["version"]) == ("refused", code, int(version)), refusal
    assert gate in refusal["inputs"]["failed_gates"]
    tags = client.get_model_version(model_name, version).tags
    assert tags["mlops.status"] == "refused" and gate in tags["mlops.refused_by"].split(",")
    (alert,) = [a for a in rt.store.list_alerts(model_name) if a["kind"] == "candidate_refused"]
    assert alert["payload"]["version"] == version and gate in alert["payload"]["failed_gates"]
    event = refused_event(run)
    assert event["version"] == version and gate in event["failed_gates"]
    return refusal


def test_a_candidate_below_the_floor_is_refused(airflow_db, with_champion, mlflow_env, model_name, trained, dags, spec_variant):
    """A sound candidate (it loads, has the spec's signature, beats the champion, is consistent on the
    probe set) whose holdout ROC AUC is below the spec's floor: refused by ``floors`` alone."""
    from include.mlops.runtime import load_runtime

    spec_variant("high-floor", deployment={"floors": {"roc_auc": 0.9}})
    rt = load_runtime()
    client, v1 = with_champion
    (v2,) = register(client, model_name, trained, "normal")
    before = rt.store.list_ledger(model_name)

    run, st = deploy(dags, v2)
    gates = gate_decisions(rt, model_name, v2)
    assert {g: d["outcome"] for g, d in gates.items()} == {g: "failed" if g == "floors" else "passed" for g in GATES}, gates
    floors = gates["floors"]
    assert floors["reason_code"] == "below_metric_floor" and floors["inputs"]["floors"] == {"roc_auc": 0.9}
    observed = floors["inputs"]["observed"]["roc_auc"]
    assert 0.55 < observed < 0.9 and observed == pytest.approx(trained["normal"]["metrics"]["roc_auc"], abs=1e-5)
    assert floors["reasons"] == [f"roc_auc {observed:.4f} < floor 0.9"]
    refusal = assert_refused(rt, client, run, st, model_name, v2, v1, "floors", "below_metric_floor", before)
    assert refusal["inputs"]["failed_gates"] == ["floors"]


def test_a_model_logged_with_another_feature_set_is_refused_at_the_signature_gate(
    airflow_db, with_champion, mlflow_env, model_name, flights, dags
):
    """A model trained and logged when the feature set had no ``visib``: its input signature lacks a
    feature the spec (and the serving API's request schema) has, so it could not score requests."""
    import mlflow
    from mlflow.models import infer_signature

    from include.mlops.adapters.model_artifacts import register_sklearn_model
    from include.mlops.domain.pipelines import build_pipeline, trusted_types
    from include.mlops.runtime import load_runtime

    rt = load_runtime()
    client, v1 = with_champion
    before = rt.store.list_ledger(model_name)
    older = rt.spec.model_copy(update={"features": [f for f in rt.spec.features if f.name != "visib"]})
    rows = flights[(flights["sched_dep"] >= "2013-01-01") & (flights["sched_dep"] < "2013-01-15")]
    x, y = rows[older.feature_names], older.target.derive(rows["arr_delay"]).astype(int)
    pipe = build_pipeline(older).fit(x, y)
    mlflow.set_experiment(f"signature-{model_name}")
    with mlflow.start_run(run_name="older feature set"):
        v2 = register_sklearn_model(
            rt.store,
            pipe,
            model_name,
            trusted_types(rt.spec),
            signature=infer_signature(x.head(500), pipe.predict(x.head(500))),
            input_example=x.head(3),
            pip_requirements=["scikit-learn"],
            recorded_by="tests",
        )

    run, st = deploy(dags, v2)
    gates = gate_decisions(rt, model_name, v2)
    sig = gates["signature"]
    assert (sig["outcome"], sig["reason_code"]) == ("failed", "signature_mismatch"), sig
    assert sig["reasons"] == ["missing inputs ['visib']"] and "visib" not in sig["inputs"]["signature"]
    assert len(sig["inputs"]["signature"]) == len(rt.spec.feature_names) - 1
    assert gates["loads"]["outcome"] == "passed"  # a well-formed artifact: only its interface is wrong
    assert_refused(rt, client, run, st, model_name, v2, v1, "signature", "signature_mismatch", before)


def test_a_version_whose_artifact_is_not_the_trained_model_is_refused_at_the_probe_gate(
    airflow_db, with_champion, mlflow_env, model_name, trained, dags, spec_variant
):
    """A version registered against the normal model's training run (its holdout, the probe scores
    recorded at training) but pointing at another model's artifact: it loads, has the right
    signature, clears the floors and ties the champion, and its probe scores are not those its
    training run recorded (``probe_skew``)."""
    from include.mlops.adapters.model_artifacts import record_model_digest
    from include.mlops.domain.pipelines import trusted_types
    from include.mlops.runtime import load_runtime

    spec_variant("low-floor", deployment={"floors": {"roc_auc": 0.5}})
    rt = load_runtime()
    client, v1 = with_champion
    before = rt.store.list_ledger(model_name)
    weak, normal = trained["weak"], trained["normal"]
    model_id = weak["source"].rsplit("/", 1)[-1]  # models:/m-<id>: the weak model's artifact
    mv = client.create_model_version(model_name, source=weak["source"], run_id=normal["run_id"], model_id=model_id)
    v2 = str(mv.version)
    assert client.get_model_version(model_name, v2).run_id == normal["run_id"]
    record_model_digest(rt.store, client, model_name, v2, trusted_types(rt.spec), recorded_by="tests")

    run, st = deploy(dags, v2)
    gates = gate_decisions(rt, model_name, v2)
    assert {g: d["outcome"] for g, d in gates.items()} == {g: "failed" if g == "probe" else "passed" for g in GATES}, gates
    probe = gates["probe"]
    assert probe["reason_code"] == "probe_skew" and probe["inputs"]["max_diff_vs_training"] > 0.01, probe
    assert probe["inputs"]["rows"] == rt.spec.deployment.probe_rows
    refusal = assert_refused(rt, client, run, st, model_name, v2, v1, "probe", "probe_skew", before)
    assert refusal["inputs"]["failed_gates"] == ["probe"]
