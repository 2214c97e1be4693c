"""Fault: the MLflow server goes down during a deployment's alias change.

A real MLflow server of the test's own is stopped at two points of ``set_alias`` (the one write
path every deployment, promotion and rollback goes through): before the alias moves, and right
after it moved but before the ledger's mirror tags are written. Each time the call fails with an
error that names the server, the ledger and MLflow's aliases do not disagree in a way a retry
cannot settle, and once the server is back, the retry (same operation key, as Airflow's task retry
sends) leaves them agreeing, with one ledger row per change.
"""

from __future__ import annotations

import time

import pytest
from mlflow.exceptions import MlflowException

from include.mlops.adapters import registry
from include.mlops.adapters.registry import CHAMPION, aliases, previously_serving, set_alias
from tests.integration.serving_fixtures import MlflowServer, start_mlflow

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path):
    srv = start_mlflow(tmp_path / "mlflow")
    holder = {"server": srv}
    yield holder
    holder["server"].process.stop()


@pytest.fixture
def setup(server, state, model_name, monkeypatch):
    import mlflow
    from sklearn.dummy import DummyClassifier

    from include.mlops.runtime import load_runtime

    srv: MlflowServer = server["server"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # a down server fails the call in seconds
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    mlflow.set_tracking_uri(srv.uri)
    mlflow.set_registry_uri(srv.uri)
    mlflow.set_experiment(f"fault-{model_name}")  # this server's own: not the experiment an earlier test made active
    versions = []
    for _ in range(2):
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                DummyClassifier().fit([[0], [1]], [0, 1]), name="model", registered_model_name=model_name, pip_requirements=["scikit-learn"]
            )
        versions.append(str(info.registered_model_version))
    rt = load_runtime()
    client = registry.mlflow_client(srv.uri)
    set_alias(rt.store, client, model_name, CHAMPION, versions[0], strategy="direct", reason="first", actor="test", op_key="first")
    return rt, client, versions


def ledger_champion(store, model):
    rows = [r for r in store.list_ledger(model) if r["alias"] == CHAMPION]
    return rows[-1]["to_version"] if rows else None


def deploy(rt, client, model, version):
    return set_alias(
        rt.store, client, model, CHAMPION, version, strategy="direct", reason="better", actor="deploy_validated_model", op_key="deploy-v2"
    )


def test_mlflow_down_before_the_alias_moves(setup, server, model_name):
    rt, client, (v1, v2) = setup
    srv: MlflowServer = server["server"]
    srv.process.stop()
    started = time.monotonic()
    with pytest.raises(MlflowException) as failed:
        deploy(rt, client, model_name, v2)
    assert time.monotonic() - started < 120  # fails within the task's time, Airflow retries it
    assert srv.uri.split("//")[1] in str(failed.value)  # the error names the server it could not reach
    assert ledger_champion(rt.store, model_name) == v1 and len(rt.store.list_ledger(model_name)) == 1

    server["server"] = srv.restart()
    client = registry.mlflow_client(server["server"].uri)
    assert aliases(client, model_name) == {CHAMPION: v1}  # nothing moved while it was down
    deploy(rt, client, model_name, v2)
    assert aliases(client, model_name) == {CHAMPION: v2} and ledger_champion(rt.store, model_name) == v2
    assert len(rt.store.list_ledger(model_name)) == 2
    assert previously_serving(rt.store, model_name) == v1


def test_mlflow_down_right_after_the_alias_moved(setup, server, model_name, monkeypatch):
    rt, client, (v1, v2) = setup
    srv: MlflowServer = server["server"]
    real = client.set_registered_model_alias

    def move_then_die(*args, **kwargs):
        real(*args, **kwargs)
        srv.process.stop()

    monkeypatch.setattr(client, "set_registered_model_alias", move_then_die)
    with pytest.raises(MlflowException):
        deploy(rt, client, model_name, v2)  # the mirror tags cannot be written
    assert ledger_champion(rt.store, model_name) == v2  # the ledger recorded the move MLflow made

    server["server"] = srv.restart()
    client = registry.mlflow_client(server["server"].uri)
    row = deploy(rt, client, model_name, v2)  # the retry completes the same operation
    assert (row["from_version"], row["to_version"]) == (v1, v2)
    assert aliases(client, model_name) == {CHAMPION: v2}
    assert len(rt.store.list_ledger(model_name)) == 2
    assert client.get_model_version(model_name, v2).tags[registry.TAG_STATUS] == CHAMPION
    assert client.get_model_version(model_name, v1).tags[registry.TAG_STATUS] == "retired"
