"""dag.test() of ingest_outcomes on good and faulty batches against a temporary state folder."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tooling.replay import replay

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def ti_states(dag_run):
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def test_ingest_dag_accepts_good_and_quarantines_faulty(airflow_db, runtime, flights):
    replay(runtime, date(2013, 1, 1), 3, ["celsius", "nulls", "duplicate_batch"], source=flights, notify=False)
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags" / "ingest_outcomes.py")).get_dag("ingest_outcomes")
    run = dag.test()
    assert run.state == "success", ti_states(run)
    states = ti_states(run)
    assert states[("publish_accepted", -1)] == "success"
    assert states[("publish_quarantined", -1)] == "success"
    # 5 days waiting -> 2 mapped chunks of whole days (at most 2 tasks)
    assert sum(1 for (task, _), s in states.items() if task == "ingest_batches" and s == "success") == 2

    batches = {b["file_name"]: b for b in runtime.store.list_batches()}
    assert {n for n, b in batches.items() if b["status"] == "accepted"} == {f"outcomes_2013-01-0{d}.parquet" for d in (1, 2, 3)}
    assert batches["outcomes_2013-01-04.parquet"]["reason_codes"] == ["temperature_not_fahrenheit"]
    assert batches["outcomes_2013-01-05.parquet"]["reason_codes"] == ["too_many_nulls"]
    assert batches["outcomes_2013-01-01-resend.parquet"]["reason_codes"] == ["duplicate_batch"]
    assert all(b["run_id"] == run.run_id for b in batches.values())

    # a second run finds nothing to do and changes nothing
    again = dag.test()
    assert again.state == "success"
    assert len(runtime.store.list_batches()) == len(batches)
    assert ti_states(again)[("publish_accepted", -1)] == "skipped"
