"""The demo's idea of "the loop is idle" at the end of the replay: an early window or a promotion
still waiting for its labels does not hold the story up (no more traffic or labels come)."""

from __future__ import annotations

import pytest

from tooling.demo import idle

pytestmark = pytest.mark.unit


class FakeClient:
    """Runs and task instances as the Airflow REST API returns them."""

    def __init__(self, runs: dict[str, list[dict]], tasks: dict[str, list[dict]] | None = None) -> None:
        self._runs, self._tasks, self.asked = runs, tasks or {}, []

    def runs(self, dag_id: str, limit: int = 100) -> list[dict]:
        return self._runs.get(dag_id, [])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        self.asked.append(run_id)
        return self._tasks.get(run_id, [])


def waiting(run_id: str, state: str = "running") -> dict:
    return {"dag_run_id": run_id, "state": state}


def test_a_promotion_waiting_for_labels_counts_as_idle():
    tasks = {"p1": [{"task_id": "await_labels", "state": "up_for_reschedule"}, {"task_id": "decide", "state": None}]}
    client = FakeClient({"promote_or_rollback": [waiting("p1")]}, tasks)
    assert idle(client, ["promote_or_rollback", "train_candidate"])
    assert client.asked == ["p1"]


@pytest.mark.parametrize(
    ("dag_id", "run", "tasks"),
    [
        ("promote_or_rollback", waiting("p2"), [{"task_id": "await_labels", "state": "success"}, {"task_id": "decide", "state": "queued"}]),
        ("promote_or_rollback", waiting("p3", "queued"), []),  # queued: not started, it will decide
        ("train_candidate", waiting("t1"), [{"task_id": "await_labels", "state": "up_for_reschedule"}]),  # only that DAG's sensor
    ],
    ids=["deciding", "queued", "other-dag"],
)
def test_other_runs_keep_the_loop_busy(dag_id, run, tasks):
    assert not idle(FakeClient({dag_id: [run]}, {run["dag_run_id"]: tasks}), [dag_id])


def test_an_early_window_never_holds_the_end_up():
    assert idle(FakeClient({"check_early_window": [waiting("e1")]}), ["check_early_window"])
    assert idle(FakeClient({"m.check_early_window": [waiting("e2")]}), ["m.check_early_window"])
