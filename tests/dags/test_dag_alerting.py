"""Every task of the loop reports its failures and its recoveries: each DAG's default_args wire
``LoopFailureNotifier`` (on_failure_callback) and ``LoopRecoveryNotifier`` (on_success_callback), so a
``task_failed`` alert resolves by itself once the task succeeds again. The second test calls a real
DAG's callbacks the way Airflow's task runner does, against a fresh ops store."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.dags
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag


def _callbacks(value: Any) -> list[Any]:
    """A task's callback attribute: None, one callable, or a list of them (mapped tasks keep one)."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _of(task: Any, attribute: str, kind: type) -> list[Any]:
    return [cb for cb in _callbacks(getattr(task, attribute)) if isinstance(cb, kind)]


def test_every_task_wires_the_failure_and_the_recovery_notifier(dagbag):
    from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier

    assert dagbag.dags
    unwired = []
    for dag_id, dag in sorted(dagbag.dags.items()):
        for task in dag.tasks:
            if len(_of(task, "on_failure_callback", LoopFailureNotifier)) != 1:
                unwired.append(f"{dag_id}.{task.task_id}: on_failure_callback")
            if len(_of(task, "on_success_callback", LoopRecoveryNotifier)) != 1:
                unwired.append(f"{dag_id}.{task.task_id}: on_success_callback")
    assert not unwired, f"tasks without exactly one loop notifier: {unwired}"


def _context(dag: Any, task_id: str, run_id: str, map_index: int = -1, exception: BaseException | None = None) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task_id, run_id=run_id, map_index=map_index, try_number=2, max_tries=1)
    context: dict[str, Any] = {"dag": dag, "ti": ti, "task_instance": ti, "run_id": run_id}
    if exception is not None:
        context["exception"] = exception
    return context


def test_a_real_task_that_succeeds_again_resolves_its_failure_alert(dagbag, state):
    """ingest_outcomes.ingest_batches (a mapped task) fails in one run and succeeds in the next:
    its own callbacks, called with one context argument as Airflow calls them, open the alert and
    then resolve it; another task's success leaves it alone."""
    from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier
    from include.mlops.runtime import load_runtime

    dag = dagbag.dags["ingest_outcomes"]
    ingest = dag.get_task("ingest_batches")
    (fail,) = _of(ingest, "on_failure_callback", LoopFailureNotifier)
    (recover,) = _of(ingest, "on_success_callback", LoopRecoveryNotifier)
    rt = load_runtime()

    fail(_context(dag, "ingest_batches", "scheduled__2013-02-01T00:00:00+00:00", map_index=1, exception=OSError("disk full")))
    (alert,) = [a for a in rt.store.list_alerts(rt.model_name) if a["kind"] == "task_failed"]
    assert alert["status"] == "open" and alert["dedupe_key"] == "task_failed:ingest_outcomes.ingest_batches"

    (other,) = _of(dag.get_task("find_batches"), "on_success_callback", LoopRecoveryNotifier)
    other(_context(dag, "find_batches", "scheduled__2013-02-01T00:10:00+00:00"))
    assert rt.store.get_alert(alert["id"])["status"] == "open"

    recover(_context(dag, "ingest_batches", "scheduled__2013-02-01T00:10:00+00:00", map_index=0))
    assert rt.store.get_alert(alert["id"])["status"] == "resolved"
