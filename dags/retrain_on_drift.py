"""
### retrain_on_drift

Governance first, then a retrain request. Runs on `drift_detected` or `performance_degraded`.
Each trigger is judged by pure rules with the state in the ops store (all in event time): a
cooldown since the last retrain, a maximum number of retrains per period, a minimum number of
newly validated labelled rows since the last training window, dedupe of repeated triggers for the
same cause, no second retrain while one is in flight, and a stop when the training pool failed
validation (see the spec's `retraining`).

* **Refused**: a decision with the reason (visible here and on the loop status page), an alert
  once per reason, not on every run; `request_retrain` shows as skipped (`govern` is a branch).
* **Accepted**: emits `retrain_requested` (extra: reason, request id); the candidate then goes
  through `train_candidate` and `deploy_validated_model` like any other. Nothing skips the pipeline.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from include.mlops.adapters.assets import DRIFT_DETECTED, PERFORMANCE_DEGRADED, RETRAIN_REQUESTED
from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier

log = logging.getLogger(__name__)
#: the XCom key of the governance verdicts (the task's return value is its branch choice)
RESULT = "result"


@dag(
    dag_id="retrain_on_drift",
    schedule=(DRIFT_DETECTED | PERFORMANCE_DEGRADED),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 1,
        "retry_delay": timedelta(seconds=20),
        "on_failure_callback": LoopFailureNotifier(),
        "on_success_callback": LoopRecoveryNotifier(),
    },
    tags=["mlops-loop", "monitoring", "model"],
    doc_md=__doc__,
)
def retrain_on_drift() -> None:
    @task.branch
    def govern() -> list[str]:
        """Judge every trigger of this run; the verdicts (and the accepted request) are the XCom
        ``result``. Runs ``request_retrain`` only when a trigger was accepted."""
        from include.mlops.adapters.events import triggering_events
        from include.mlops.runtime import load_runtime
        from include.mlops.steps.governance import govern, trigger_from

        context = get_current_context()
        rt = load_runtime()
        verdicts, accepted = [], None
        for event in triggering_events(context):  # each trigger judged on its own, named by its asset
            verdict, request = govern(
                rt,
                trigger_from(event.extra, event.asset),
                list(event.extra.get("reasons", [])),
                dag_id=context["dag"].dag_id,
                run_id=context["run_id"],
            )
            verdicts.append(verdict.to_dict())
            accepted = accepted or (request or None)
        context["ti"].xcom_push(key=RESULT, value={"verdicts": verdicts, "request": accepted})
        if not accepted:
            log.info("governance refused every trigger of this run: %s", "; ".join(v["reason_code"] for v in verdicts))
        return ["request_retrain"] if accepted else []

    @task(outlets=[RETRAIN_REQUESTED])
    def request_retrain(*, outlet_events: Any = None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        result = get_current_context()["ti"].xcom_pull(task_ids="govern", key=RESULT) or {"verdicts": [], "request": None}
        if not result["request"]:
            raise AirflowSkipException(
                "governance refused every trigger of this run: " + "; ".join(v["reason_code"] for v in result["verdicts"])
            )
        outlet_events[RETRAIN_REQUESTED].extra = result["request"]
        return dict(result["request"])

    govern() >> request_retrain()


retrain_on_drift()
