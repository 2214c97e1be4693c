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
    """New versions of ``model_name`` pointing at the models trained once for the module, each with
    its sha256 recorded in the ops store as the loop's training does (loads check it)."""
    import mlflow

    from include.mlops.adapters.model_artifacts import record_model_digest
    from include.mlops.runtime import load_runtime

    rt = load_runtime()
    versions = [str(mlflow.register_model(trained[n]["source"], model_name).version) for n in names]
    for v in versions:
        record_model_digest(rt.store, client, model_name, v, list(rt.spec.training.skops_trusted_types), recorded_by="tests")
    return versions


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


def test_an_automatic_promotion_waits_for_the_release_labels(ml_runtime, mlflow_env, model_name, flights, trained, spec_variant):
    """promote_or_rollback's await_labels on the real store: an early-window promotion waits until
    promotion.min_labelled_rows of the release's requests are labelled (labels come a day late), or
    a monitoring window of traffic has gone by without them (event days, or wall time); with a
    paired test it waits for the labels, two windows of wall time at most; a run by hand never waits."""
    import dataclasses
    from datetime import date, timedelta

    from sqlalchemy import update

    from include.mlops.adapters.store import deployment_ledger
    from include.mlops.domain.policy import FinalRequest
    from include.mlops.runtime import load_runtime
    from include.mlops.steps.release import await_labels, find_release

    rt = ml_runtime
    client = mlflow_client(mlflow_env["url"])
    v1, v2 = register(client, model_name, trained, "weak", "normal")
    deploy_canary(rt, client, model_name, v1, v2)
    auto = FinalRequest("promote", v2, "early window passed", triggered=True)
    routes = [(v1, "champion"), (v2, "challenger")]
    log_traffic(rt, flights, model_name, routes, day=date(2013, 2, 10), labels=False)
    done, info = await_labels(rt, auto)
    assert not done and info["labelled_rows"] == 0 and info["traffic_days"] == 1 and info["window_days"] == 7, info
    assert await_labels(rt, FinalRequest("promote", v2, "by hand"))[0]  # a person's promotion goes on at once
    assert await_labels(rt, FinalRequest("rollback", None, "by hand", triggered=True))[0]

    for day in range(11, 17):
        log_traffic(rt, flights, model_name, routes, day=date(2013, 2, day), labels=False)
    done, info = await_labels(rt, auto)  # seven days of traffic and still no label: the early window decides
    assert done and info["labelled_rows"] == 0 and info["traffic_days"] == 7 and info["waited_out"], info
    spec_variant("await-test", promotion={"test": "delong"})
    tested = load_runtime()
    assert tested.spec.promotion.test == "delong" and tested.model_name == model_name
    done, info = await_labels(tested, auto)
    assert not done and not info["gave_up"], info  # a paired test needs the labels

    log_traffic(rt, flights, model_name, routes, day=date(2013, 2, 17))
    done, info = await_labels(tested, auto)
    assert done and info["labelled_rows"] >= 300 and not info["gave_up"], info

    # two windows of wall time since the deployment and still too few labels: a test gives up waiting
    rel = find_release(rt, v2)
    with rt.store.begin() as conn:
        since = rel.since_dt - timedelta(days=15)
        conn.execute(update(deployment_ledger).where(deployment_ledger.c.id == rel.ledger_id).values(created_at=since))
    promotion = tested.spec.promotion.model_copy(update={"min_labelled_rows": 10**6})
    strict = dataclasses.replace(tested, spec=tested.spec.model_copy(update={"promotion": promotion}))
    done, info = await_labels(strict, auto)
    assert done and info["gave_up"] and info["labelled_rows"] < 10**6, info


# -- issue 16: promotion on a significant gain, and the bake period --------------------------------
def test_promotion_needs_a_significant_gain_with_a_test(
    airflow_db, ml_runtime, mlflow_env, model_name, flights, trained, dags, spec_variant
):
    """promotion.test delong: both versions score the canary's labelled requests (registry
    artifacts); a real gain promotes, a tie (the same model twice) is refused and the challenger removed."""
    from datetime import date

    spec_variant("sig", promotion={"test": "delong", "alpha": 0.05})
    rt = ml_runtime
    client = mlflow_client(mlflow_env["url"])
    v1, v2, v3 = register(client, model_name, trained, "weak", "normal", "normal")
    deploy_canary(rt, client, model_name, v1, v2)
    log_traffic(rt, flights, model_name, [(v1, "champion"), (v2, "challenger")])
    run, states = run_dag(dags, "promote_or_rollback", action="promote")
    assert states["promote"] == "success" and states["bake"] == "skipped", states  # bake_days 0: no bake
    d = rt.store.list_decisions(model_name, "promotion")[-1]
    assert (d["outcome"], d["reason_code"]) == ("promote", "significant_gain"), d
    test = d["inputs"]["test"]
    assert test["method"] == "delong" and test["significant"] and test["rows"] >= 300 and test["ci_low"] > 0
    assert aliases(client, model_name) == {CHAMPION: v2}

    # the same model again as challenger: a tie on the same rows is not a gain
    set_challenger_mode(client, model_name, "canary", 0.5)
    set_alias(rt.store, client, model_name, CHALLENGER, v3, strategy="canary", reason="test", actor="test", op_key=f"ch{v3}")
    log_traffic(rt, flights, model_name, [(v2, "champion"), (v3, "challenger")], day=date(2013, 2, 11))
    run, states = run_dag(dags, "promote_or_rollback", action="promote")
    assert states["no_change"] == "success", states
    d = rt.store.list_decisions(model_name, "promotion")[-1]
    assert (d["outcome"], d["reason_code"]) == ("refused", "gain_not_significant"), d
    assert d["inputs"]["test"]["reason"] == "no_gain" and d["inputs"]["test"]["difference"] == 0
    assert aliases(client, model_name) == {CHAMPION: v2}  # the tied challenger no longer takes traffic


