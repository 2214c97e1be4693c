"""dag.test() of check_early_window and promote_or_rollback on a prepared inference log, against a
real MLflow registry and a temporary ops store."""

from __future__ import annotations

from pathlib import Path

import pytest

from include.mlops.adapters.registry import CHALLENGER, CHAMPION, aliases, mlflow_client, set_alias, set_challenger_mode
from tests.integration.loop_helpers import log_traffic

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="module")
def trained(mlflow_server, flights, spec):
    """Two real models logged once (a weak and a normal one), with their holdout predictions."""
    import mlflow
    import pandas as pd

    from include.mlops.domain.pipelines import build_pipeline
    from include.mlops.steps.training import pip_requirements

    mlflow.set_tracking_uri(mlflow_server["url"])
    mlflow.set_experiment("release-tests")
    train = flights[(flights["sched_dep"] >= "2013-01-01") & (flights["sched_dep"] < "2013-02-01")]
    hold = flights[(flights["sched_dep"] >= "2013-02-01") & (flights["sched_dep"] < "2013-02-08")]
    y = spec.target.derive(train["arr_delay"]).astype(int)
    out = {}
    for name, params in {"weak": {"max_iter": 3, "max_leaf_nodes": 3}, "normal": dict(spec.training.params)}.items():
        pipe = build_pipeline(spec.model_copy(update={"training": spec.training.model_copy(update={"params": params})}))
        pipe.fit(train[spec.feature_names], y)
        with mlflow.start_run(run_name=name) as run:
            scores = pipe.predict_proba(hold[spec.feature_names])[:, 1]
            preds = pd.DataFrame({"score": scores, "prediction": (scores >= 0.5).astype(int)})
            folder = Path(mlflow_server["artifacts"]).parent / f"{name}-reference"
            folder.mkdir(exist_ok=True)
            preds.to_parquet(folder / "holdout_predictions.parquet")
            mlflow.log_artifacts(str(folder), "reference")
            info = mlflow.sklearn.log_model(
                pipe, name="model", pip_requirements=pip_requirements(), skops_trusted_types=list(spec.training.skops_trusted_types)
            )
        out[name] = {"source": info.model_uri, "run_id": run.info.run_id}
    return out


def register(client, model_name, trained, *names):
    """New versions of ``model_name`` pointing at the models trained once for the module."""
    import mlflow

    return [str(mlflow.register_model(trained[n]["source"], model_name).version) for n in names]


def deploy_canary(rt, client, model_name, champion, challenger):
    set_alias(rt.store, client, model_name, CHAMPION, champion, strategy="direct", reason="first", actor="test", op_key=f"c{champion}")
    set_challenger_mode(client, model_name, "canary", 0.5)
    set_alias(
        rt.store, client, model_name, CHALLENGER, challenger, strategy="canary", reason="test", actor="test", op_key=f"ch{challenger}"
    )


