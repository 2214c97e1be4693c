"""benchmarks/demo/cpu_by_task.py: which process is which, and the report's arithmetic."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.unit


def load():
    spec = importlib.util.spec_from_file_location("cpu_by_task", ROOT / "benchmarks" / "demo" / "cpu_by_task.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cpu_by_task"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_processes_are_named_by_what_they_run():
    m = load()
    assert m.kind_of("airflow worker -- 01a21b82-e238-75c4-b377-90371cbe83f6") == "ti:01a21b82e23875c4b37790371cbe83f6"
    assert m.kind_of("airflow worker -- LocalExecutor: <idle>").startswith("airflow: LocalExecutor")
    assert m.kind_of("/x/.venv/bin/python /x/.venv/bin/airflow scheduler --skip-serve-logs") == "airflow: scheduler"
    assert m.kind_of("/x/python -m include.mlops.steps.deploy load-check models:/m/3") == "deploy gate `loads`: clean-process load"
    assert m.kind_of("/x/uvicorn include.mlops.serving.app:create_app --factory") == "serving API"
    assert m.kind_of("bash") == "other"


def test_a_spawned_worker_counts_as_its_parent():
    m = load()
    procs = {
        "10": ("1", "1", "/x/python /x/mlflow server --port 5000", 3.0),
        "11": ("2", "10", "/x/python -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=7)", 9.0),
        "20": ("3", "1", "/x/uvicorn include.mlops.serving.app:create_app --workers 2", 1.0),
        "21": ("4", "20", "/x/python -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)", 5.0),
        "30": ("5", "2", "", 0.1),
    }
    assert m.kind_in("11", procs) == "MLflow server"
    assert m.kind_in("21", procs) == "serving API"
    assert m.kind_in("30", procs) == "kernel"


def test_the_report_sums_task_processes_by_task_and_shows_busy_time(tmp_path):
    m = load()
    db = tmp_path / "airflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table task_instance (id text, dag_id text, task_id text)")
        conn.executemany(
            "insert into task_instance values (?, ?, ?)",
            [("a" * 32, "monitor_model", "monitor"), ("b" * 32, "monitor_model", "monitor"), ("c" * 32, "ingest_outcomes", "find_batches")],
        )
    raw = {
        "command": ["make", "demo"],
        "when": "2026-11-27T06:00:00+00:00",
        "wall_s": 100.0,
        "cores": 2,
        "cpu_s": 200.0,
        "idle_s": 40.0,
        "by": {"ti:" + "a" * 32: 6.0, "ti:" + "b" * 32: 4.0, "ti:" + "c" * 32: 1.0, "airflow: scheduler": 8.0},
    }
    text = m.report(raw, db)
    assert "busy 160 CPU s, idle 40 s" in text
    assert "| 10 | 6.2% | task monitor_model.monitor | 2 | 5.00 |" in text
    assert "| 8 | 5.0% | airflow: scheduler |  |  |" in text
    assert "| 1 | 0.6% | task ingest_outcomes.find_batches | 1 | 1.00 |" in text
    assert "attributed 19 CPU s (11 in 3 task processes)" in text
    # a command too short for the machine's counters to move still gets a report
    idle_run = m.report({**raw, "cpu_s": 0.0, "idle_s": 0.0}, db)
    assert "busy 0 CPU s" in idle_run and "| 8 | 0.0% | airflow: scheduler |" in idle_run
