"""DAG integrity for the Astro CLI: every file in dags/ imports without errors and defines its DAG.

`astro dev parse` runs this file inside the Astro Runtime image, and `astro deploy` runs it before
every deploy (a failure stops the deploy). The project's pytest runs it too (`pytest -m dags`:
`.astro` is in pyproject's test paths), in the project's venv.
It stays small on purpose: the project's stricter conventions (no heavy import at parse time, file
stem == dag_id, retries, tags, docs) are checked in tests/dags/test_dag_integrity.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.dags

DAGS = Path(__file__).resolve().parents[1] / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_there_are_dag_files():
    assert DAG_FILES, f"no DAG files in {DAGS}"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_without_errors(dagbag, path):
    errors = {Path(file).name: error for file, error in dagbag.import_errors.items()}
    assert path.name not in errors, f"{path.name} failed to import:\n{errors.get(path.name)}"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_defines_a_dag(dagbag, path):
    found = [dag_id for dag_id, dag in dagbag.dags.items() if Path(dag.fileloc).resolve() == path.resolve()]
    assert found, f"{path.name} defines no DAG"
