"""The status pages of a deployment with several models (issue 18): the overview lists every model of
a specs folder (a classifier copy of the flights spec and a regression one) with its own rows of the
ops store and figures in its own metric, and the spec left out with its error; each model has its own
page; an unknown model is a 404; ``/mlops-loop/`` still shows the default model's page under the
overview. MLflow and the serving API are unreachable here, and said so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from include.mlops.adapters.alerts import raise_alert
from include.mlops.ui.overview import gather_overview, model_state, overview_json, render_overview
from include.mlops.ui.status_page import gather, render

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DEFAULT, COPY, REGRESSOR = "flights_late_arrival", "flights_copy", "arrival_delay_minutes"
BROKEN_NAME = "<script>alert(1)</script>"


def _write_specs(folder: Path) -> None:
    raw = yaml.safe_load((ROOT / "include/specs/flights.yaml").read_text())
    folder.mkdir(parents=True)
    (folder / "flights.yaml").write_text(yaml.safe_dump(raw))  # the default model's own spec: not a second model
    (folder / "copy.yaml").write_text(yaml.safe_dump({**raw, "name": COPY}))
    target = {k: v for k, v in raw["target"].items() if k not in ("op", "value")}
    regression = {
        **raw,
        "name": REGRESSOR,
        "task": "regression",
        "target": {**target, "name": "delay_minutes"},
        "deployment": {**raw["deployment"], "primary_metric": "mae", "floors": {"mae": 60}},
        "promotion": {**raw["promotion"], "metric": "mae"},
    }
    (folder / "regression.yml").write_text(yaml.safe_dump(regression))
    (folder / "broken.yaml").write_text(yaml.safe_dump({"name": BROKEN_NAME, "task": "regression"}))
    (folder / "notes.txt").write_text("not a spec")


@pytest.fixture
def deployment(state, tmp_path, monkeypatch):
    """A deployment whose specs folder holds the default model, two more and a broken spec."""
    _write_specs(tmp_path / "specs")
    monkeypatch.setenv("MLOPS_SPECS", str(tmp_path / "specs"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow is down: say so fast
    from include.mlops.runtime import load_runtime

    return {name: load_runtime(model=name) for name in (DEFAULT, COPY, REGRESSOR)}


def _champion(rt, version: str, strategy: str = "direct") -> None:
    rt.store.append_ledger(
        model=rt.model_name, alias="champion", action="set", from_version=None, to_version=version, strategy=strategy,
        reason="first model", actor="test", op_key=f"{rt.model_name}-{version}", dag_id=rt.entry.dag_id("deploy_validated_model"),
        run_id="manual__1",
    )  # fmt: skip


def _monitored_window(rt, quality: dict, version: str = "1") -> None:
    """A champion ``monitor`` decision with its summary file, as the monitoring pass leaves them."""
    summary = {
        "window_start": "2013-03-04T00:00:00",
        "window_end": "2013-03-11T00:00:00",
        "version": version,
        "outcome": "healthy",
        "drift": {"columns": {"distance": {"score": 0.02, "drifted": False, "method": "psi"}}},
        "quality": quality,
        "report": None,
    }
    path = rt.lake.root / "reports" / rt.model_name / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))
    rt.store.record_decision(
        rt.model_name, "monitor", "healthy", "healthy", subject=f"v{version}", inputs={"role": "champion", "summary": str(path)}
    )


def test_the_overview_lists_every_model_with_its_own_rows_and_the_spec_left_out(deployment):
    default, copy, regressor = deployment[DEFAULT], deployment[COPY], deployment[REGRESSOR]
    _champion(copy, "3")
    raise_alert(copy.store, COPY, severity="critical", kind="rollback", dedupe_key="rb", message="v4 rolled back")
    _champion(regressor, "1")
    _monitored_window(regressor, {"metric": "mae", "live": 12.5, "labelled_rows": 420})
    _monitored_window(default, {"metric": "roc_auc", "live": 0.6712, "labelled_rows": 900})  # no champion in the ledger

    ov = gather_overview()
    rows = {r.name: r for r in ov.models}
    assert [r.name for r in ov.models] == [DEFAULT, REGRESSOR, COPY]  # the default first, the others by name
    assert all(r.error is None for r in ov.models), [r.error for r in ov.models]
    assert rows[DEFAULT].default and not rows[COPY].default
    # each row reads only its model's rows
    assert (rows[COPY].champion, rows[COPY].open_alerts, rows[COPY].state) == ("3", 1, "1 critical alert")
    assert (rows[REGRESSOR].champion, rows[REGRESSOR].open_alerts, rows[REGRESSOR].state) == ("1", 0, "serving v1")
    assert (rows[DEFAULT].champion, rows[DEFAULT].state) == (None, "no champion yet")
    assert rows[REGRESSOR].quality is not None and rows[REGRESSOR].quality["metric"] == "mae"
    assert rows[REGRESSOR].quality["value"] == 12.5 and rows[COPY].quality is None
    assert rows[REGRESSOR].task == "regression" and rows[REGRESSOR].metric == "mae"
    assert rows[COPY].route == f"/models/{COPY}/predict" and rows[COPY].landing.endswith(f"landings/{COPY}")
    assert [Path(p).name for p in ov.errors] == ["broken.yaml"]
    assert "error" in (ov.serving or {})

    page = render_overview(ov)
    for name in (DEFAULT, COPY, REGRESSOR):
        assert f'href="/mlops-loop/models/{name}"' in page
        assert f"/dags?tags=model%3A{name}" in page  # its DAGs in the Airflow UI, by tag
    assert "mae <b>12.5000</b>" in page and "roc_auc <b>0.6712</b>" in page
    assert "1 critical alert" in page and "no champion yet" in page and "regression" in page
    assert "Specs left out" in page and "broken.yaml" in page and "source: required field is missing" in page
    assert BROKEN_NAME not in page and "&lt;script&gt;" in page  # the error quotes the file: escaped
    json.dumps(overview_json(ov))


def test_each_model_has_its_own_page_in_its_own_metric(deployment):
    from include.mlops.steps.value import LoopValue, MonthValue, overall, write_value

    copy, regressor = deployment[COPY], deployment[REGRESSOR]
    _champion(copy, "3")
    _champion(regressor, "1")
    _monitored_window(regressor, {"metric": "mae", "live": 12.5, "labelled_rows": 420})
    _monitored_window(copy, {"metric": "roc_auc", "live": 0.66, "labelled_rows": 900, "estimated": {"method": "cbpe", "value": 0.7123}})
    months = [MonthValue("2013-03", 500, 12.0, 13.0)]
    write_value(regressor.lake, LoopValue(REGRESSOR, "1", 500, months, overall(months), None, ["1"], metric="mae"))

    status = gather(regressor)
    assert (status.model, status.task, status.metric, status.default) == (REGRESSOR, "regression", "mae", False)
    assert status.champion is not None and status.champion["to_version"] == "1"
    page = render(status)
    assert f"MLOps loop: {REGRESSOR}" in page and "figures in mae" in page
    assert "realized mae" in page and "12.500" in page
    assert "not applicable" in page  # CBPE is a classifier's: said, not broken
    assert "mae per month (lower is better)" in page and "<td class='cok'>-1.0000</td>" in page  # lower MAE: better
    assert f"/dags?tags=model%3A{REGRESSOR}" in page and f"/mlops-loop/api/models/{REGRESSOR}/status" in page

    page = render(gather(copy))
    assert f"MLOps loop: {COPY}" in page and "0.712" in page and "not applicable" not in page  # the CBPE estimate
    assert "default model" not in page and "v3" in page
    assert REGRESSOR not in page  # nothing of the other model


def test_model_state_in_a_few_words():
    champion, canary = {"to_version": "3"}, {"to_version": "4", "strategy": "canary"}
    warning, critical = {"severity": "warning"}, {"severity": "critical"}
    assert model_state(None, None, []) == ("no champion yet", "muted")
    assert model_state(champion, None, []) == ("serving v3", "ok")
    assert model_state(champion, canary, []) == ("canary of v4", "warn")
    assert model_state(champion, None, [warning, warning]) == ("2 open alerts", "warn")
    assert model_state(champion, canary, [warning, critical]) == ("1 critical alert", "bad")
    assert model_state(None, None, [critical, critical]) == ("2 critical alerts", "bad")


# -- the plugin's routes ------------------------------------------------------------------------------
@pytest.fixture
def client(deployment):
    from fastapi.testclient import TestClient

    from plugins import mlops_loop

    mlops_loop.app.dependency_overrides[mlops_loop._authenticated] = lambda: "tester"
    try:
        yield TestClient(mlops_loop.app)
    finally:
        mlops_loop.app.dependency_overrides.clear()


def test_the_plugin_serves_the_overview_a_page_per_model_and_404_for_others(client, deployment):
    _champion(deployment[DEFAULT], "7")
    home = client.get("/", headers={"accept": "text/html"})
    assert home.status_code == 200
    # the address every old link points at: the overview, then the default model's page as before
    assert "MLOps loop: all models" in home.text and "Deployment ledger" in home.text and "v7" in home.text
    assert f"/mlops-loop/models/{COPY}" in home.text and "broken.yaml" in home.text

    page = client.get(f"/models/{COPY}", headers={"accept": "text/html"})
    assert page.status_code == 200 and f"MLOps loop: {COPY}" in page.text and "Deployment ledger" in page.text
    assert "v7" not in page.text  # the default model's champion is not this model's

    missing = client.get("/models/nope<b>", headers={"accept": "text/html"})
    assert missing.status_code == 404 and "no model" in missing.text and "<b>" not in missing.text
    assert client.get("/models/nope").json() == {"detail": "no model 'nope' in this deployment"}
    assert client.get("/api/models/nope/status").status_code == 404

    listed = client.get("/api/models").json()
    assert [m["name"] for m in listed["models"]] == [DEFAULT, REGRESSOR, COPY] and len(listed["errors"]) == 1
    assert client.get(f"/api/models/{REGRESSOR}/status").json()["metric"] == "mae"
    assert client.get("/api/status").json()["model"] == DEFAULT  # the old JSON address: the default model
