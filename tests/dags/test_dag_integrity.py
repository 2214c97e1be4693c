"""DAG integrity: every DAG file imports cleanly, cheaply and follows the project's conventions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags
ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
HEAVY = ("pandas", "numpy", "sklearn", "mlflow", "evidently", "great_expectations", "scipy", "pyarrow", "matplotlib")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_dag_folder_is_not_empty():
    assert DAG_FILES


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_file_stem_is_the_dag_id(dagbag, path):
    """One DAG per file and model: the default model's id is the file's stem, another model's is
    ``<model>.<stem>`` (tests/dags/test_dag_models.py parses a deployment of several models)."""
    from include.mlops.catalog import load_catalog

    ids = sorted(d.dag_id for d in dagbag.dags.values() if Path(d.fileloc).resolve() == path.resolve())
    assert ids == sorted(m.dag_id(path.stem) for m in load_catalog().models)
    assert path.stem in ids


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_no_heavy_import_at_parse_time(path):
    """Import the DAG file in a fresh interpreter and look at sys.modules (deterministic)."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{path.name} imports {loaded} at parse time"


def test_dag_conventions(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags and "mlops-loop" in dag.tags, dag_id
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert dag.catchup is False, dag_id
        assert dag.start_date is not None, dag_id
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
