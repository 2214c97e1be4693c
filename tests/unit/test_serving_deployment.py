"""One serving process for every model of the deployment (issue 18): each model on its own route
with its own champion/challenger, batcher, log records and metric series; a regression model scored
as a regressor; unknown models a 404 naming the models; the other models loaded on their first
request; ``/health`` listing every model with its memory.

In-process through the ASGI app (Starlette's TestClient), with tiny real pipelines, on the ops store
of the test backend, as the other serving unit tests do."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.mlops.adapters.registry import ServingConfig
from include.mlops.domain.spec import load_spec
from include.mlops.serving.models import ModelManager, check_model
from include.mlops.serving.schema import Row
from include.mlops.serving.scoring import FrameBuilder, Scorer
from tests.conftest import ops_db_url
from tests.integration.serving_fixtures import REGRESSION_MODEL, row_payload, train_tiny, train_tiny_regressor, write_regression_spec

pytestmark = pytest.mark.unit

DEFAULT = "flights_late_arrival"


@pytest.fixture(scope="module")
def reg_spec(tmp_path_factory):
    return load_spec(write_regression_spec(tmp_path_factory.mktemp("reg-spec")))


@pytest.fixture(scope="module")
def classifier(spec):
    return train_tiny(spec, seed=0, rows=200, max_iter=5)


@pytest.fixture(scope="module")
def regressors(reg_spec):
    a, X = train_tiny_regressor(reg_spec, seed=1, rows=200, max_iter=5)
    b, _ = train_tiny_regressor(reg_spec, seed=2, rows=200, max_iter=8)
    return {"1": a, "2": b}, X


def _rows(spec, X, n: int, prefix: str) -> list[Row]:
    return [Row(f"{prefix}-{i}", None, tuple(None if isinstance(v, float) and np.isnan(v) else v for v in X.iloc[i])) for i in range(n)]


class _Job:
    def __init__(self, rows: list[Row]):
        self.rows = rows
        self.result: Any = None
        self.error: BaseException | None = None


# -- a regressor, below HTTP -------------------------------------------------------------------------
def test_the_probe_check_accepts_a_regressor_and_refuses_what_is_not_one(reg_spec, regressors, classifier):
    model, X = regressors[0]["1"], regressors[1]
    probe = X.head(3)
    check_model(model, probe, "regression")  # finite values of shape (3,)

    class Broken:
        def __init__(self, out: Any):
            self.out = out

        def predict(self, x: Any) -> Any:
            return self.out

    with pytest.raises(ValueError, match="shape"):
        check_model(Broken(np.zeros((3, 2))), probe, "regression")
    with pytest.raises(ValueError, match="not finite"):
        check_model(Broken(np.array([1.0, np.nan, 2.0])), probe, "regression")
    with pytest.raises(TypeError, match="no predict_proba"):
        check_model(model, probe, "binary_classification")  # a regressor where a classifier is expected
    check_model(classifier[0], classifier[1].head(1))  # classifiers as before


def test_a_regression_scorer_answers_the_predicted_value_directly_and_exactly(reg_spec, regressors):
    from include.mlops.serving.direct import compile_direct

    models, X = regressors
    frames = FrameBuilder(reg_spec)
    direct, why = compile_direct(models["1"], reg_spec, frames)
    assert direct is not None, why  # the regressor's own predict on the encoded matrix, bit for bit
    manager = ModelManager(REGRESSION_MODEL, lambda: ServingConfig("1", None, None, 0.0), loader=models.__getitem__)
    manager.poll()
    scorer = Scorer(manager, frames, salt=REGRESSION_MODEL, task="regression")
    job = _Job(_rows(reg_spec, X, 25, "r"))
    scorer([job])  # type: ignore[list-item]
    expected = models["1"].predict(X.head(25))
    assert [o.score for o in job.result] == expected.tolist()
    assert [o.prediction for o in job.result] == expected.tolist()  # the value itself, not a class
    assert len({round(o.score, 6) for o in job.result}) > 1


# -- the app: two models in one process ------------------------------------------------------------------
@pytest.fixture
def two_models(spec, reg_spec, classifier, regressors, tmp_path, monkeypatch):
    """The app with the default classifier and the regression model (from a specs folder); loads
    are counted per model."""
    import include.mlops.serving.models as models_mod
    from include.mlops.serving.app import create_app
    from include.mlops.settings import get_settings

    folder = tmp_path / "specs"
    write_regression_spec(folder)
    by_model = {DEFAULT: {"1": classifier[0]}, REGRESSION_MODEL: regressors[0]}
    loads: list[tuple[str, str, str | None]] = []

    def load(name: str, version: str, spec: Any = None) -> Any:
        loads.append((name, version, spec.name if spec is not None else None))
        return by_model[name][version]

    monkeypatch.setattr(models_mod, "load_sklearn", load)
    settings = get_settings(
        {
            "MLOPS_HOME": str(tmp_path),
            "MLOPS_OPS_DB_URL": ops_db_url(tmp_path),
            "MLOPS_SERVING_POLL_SECONDS": "60",
            "MLOPS_SPECS": str(folder),
            "MLOPS_SERVING_ADMIN_TOKEN": "t0ken",
        }
    )
    app = create_app(settings)
    services = app.state.deployment.services
    services[DEFAULT].manager._config = lambda: ServingConfig("1", None, None, 0.0)
    services[REGRESSION_MODEL].manager._config = lambda: ServingConfig("1", "2", "canary", 0.5)
    return app, loads


def _log(app) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from include.mlops.adapters.store import inference_log

    with app.service.writer._store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(inference_log).order_by(inference_log.c.id)).mappings()]


def test_each_model_answers_on_its_own_route_with_its_own_routing_and_records(two_models, spec, reg_spec, classifier, regressors):
    from fastapi.testclient import TestClient

    app, loads = two_models
    models, Xr = regressors
    reg_rows = [row_payload(reg_spec, Xr, i, f"r-{i}") for i in range(40)]
    cls_rows = [row_payload(spec, classifier[1], i, f"c-{i}") for i in range(10)]
    with TestClient(app) as client:
        assert loads == [(DEFAULT, "1", None)]  # the default loads at start-up, the other one lazily
        default = client.post("/predict", json={"rows": cls_rows, "request_id": "c1"})
        same = client.post(f"/models/{DEFAULT}/predict", json={"rows": cls_rows, "request_id": "c2"})
        assert default.status_code == same.status_code == 200, default.text
        for p, q in zip(default.json()["predictions"], same.json()["predictions"], strict=True):
            assert p == q and p["prediction"] in (0, 1) and 0.0 <= p["score"] <= 1.0 and p["model_version"] == "1"

        reg = client.post(f"/models/{REGRESSION_MODEL}/predict", json={"rows": reg_rows, "request_id": "r1"})
        assert reg.status_code == 200, reg.text
        assert {load[0] for load in loads} == {DEFAULT, REGRESSION_MODEL}
        assert (REGRESSION_MODEL, "2", REGRESSION_MODEL) in loads  # loaded with its own spec's trust list
        answers = reg.json()["predictions"]
        assert {p["model_version"] for p in answers} == {"1", "2"}  # its own canary: half of its entities
        assert {p["route"] for p in answers} == {"champion", "challenger"}
        frame = pd.DataFrame(reg_rows).drop(columns=[reg_spec.entity_id])
        for i, p in enumerate(answers):
            expected = float(models[p["model_version"]].predict(frame.iloc[[i]])[0])
            assert p["prediction"] == p["score"] == pytest.approx(expected, abs=1e-9)
        assert len({p["prediction"] for p in answers}) > 2  # values, not classes

        # a row of the classifier's own requests went to its champion only: routing is per model
        metrics = client.get("/metrics").text
    assert f'mlops_serving_rows_total{{model="{DEFAULT}",model_version="1",route="champion",status="ok"}} 20.0' in metrics
    assert f'model="{REGRESSION_MODEL}",model_version="2",route="challenger",status="ok"' in metrics
    assert f'mlops_serving_model_info{{alias="challenger",model="{REGRESSION_MODEL}",version="2"}} 1.0' in metrics
    assert f'mlops_serving_requests_total{{model="{REGRESSION_MODEL}",status="200"}} 1.0' in metrics
    records = _log(app)  # the shared writer drained at shutdown
    by_request = {rid: [r for r in records if r["request_id"] == rid] for rid in ("c1", "c2", "r1")}
    assert {r["model_name"] for r in by_request["c1"] + by_request["c2"]} == {DEFAULT}
    assert {r["model_name"] for r in by_request["r1"]} == {REGRESSION_MODEL} and len(by_request["r1"]) == 40
    assert all(r["prediction"] is None and r["score"] is not None for r in by_request["r1"])  # the value is the score
    assert all(r["prediction"] in (0, 1) for r in by_request["c1"])


def test_an_unknown_model_is_a_404_naming_the_models(two_models, spec, classifier):
    from fastapi.testclient import TestClient

    app, _ = two_models
    with TestClient(app) as client:
        resp = client.post("/models/nope/predict", json=row_payload(spec, classifier[1], 0, "e-1"))
        assert resp.status_code == 404
        body = resp.json()
        assert body["models"] == [DEFAULT, REGRESSION_MODEL] and "'nope'" in body["detail"] and REGRESSION_MODEL in body["detail"]
        admin = {"Authorization": "Bearer t0ken"}
        assert client.post("/admin/reload?model=nope", headers=admin).status_code == 404
        # a classifier's row is not a valid request for the regressor? it is (same features): the schema is the model's own
        wrong = client.post(f"/models/{REGRESSION_MODEL}/predict", json={"flight_id": "x", "carrier": "AA"})
        assert wrong.status_code == 422 and "required feature is missing" in wrong.text


def test_with_an_api_key_an_unknown_model_is_a_401_that_names_no_model(tmp_path, monkeypatch, reg_spec):
    from fastapi.testclient import TestClient

    from include.mlops.serving.app import create_app
    from include.mlops.settings import get_settings

    folder = tmp_path / "specs"
    write_regression_spec(folder)
    env = {"MLOPS_HOME": str(tmp_path), "MLOPS_OPS_DB_URL": ops_db_url(tmp_path), "MLOPS_SPECS": str(folder)}
    app = create_app(get_settings({**env, "MLOPS_SERVING_API_KEY": "k3y", "MLOPS_SERVING_POLL_SECONDS": "60"}))
    with TestClient(app) as client:
        denied = client.post("/models/nope/predict", json={})
        assert denied.status_code == 401 and REGRESSION_MODEL not in denied.text and "X-API-Key" in denied.text
        known = client.post("/models/nope/predict", json={}, headers={"X-API-Key": "k3y"})
        assert known.status_code == 404 and REGRESSION_MODEL in known.json()["models"]


def test_health_lists_every_model_loaded_lazily_with_its_memory(two_models, spec, reg_spec, regressors):
    from fastapi.testclient import TestClient

    from include.mlops.serving.models import pickled_bytes

    app, loads = two_models
    models, Xr = regressors
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["model"] == DEFAULT and health["ready"] is True and health["default_model"] == DEFAULT  # as before
        assert set(health["models"]) == {DEFAULT, REGRESSION_MODEL}
        default, other = health["models"][DEFAULT], health["models"][REGRESSION_MODEL]
        assert default["loaded"] and default["default"] and default["routes"] == ["/predict", f"/models/{DEFAULT}/predict"]
        assert default["memory"]["model_pickle_bytes"] > 10_000 and default["memory"]["held_versions"] == ["1"]
        assert other["loaded"] is False and other["ready"] is False and other["task"] == "regression"
        assert other["memory"]["model_pickle_bytes"] == 0 and other["registry"] is None  # not even read
        assert [load for load in loads if load[0] == REGRESSION_MODEL] == []  # /health never loads a model

        admin = {"Authorization": "Bearer t0ken"}
        reloaded = client.post(f"/admin/reload?model={REGRESSION_MODEL}", headers=admin)  # naming a model loads it
        assert reloaded.status_code == 200 and reloaded.json()["reloaded"] == [REGRESSION_MODEL]
        other = client.get("/health").json()["models"][REGRESSION_MODEL]
        assert (
            other["loaded"]
            and other["ready"]
            and other["serving"]
            == {
                "champion": "1",
                "challenger": "2",
                "mode": "canary",
                "canary_share": 0.5,
            }
        )
        assert other["memory"]["model_pickle_bytes_by_version"] == {v: pickled_bytes(m) for v, m in models.items()}
        assert other["last_load_error"] is None and other["input_path"] == {"1": "direct", "2": "direct"}
        everything = client.post("/admin/reload", headers=admin).json()  # default: every loaded model
        assert everything["reloaded"] == [DEFAULT, REGRESSION_MODEL]


def test_a_model_whose_load_fails_is_reported_and_the_others_serve(two_models, spec, reg_spec, classifier, regressors):
    from fastapi.testclient import TestClient

    app, _ = two_models
    services = app.state.deployment.services
    services[REGRESSION_MODEL].manager._config = lambda: ServingConfig("9", None, None, 0.0)  # no such version
    with TestClient(app) as client:
        resp = client.post(f"/models/{REGRESSION_MODEL}/predict", json=row_payload(reg_spec, regressors[1], 0, "r-0"))
        assert resp.status_code == 503 and "could not be loaded" in resp.json()["detail"]
        other = client.get("/health").json()["models"][REGRESSION_MODEL]
        assert other["loaded"] and not other["ready"] and other["last_load_error"]["version"] == "9"
        assert client.post("/predict", json=row_payload(spec, classifier[1], 0, "c-0")).status_code == 200