def test_bake_period_keeps_the_previous_champion_in_shadow_then_judges(
    airflow_db, ml_runtime, mlflow_env, model_name, flights, trained, spec_variant
):
    """A promotion with bake_days leaves the previous champion as a shadow challenger; when the labels
    cover the period, a new champion significantly worse than it is rolled back (decision, alert,
    ledger), and a better one keeps serving with the shadow removed."""
    from datetime import date, timedelta

    from include.mlops.domain.policy import Verdict
    from include.mlops.runtime import load_runtime
    from include.mlops.steps.bake import act_bake, bake_verdict
    from include.mlops.steps.release import act_final

    spec_variant("bake", promotion={"test": "delong", "bake_days": 1})
    rt = load_runtime()  # with the variant spec (ml_runtime was loaded before it)
    client = mlflow_client(mlflow_env["url"])
    v1, v2 = register(client, model_name, trained, "normal", "weak")
    deploy_canary(rt, client, model_name, v1, v2)
    # promoted by hand (a person's verdict), so the weaker version serves as champion
    inputs = {"action": "promote", "requested_version": None, "champion": v1, "challenger": v2}
    out = act_final(rt, Verdict("promote", "requested", ["test"]), inputs, "test", dag_id=None, run_id="bake-test")
    assert aliases(client, model_name) == {CHAMPION: v2, CHALLENGER: v1}  # the old champion in shadow
    assert client.get_registered_model(model_name).tags["mlops.challenger_mode"] == "shadow"
    bake = out["bake"]
    assert (bake["promoted"], bake["previous"], bake["days"]) == (v2, v1, 1)

    # days where the normal model ranks better than the weak one (on 2013-02-11 it happens not to)
    log_traffic(rt, flights, model_name, [(v2, "champion")], day=date(2013, 2, 12))
    verdict, found = bake_verdict(rt, bake)
    assert (verdict.outcome, verdict.reason_code) == ("wait", "baking"), verdict  # one day's labels cover < 24 h
    log_traffic(rt, flights, model_name, [(v2, "champion")], day=date(2013, 2, 13))
    verdict, found = bake_verdict(rt, bake)
    assert (verdict.outcome, verdict.reason_code) == ("rollback", "worse_than_previous_champion"), verdict
    assert (
        verdict.details["to"] == v1
        and found["labelled_rows"] >= 300
        and verdict.details["test"]["challenger"] > verdict.details["test"]["champion"]
    )

    result = act_bake(rt, verdict, found, dag_id=None, run_id="bake-test")
    assert result["version"] == v1 and aliases(client, model_name) == {CHAMPION: v1}
    d = rt.store.list_decisions(model_name, "bake")[-1]
    assert (d["outcome"], d["reason_code"]) == ("rollback", "worse_than_previous_champion")
    assert any(a["kind"] == "model_rolled_back" and a["severity"] == "critical" for a in rt.store.list_alerts(model_name))
    ledger = [(r["alias"], r["action"], r["from_version"], r["to_version"]) for r in rt.store.list_ledger(model_name)][-2:]
    assert ledger == [(CHAMPION, "rolled_back", v2, v1), (CHALLENGER, "rolled_back", v1, None)]

    # a bake that passes: the better version promoted over the weaker one keeps serving, the shadow goes
    set_challenger_mode(client, model_name, "canary", 0.5)
    set_alias(rt.store, client, model_name, CHAMPION, v2, strategy="direct", reason="t", actor="test", op_key="back-to-weak")
    set_alias(rt.store, client, model_name, CHALLENGER, v1, strategy="canary", reason="t", actor="test", op_key="normal-again")
    inputs = {"action": "promote", "requested_version": None, "champion": v2, "challenger": v1}
    out = act_final(rt, Verdict("promote", "requested", ["test"]), inputs, "test", dag_id=None, run_id="bake-test-2")
    since = out["bake"]["since"]
    log_traffic(rt, flights, model_name, [(v1, "champion")], day=date(2013, 2, 14))
    log_traffic(rt, flights, model_name, [(v1, "champion")], day=date(2013, 2, 15))
    verdict, found = bake_verdict(rt, {**out["bake"], "since": since})
    assert (verdict.outcome, verdict.reason_code) == ("end", "bake_passed"), verdict
    act_bake(rt, verdict, found, dag_id=None, run_id="bake-test-2")
    assert aliases(client, model_name) == {CHAMPION: v1}
    assert timedelta(days=1) <= timedelta(hours=verdict.details["covered_hours"])
