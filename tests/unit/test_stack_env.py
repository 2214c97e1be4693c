"""The embedded stack's Airflow configuration: the task preload (forkserver) and its opt-out."""

from __future__ import annotations

import importlib.util

import pytest

from include.mlops import stack

pytestmark = pytest.mark.unit


def test_tasks_start_from_a_forkserver_that_imported_the_heavy_libraries(monkeypatch):
    monkeypatch.delenv("MLOPS_AIRFLOW_PRELOAD", raising=False)
    env = stack.task_preload_env()
    assert env["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    modules = env["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"].split(",")
    assert {"great_expectations", "evidently", "mlflow", "sklearn.ensemble"} <= set(modules)
    # the project's own code is never preloaded: an edit must reach the next task without a restart
    assert not [m for m in modules if m.split(".")[0] in {"include", "dags", "plugins"}]
    # multiprocessing's forkserver skips a module it cannot import without a word: each must exist
    assert [m for m in modules if importlib.util.find_spec(m) is None] == []


def test_the_preload_can_be_turned_off_or_chosen(monkeypatch):
    monkeypatch.setenv("MLOPS_AIRFLOW_PRELOAD", "")
    assert stack.task_preload_env() == {}
    monkeypatch.setenv("MLOPS_AIRFLOW_PRELOAD", "airflow,pandas")
    assert stack.task_preload_env()["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"] == "airflow,pandas"
