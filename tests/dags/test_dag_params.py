"""Every DAG a person may trigger from the Airflow UI has typed, described params (issue 16, part 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.dags
ROOT = Path(__file__).resolve().parents[2]
#: the DAGs of the loop a person triggers by hand (README "Manual triggers")
MANUAL = [
    "ingest_outcomes",
    "train_candidate",
    "deploy_validated_model",
    "check_early_window",
    "promote_or_rollback",
    "monitor_model",
    "retrain_on_drift",
]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.mark.parametrize("dag_id", MANUAL)
def test_manual_dags_have_typed_described_params(dagbag, dag_id):
    dag = dagbag.dags.get(dag_id)
    assert dag is not None, dagbag.import_errors
    params = dag.params
    assert params, f"{dag_id} has no params"
    for name in params:
        param = params.get_param(name)
        assert param.schema.get("type"), f"{dag_id}.{name} has no type"
        assert param.description, f"{dag_id}.{name} has no description"


def test_manual_retrain_asks_for_a_reason(dagbag):
    params = dagbag.dags["retrain_on_drift"].params
    assert set(params) >= {"reason", "event_time"}
    assert params["reason"] is None  # asset-triggered runs validate with the defaults
