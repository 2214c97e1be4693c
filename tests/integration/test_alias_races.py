"""Alias changes are serialized (the ops store's per-model lock) and compare-and-set: two changes
decided on the same state race, exactly one wins and the other is refused with ``state_changed``;
the ledger always agrees with MLflow; a promotion decided on aliases that moved since does nothing
and says so (issue 17, item 5). On SQLite and, with MLOPS_TEST_BACKEND=postgres, on PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from include.mlops.adapters import registry
from include.mlops.adapters.registry import CHALLENGER, CHAMPION, AliasConflict, aliases, remove_alias, set_alias
from include.mlops.domain.policy import Verdict

pytestmark = pytest.mark.integration


@pytest.fixture
def versions(ml_runtime, mlflow_env, model_name):
    """Four registered versions of a tiny model (the ledger never loads them)."""
    import mlflow
    from sklearn.dummy import DummyClassifier

    client = registry.mlflow_client(mlflow_env["url"])
    mlflow.set_experiment(f"races-{model_name}")
    out = []
    for _ in range(4):
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                DummyClassifier().fit([[0], [1]], [0, 1]), name="model", registered_model_name=model_name, pip_requirements=["scikit-learn"]
            )
        out.append(str(info.registered_model_version))
    return client, out


def ledger_state(store, model):
    state = {}
    for row in store.list_ledger(model):
        state[row["alias"]] = row["to_version"]
    return {k: v for k, v in state.items() if v is not None}


def race(*changes):
    """Run the changes at the same moment on threads; returns each one's result or exception."""
    barrier = threading.Barrier(len(changes))
    out: list = [None] * len(changes)

    def run(i, change):
        barrier.wait()
        try:
            out[i] = change()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(changes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_two_deployments_decided_on_the_same_state_one_wins(ml_runtime, versions, model_name):
    rt = ml_runtime
    client, (v1, v2, v3, _) = versions
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="t", op_key="first")

    def deploy(version):
        return lambda: set_alias(
            rt.store, client, model_name, CHALLENGER, version, strategy="canary", reason="r", actor=f"run-{version}",
            op_key=f"deploy-{version}", expected=None,
        )  # fmt: skip

    results = race(deploy(v2), deploy(v3))
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], AliasConflict) and lost[0].reason_code == "state_changed", lost[0]
    assert aliases(client, model_name) == {CHAMPION: v1, CHALLENGER: won[0]["to_version"]}
    assert ledger_state(rt.store, model_name) == aliases(client, model_name)
    assert rt.store.alias_lock_holder(model_name) is None  # released by both


def test_many_concurrent_champion_moves_keep_ledger_and_mlflow_equal(ml_runtime, versions, model_name):
    """Unconditional changes (no ``expected``) still go one at a time: every one is ledgered with the
    holder it really replaced, and the ledger's last holder is MLflow's."""
    rt = ml_runtime
    client, vs = versions
    changes = [
        (lambda v=v, i=i: set_alias(rt.store, client, model_name, CHAMPION, v, strategy="direct", reason="r", actor="t", op_key=f"k{i}"))
        for i, v in enumerate(vs * 2)
    ]
    results = race(*changes)
    assert all(isinstance(r, dict) for r in results), results
    rows = rt.store.list_ledger(model_name, CHAMPION)
    assert len(rows) == len(changes)
    assert all(b["from_version"] == a["to_version"] for a, b in zip(rows, rows[1:], strict=False))  # a chain: nothing lost
    assert ledger_state(rt.store, model_name) == aliases(client, model_name)


def test_remove_alias_removes_only_the_holder_it_was_told_to(ml_runtime, versions, model_name):
    rt = ml_runtime
    client, (v1, v2, v3, _) = versions
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="t", op_key="a")
    set_alias(rt.store, client, model_name, CHALLENGER, v2, strategy="canary", reason="canary", actor="t", op_key="b")
    set_alias(rt.store, client, model_name, CHALLENGER, v3, strategy="canary", reason="replaced", actor="t", op_key="c")
    with pytest.raises(AliasConflict) as refused:  # a rollback decided for v2 arrives late
        remove_alias(rt.store, client, model_name, CHALLENGER, reason="v2 breached", actor="t", op_key="d", expected=v2)
    assert refused.value.reason_code == "state_changed"
    assert aliases(client, model_name)[CHALLENGER] == v3
    assert remove_alias(rt.store, client, model_name, CHALLENGER, reason="v3", actor="t", op_key="e", expected=v3) is not None
    assert aliases(client, model_name) == {CHAMPION: v1} == ledger_state(rt.store, model_name)


