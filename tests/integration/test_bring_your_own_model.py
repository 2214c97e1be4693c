"""Bring your own model (issue 18, docs/bring-your-own-model.md): a third spec file, written into a
temporary specs folder beside the project's own specs, is all it takes. With ``MLOPS_SPECS`` pointing
at that folder and no code changed:

* Airflow parses the loop's seven DAGs for it (``<name>.<step>``, tagged ``model:<name>``);
* a real serving process answers ``POST /models/<name>/predict`` with its champion from a real
  MLflow registry, lists it in ``/health`` with its memory, and keeps the other routes;
* the status page lists it in the overview and gives it a page of its own.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.serving_fixtures import http, register, row_payload, start_mlflow, start_serving, train_tiny

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
STEPS = sorted(p.stem for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture
def byo(tmp_path, monkeypatch):
    """The project's specs plus a new one, ``my_model_<hex>``: a classifier on the flights features
    with its own name and a daily monitoring schedule."""
    specs = tmp_path / "specs"
    specs.mkdir()
    for path in sorted((ROOT / "include/specs").glob("*.yaml")):
        (specs / path.name).write_text(path.read_text())
    name = f"my_model_{uuid.uuid4().hex[:6]}"
    raw = yaml.safe_load((ROOT / "include/specs/flights.yaml").read_text())
    raw.update(name=name, description="a third model, added by dropping this file into the specs folder")
    raw["monitoring"]["schedule"] = "@daily"
    (specs / "my_model.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("MLOPS_SPECS", str(specs))
    return name, specs


def test_a_new_spec_file_brings_its_dags(byo):
    from airflow.dag_processing.dagbag import DagBag

    name, specs = byo
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    mine = {dag_id: dag for dag_id, dag in bag.dags.items() if dag_id.startswith(f"{name}.")}
    assert sorted(mine) == [f"{name}.{step}" for step in STEPS]
    for dag in mine.values():
        assert f"model:{name}" in dag.tags and "mlops-loop" in dag.tags
    # the project's own models keep theirs: every spec of the folder has its seven DAGs
    assert len(bag.dags) == len(STEPS) * len(list(specs.glob("*.yaml")))
    assert "monitor_model" in bag.dags


def test_a_new_spec_file_brings_its_route_and_status_page(byo, state, tmp_path):
    from fastapi.testclient import TestClient

    from include.mlops.domain.spec import load_spec
    from plugins import mlops_loop

    name, specs = byo
    spec = load_spec(specs / "my_model.yaml")
    mlflow = start_mlflow(tmp_path / "mlflow")
    serving = None
    try:
        model, X = train_tiny(spec)
        version = register(mlflow, spec, name, model, X)
        mlflow.client().set_registered_model_alias(name, "champion", version)
        serving = start_serving(tmp_path / "serving", mlflow, "flights_late_arrival", extra_env={"MLOPS_SPECS": str(specs)})

        status, body = http("POST", f"{serving.url}/models/{name}/predict", {"rows": [row_payload(spec, X, 0, "byo-1")]})
        assert status == 200, body
        assert body["predictions"][0]["model_version"] == version and 0.0 <= body["predictions"][0]["score"] <= 1.0
        status, body = http("POST", f"{serving.url}/models/{name}/predict", {"rows": [{"carrier": "AA"}]})
        assert status == 422 and "detail" in body  # the new model's own schema, with a clear error
        health = serving.health()
        assert health["models"][name]["loaded"] is True and health["models"][name]["routes"] == [f"/models/{name}/predict"]
        assert health["models"][name]["serving"]["champion"] == version
        assert health["models"][name]["memory"]["model_pickle_bytes_by_version"][version] > 0
        status, body = http("POST", f"{serving.url}/models/not_{name}/predict", {"rows": []})
        assert status == 404 and name in body["models"] and "flights_late_arrival" in body["models"]  # with the ones that exist
    finally:
        if serving is not None:
            serving.process.stop()
        mlflow.process.stop()

    mlops_loop.app.dependency_overrides[mlops_loop._authenticated] = lambda: "tester"
    try:
        client = TestClient(mlops_loop.app)
        listed = client.get("/api/models").json()
        assert name in [m["name"] for m in listed["models"]] and not listed["errors"]
        page = client.get(f"/models/{name}", headers={"accept": "text/html"})
        assert page.status_code == 200 and f"MLOps loop: {name}" in page.text
        overview = client.get("/", headers={"accept": "text/html"})
        assert f"/mlops-loop/models/{name}" in overview.text
    finally:
        mlops_loop.app.dependency_overrides.clear()