def run_dag(dags, dag_id, **conf):
    """dag.test() with every param given (a run_conf key left out would keep the previous run's value)."""
    dag = dags.get_dag(dag_id)
    defaults = {"check_early_window": {"version": None}, "promote_or_rollback": {"action": "promote", "version": None, "reason": "test"}}
    run = dag.test(run_conf={**defaults[dag_id], **conf})
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_good_canary_passes_then_is_promoted_on_labels(
    airflow_db, ml_runtime, mlflow_env, model_name, flights, trained, dags, spec_variant
):
    spec_variant("ew", early_window={"min_requests": 100})
    rt = ml_runtime
    client = mlflow_client(mlflow_env["url"])
    v1, v2 = register(client, model_name, trained, "weak", "normal")
    deploy_canary(rt, client, model_name, v1, v2)
    log_traffic(rt, flights, model_name, [(v1, "champion"), (v2, "challenger")])

    run, states = run_dag(dags, "check_early_window", version=v2)
    assert run.state == "success" and states["passed"] == "success" and states["roll_back"] == "skipped", states
    (decision,) = rt.store.list_decisions(model_name, "early_window")
    assert decision["outcome"] == "passed" and decision["inputs"]["requests"] >= 100
    assert decision["report_uri"] and "<html" in Path(decision["report_uri"]).read_text()
    assert "score_psi_vs_holdout" in decision["inputs"]

    run, states = run_dag(dags, "promote_or_rollback", action="promote")
    assert states["promote"] == "success", states
    assert aliases(client, model_name) == {CHAMPION: v2}
    (promo,) = rt.store.list_decisions(model_name, "promotion")
    assert promo["reason_code"] == "wins_on_production_labels" and promo["inputs"]["realized"]["rows"] >= 300
    ledger = [(r["alias"], r["action"], r["from_version"], r["to_version"]) for r in rt.store.list_ledger(model_name)][-2:]
    assert ledger == [(CHAMPION, "promoted", v1, v2), (CHALLENGER, "promoted", v2, None)]
    assert client.get_model_version(model_name, v1).tags["mlops.status"] == "retired"

    # promoting again changes nothing
    run, states = run_dag(dags, "promote_or_rollback", action="promote", version=v2)
    assert states["no_change"] == "success"
    assert rt.store.list_decisions(model_name, "promotion")[-1]["reason_code"] == "already_champion"
    assert len(rt.store.list_ledger(model_name)) == 4

    # a manual rollback returns to the version that served before, once
    run, states = run_dag(dags, "promote_or_rollback", action="rollback", reason="test rollback")
    assert states["rollback"] == "success" and aliases(client, model_name) == {CHAMPION: v1}
    last = rt.store.list_ledger(model_name)[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("rolled_back", v2, v1)
    run, states = run_dag(dags, "promote_or_rollback", action="rollback")
    assert states["no_change"] == "success" and aliases(client, model_name) == {CHAMPION: v1}
    assert rt.store.list_decisions(model_name, "rollback")[-1]["reason_code"] == "already_rolled_back"


def test_failing_canary_is_rolled_back_by_the_early_window(
    airflow_db, ml_runtime, mlflow_env, model_name, flights, trained, dags, spec_variant
):
    spec_variant("ew", early_window={"min_requests": 100})
    rt = ml_runtime
    client = mlflow_client(mlflow_env["url"])
    v1, v2 = register(client, model_name, trained, "normal", "normal")
    deploy_canary(rt, client, model_name, v1, v2)
    log_traffic(rt, flights, model_name, [(v1, "champion"), (v2, "challenger")], errors_for=v2, error_share=0.3)

    run, states = run_dag(dags, "check_early_window", version=v2)
    assert states["roll_back"] == "success" and states["passed"] == "skipped", states
    assert aliases(client, model_name) == {CHAMPION: v1}  # the champion served throughout
    (decision,) = rt.store.list_decisions(model_name, "early_window")
    assert decision["outcome"] == "rollback" and any("error rate" in r for r in decision["reasons"])
    last = rt.store.list_ledger(model_name)[-1]
    assert (last["alias"], last["action"], last["from_version"], last["to_version"]) == (CHALLENGER, "rolled_back", v2, None)
    assert client.get_model_version(model_name, v2).tags["mlops.status"] == "rolled_back"
    assert any(a["kind"] == "early_window_breach" and a["severity"] == "critical" for a in rt.store.list_alerts(model_name))


def test_promotion_that_loses_on_labels_is_refused(airflow_db, ml_runtime, mlflow_env, model_name, flights, trained, dags):
    rt = ml_runtime
    client = mlflow_client(mlflow_env["url"])
    v1, v2 = register(client, model_name, trained, "normal", "weak")
    deploy_canary(rt, client, model_name, v1, v2)
    log_traffic(rt, flights, model_name, [(v1, "champion"), (v2, "challenger")])
    run, states = run_dag(dags, "promote_or_rollback", action="promote")
    assert states["no_change"] == "success", states
    d = rt.store.list_decisions(model_name, "promotion")[-1]
    assert (d["outcome"], d["reason_code"]) == ("refused", "loses_on_production_labels")
    assert aliases(client, model_name) == {CHAMPION: v1}  # the loser no longer takes traffic


def test_rollback_with_nothing_before_is_refused(airflow_db, ml_runtime, mlflow_env, model_name, trained, dags):
    rt = ml_runtime
    client = mlflow_client(mlflow_env["url"])
    (v1,) = register(client, model_name, trained, "normal")
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="test", op_key="only")
    run, states = run_dag(dags, "promote_or_rollback", action="rollback")
    assert states["no_change"] == "success"
    d = rt.store.list_decisions(model_name, "rollback")[-1]
    assert (d["outcome"], d["reason_code"]) == ("refused", "nothing_to_roll_back_to")
    assert aliases(client, model_name) == {CHAMPION: v1}
