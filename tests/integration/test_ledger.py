"""The deployment ledger against a real MLflow registry: alias changes and ledger rows agree, even
when a task fails between the two writes and is retried."""

from __future__ import annotations

import pytest

from include.mlops.adapters import registry
from include.mlops.adapters.registry import CHALLENGER, CHAMPION, aliases, previously_serving, reconcile, remove_alias, set_alias

pytestmark = pytest.mark.integration


@pytest.fixture
def versions(ml_runtime, mlflow_env, model_name):
    """Three registered versions of a tiny model (content does not matter to the ledger)."""
    import mlflow
    from sklearn.dummy import DummyClassifier

    client = registry.mlflow_client(mlflow_env["url"])
    out = []
    for _ in range(3):
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


def test_alias_changes_are_ledgered_and_mirrored(ml_runtime, versions, model_name):
    runtime = ml_runtime
    client, (v1, v2, v3) = versions
    set_alias(runtime.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="test", op_key="a")
    set_alias(runtime.store, client, model_name, CHALLENGER, v2, strategy="canary", reason="canary", actor="test", op_key="b")
    set_alias(runtime.store, client, model_name, CHAMPION, v2, strategy="promote", reason="won", actor="test", op_key="c")
    remove_alias(runtime.store, client, model_name, CHALLENGER, reason="promoted", actor="test", op_key="d")
    assert aliases(client, model_name) == {CHAMPION: v2}
    assert ledger_state(runtime.store, model_name) == {CHAMPION: v2}
    rows = runtime.store.list_ledger(model_name)
    assert [(r["alias"], r["from_version"], r["to_version"]) for r in rows] == [
        (CHAMPION, None, v1),
        (CHALLENGER, None, v2),
        (CHAMPION, v1, v2),
        (CHALLENGER, v2, None),
    ]
    assert previously_serving(runtime.store, model_name) == v1
    tags = client.get_model_version(model_name, v1).tags
    assert tags[registry.TAG_STATUS] == "retired"
    assert sum(1 for k in tags if k.startswith(registry.TAG_LEDGER_PREFIX)) == 2  # set as champion, replaced
    assert client.get_model_version(model_name, v2).tags[registry.TAG_STATUS] == CHAMPION


def test_same_op_key_twice_changes_nothing(ml_runtime, versions, model_name):
    runtime = ml_runtime
    client, (v1, *_) = versions
    for _ in range(2):
        set_alias(runtime.store, client, model_name, CHAMPION, v1, strategy="direct", reason="x", actor="t", op_key="same")
    assert len(runtime.store.list_ledger(model_name)) == 1


def test_failure_between_alias_and_ledger_then_retry_agrees(ml_runtime, versions, model_name, monkeypatch):
    runtime = ml_runtime
    client, (v1, v2, _) = versions
    set_alias(runtime.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="t", op_key="k1")
    real = runtime.store.append_ledger
    monkeypatch.setattr(runtime.store, "append_ledger", lambda **kw: (_ for _ in ()).throw(ConnectionError("ops store down")))
    with pytest.raises(ConnectionError):
        set_alias(runtime.store, client, model_name, CHAMPION, v2, strategy="direct", reason="second", actor="t", op_key="k2")
    assert aliases(client, model_name)[CHAMPION] == v2  # MLflow moved, the ledger has not yet
    monkeypatch.setattr(runtime.store, "append_ledger", real)
    row = set_alias(runtime.store, client, model_name, CHAMPION, v2, strategy="direct", reason="second", actor="t", op_key="k2")
    assert (row["from_version"], row["to_version"]) == (v1, v2)  # the ledger's previous holder, not MLflow's
    assert ledger_state(runtime.store, model_name) == aliases(client, model_name) == {CHAMPION: v2}
    assert len(runtime.store.list_ledger(model_name)) == 2
    assert previously_serving(runtime.store, model_name) == v1


def test_task_that_never_came_back_is_reconciled(ml_runtime, versions, model_name, monkeypatch):
    runtime = ml_runtime
    client, (v1, v2, _) = versions
    set_alias(runtime.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="t", op_key="r1")
    client.set_registered_model_alias(model_name, CHAMPION, v2)  # e.g. changed by hand in the MLflow UI
    fixed = reconcile(runtime.store, client, model_name)
    assert [(r["alias"], r["from_version"], r["to_version"], r["actor"]) for r in fixed] == [(CHAMPION, v1, v2, "reconcile")]
    assert reconcile(runtime.store, client, model_name) == []  # agreed now
    assert ledger_state(runtime.store, model_name) == aliases(client, model_name)


def test_previously_serving_comes_from_the_ledger_not_version_minus_one(ml_runtime, versions, model_name):
    runtime = ml_runtime
    client, (v1, v2, v3) = versions
    set_alias(runtime.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="t", op_key="p1")
    # v2 was refused and never served; v3 replaces v1 directly
    set_alias(runtime.store, client, model_name, CHAMPION, v3, strategy="direct", reason="v3", actor="t", op_key="p2")
    assert previously_serving(runtime.store, model_name) == v1 != str(int(v3) - 1)
