"""The embedded stack's Airflow configuration: the task preload (forkserver) and its opt-out."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tooling import stack

pytestmark = pytest.mark.unit


def test_tasks_start_from_a_forkserver_that_imported_the_heavy_libraries(monkeypatch):
    monkeypatch.delenv("MLOPS_AIRFLOW_PRELOAD", raising=False)
    env = stack.task_preload_env()
    assert env["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    modules = env["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"].split(",")
    # multiprocessing's forkserver skips a module it cannot import without a word: each must exist
    assert [m for m in modules if importlib.util.find_spec(m) is None] == []


def test_the_preload_brings_the_libraries_and_none_of_the_projects_code():
    """What the forkserver would hold: the heavy libraries, and of this project only the preload
    module itself (any other module would be stale in every task after an edit)."""
    code = (
        "import sys, json, tooling.task_preload; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'include', 'tooling', 'dags', 'plugins', "
        "'great_expectations', 'evidently', 'mlflow', 'sklearn', 'skops'} "
        "and (m.count('.') <= 1 or m.startswith(('include.', 'tooling.'))))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert {"great_expectations", "evidently", "mlflow", "mlflow.sklearn", "sklearn.ensemble", "skops.io"} <= loaded
    assert sorted(m for m in loaded if m.split(".")[0] in {"include", "tooling", "dags", "plugins"}) == [
        "tooling",
        "tooling.task_preload",
    ]
    assert "Skipping registering function" not in out.stderr  # GX's import chatter is quieted


def test_the_preload_can_be_turned_off_or_chosen(monkeypatch):
    monkeypatch.setenv("MLOPS_AIRFLOW_PRELOAD", "")
    assert stack.task_preload_env() == {}
    monkeypatch.setenv("MLOPS_AIRFLOW_PRELOAD", "airflow,pandas")
    assert stack.task_preload_env()["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"] == "airflow,pandas"


def test_a_library_that_fails_to_import_is_reported_not_raised():
    """An exception would stop the forkserver and with it every task."""
    code = (
        "import sys; sys.modules['evidently'] = None; "  # importing it now raises ImportError
        "import tooling.task_preload as p; print(sorted(p.failed))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "['evidently']"
    assert "could not import evidently" in out.stderr


def test_a_throwaway_stack_ignores_the_urls_an_earlier_stack_left_in_the_environment(monkeypatch, tmp_path):
    """`mlflow.set_tracking_uri` writes MLFLOW_TRACKING_URI into os.environ: an e2e module run after
    another must not inherit the previous stack's (stopped) MLflow, serving or Evidently URLs."""
    from include.mlops.settings import get_settings
    from tests.e2e.stack_env import isolated_env

    for var in ("MLFLOW_TRACKING_URI", "MLOPS_SERVING_URL", "MLOPS_EVIDENTLY_URL"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    env = isolated_env(tmp_path)
    s = get_settings(env)
    assert s.mlflow_tracking_uri == f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
    assert s.serving_url == f"http://127.0.0.1:{env['MLOPS_SERVING_PORT']}"
    assert "127.0.0.1:9" not in " ".join(v for k, v in env.items() if k.endswith("_URI") or k.endswith("_URL"))


def test_tasks_get_one_blas_and_openmp_thread_unless_told_otherwise(monkeypatch):
    for var in (*stack.THREAD_POOL_VARS, "MLOPS_TASK_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert stack.task_threads_env() == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    monkeypatch.setenv("MLOPS_TASK_THREADS", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's own setting wins
    assert stack.task_threads_env() == {"OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    monkeypatch.setenv("MLOPS_TASK_THREADS", "many")
    with pytest.raises(ValueError, match="MLOPS_TASK_THREADS"):
        stack.task_threads_env()
