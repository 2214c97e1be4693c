"""dag.test() of a second model's ingest_outcomes (issue 18): its tasks read its own landing folder
and record its own batches; the default model's DAG, run next to it, sees none of them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tooling.replay import replay

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SECOND = "second_model"


def ti_states(dag_run):
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


@pytest.fixture
def two_models(state, tmp_path, monkeypatch):
    specs = tmp_path / "specs"
    specs.mkdir()
    flights = (ROOT / "include/specs/flights.yaml").read_text()
    (specs / "flights.yaml").write_text(flights)
    name = next(line.split(":", 1)[1].strip() for line in flights.splitlines() if line.startswith("name:"))
    (specs / "second.yaml").write_text(flights.replace(f"name: {name}", f"name: {SECOND}", 1))
    monkeypatch.setenv("MLOPS_SPECS", str(specs))
    return name


def test_a_second_models_ingest_dag_acts_on_its_own_model(airflow_db, two_models, flights):
    from airflow.dag_processing.dagbag import DagBag

    from include.mlops.runtime import load_runtime

    second, default = load_runtime(model=SECOND), load_runtime()
    assert second.lake.landing == second.settings.lake / "landings" / SECOND
    replay(second, date(2013, 1, 1), 2, ["celsius"], source=flights, notify=False)

    bag = DagBag(dag_folder=str(ROOT / "dags" / "ingest_outcomes.py"))
    assert sorted(bag.dags) == ["ingest_outcomes", f"{SECOND}.ingest_outcomes"], bag.import_errors
    run = bag.get_dag(f"{SECOND}.ingest_outcomes").test()
    assert run.state == "success", ti_states(run)

    batches = {b["file_name"]: b for b in second.store.list_batches(SECOND)}
    assert {n for n, b in batches.items() if b["status"] == "accepted"} == {"outcomes_2013-01-01.parquet", "outcomes_2013-01-02.parquet"}
    assert batches["outcomes_2013-01-03.parquet"]["reason_codes"] == ["temperature_not_fahrenheit"]
    assert all(b["run_id"] == run.run_id for b in batches.values())
    assert (second.settings.lake / "pool" / SECOND).is_dir()
    assert default.store.list_batches(default.model_name) == []

    # the default model's DAG looks at its own (empty) landing folder only
    other = bag.get_dag("ingest_outcomes").test()
    assert other.state == "success", ti_states(other)
    assert ti_states(other)[("publish_accepted", -1)] == "skipped"
    assert default.store.list_batches(default.model_name) == []
    assert len(second.store.list_batches(SECOND)) == len(batches)