def test_a_stale_promotion_is_refused_and_recorded(ml_runtime, versions, model_name):
    from include.mlops.steps.release import act_final

    rt = ml_runtime
    client, (v1, v2, v3, _) = versions
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="t", op_key="a")
    set_alias(rt.store, client, model_name, CHALLENGER, v2, strategy="canary", reason="canary", actor="t", op_key="b")
    inputs = {"action": "promote", "requested_version": None, "champion": v1, "challenger": v2}  # what decide_final saw
    verdict = Verdict("promote", "challenger_wins", [f"v{v2} wins"])
    # between the decision and the act, the challenger is replaced
    remove_alias(rt.store, client, model_name, CHALLENGER, reason="rolled back", actor="other", op_key="c", expected=v2)
    set_alias(rt.store, client, model_name, CHALLENGER, v3, strategy="canary", reason="next", actor="other", op_key="d", expected=None)
    before = rt.store.list_ledger(model_name)

    result = act_final(rt, verdict, inputs, "test", dag_id="promote_or_rollback", run_id="stale-run")
    assert result["outcome"] == "refused" and result["reason_code"] == "state_changed", result
    assert aliases(client, model_name) == {CHAMPION: v1, CHALLENGER: v3}  # v3 was never promoted
    assert rt.store.list_ledger(model_name) == before
    [decision] = rt.store.list_decisions(model_name, "promotion")
    assert decision["reason_code"] == "state_changed" and "challenger is v" in decision["reasons"][0]


def test_a_fresh_promotion_still_goes_through_and_a_retry_is_idempotent(ml_runtime, versions, model_name, spec_variant):
    from include.mlops.runtime import load_runtime
    from include.mlops.steps.release import act_final

    spec_variant("nobake", promotion={"bake_days": 0})
    rt = load_runtime()
    client, (v1, v2, _, _) = versions
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="t", op_key="a")
    set_alias(rt.store, client, model_name, CHALLENGER, v2, strategy="canary", reason="canary", actor="t", op_key="b")
    inputs = {"action": "promote", "requested_version": None, "champion": v1, "challenger": v2}
    verdict = Verdict("promote", "challenger_wins", [f"v{v2} wins"])
    first = act_final(rt, verdict, inputs, "test", dag_id="promote_or_rollback", run_id="run-1")
    assert first["outcome"] == "promote" and aliases(client, model_name) == {CHAMPION: v2}
    again = act_final(rt, verdict, inputs, "test", dag_id="promote_or_rollback", run_id="run-1")  # a retried task
    assert again["outcome"] == "promote" and aliases(client, model_name) == {CHAMPION: v2} == ledger_state(rt.store, model_name)


def test_a_deployment_decided_before_the_aliases_moved_changes_nothing(ml_runtime, versions, model_name):
    from include.mlops.steps.deploy import Candidate, deploy

    rt = ml_runtime
    client, (v1, v2, v3, _) = versions
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="t", op_key="a")
    candidate = Candidate(model_name, v3, "run", champion=v1, challenger=None)  # resolved and gated on this state
    set_alias(rt.store, client, model_name, CHALLENGER, v2, strategy="canary", reason="other", actor="other", op_key="b", expected=None)
    out = deploy(rt, candidate, "canary", "validated", "deploy_validated_model", "late-run")
    assert out["refused"] and out["reason_code"] == "state_changed", out
    assert aliases(client, model_name) == {CHAMPION: v1, CHALLENGER: v2}
    [decision] = rt.store.list_decisions(model_name, "deployment")
    assert decision["outcome"] == "refused" and decision["reason_code"] == "state_changed"


def test_the_lock_is_exclusive_expires_and_is_reentrant(ml_runtime, model_name):
    store = ml_runtime.store
    assert store.try_alias_lock(model_name, "a", 60)
    assert not store.try_alias_lock(model_name, "b", 60)
    assert store.try_alias_lock(model_name, "a", 60)  # the holder renews
    assert not store.release_alias_lock(model_name, "b")
    assert store.release_alias_lock(model_name, "a")
    assert store.try_alias_lock(model_name, "b", -1)  # an already-expired lease: anyone may take it
    assert store.try_alias_lock(model_name, "c", 60)
    store.release_alias_lock(model_name, "c")
    with registry.alias_lock(store, model_name), registry.alias_lock(store, model_name):  # re-entrant in one thread
        holder = store.alias_lock_holder(model_name)
        assert holder is not None
        assert race(lambda: store.try_alias_lock(model_name, "other", 60)) == [False]
    assert store.alias_lock_holder(model_name) is None
    store.try_alias_lock(model_name, "stuck", 60)
    with pytest.raises(AliasConflict) as busy, registry.alias_lock(store, model_name, wait=0.5):
        pass
    assert busy.value.reason_code == "alias_busy" and "stuck" in str(busy.value)
