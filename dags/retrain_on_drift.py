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
* **By hand** (*Trigger DAG w/ config*): give a `reason`; the request goes through the same
  governance (cause `manual`, at the event time of the latest served day unless `event_time` is
  given). Without a reason nothing is requested.
* **What the spec counts as a cause** (`retraining`): drift only with `retrain_on_drift`, decay only
  when its bootstrap test is significant with `decay_evidence: significant`, and, with
  `max_model_age_days`, a champion whose data is too old (checked as each inference window closes).
* The run says what was decided and why: in `govern`'s log, its XCom `result` (`summary`), and the
  run's note.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from include.mlops.adapters.assets import LoopAssets, loop_assets
from include.mlops.adapters.model_dags import dag_tags, deployment_models, display_name, model_doc
from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier
from include.mlops.catalog import ModelEntry

log = logging.getLogger(__name__)
#: the XCom key of the governance verdicts (the task's return value is its branch choice)
RESULT = "result"


def _schedule(entry: ModelEntry, assets: LoopAssets) -> Any:
    """Drift and decay events of the model; with a freshness limit in its spec (read at parse time,
    as monitor_model's cron is), every closed inference window too (the champion's age is checked
    in event time)."""
    if entry.spec.retraining.max_model_age_days is not None:
        return assets.drift_detected | assets.performance_degraded | assets.inference_window_closed
    return assets.drift_detected | assets.performance_degraded


def retrain_on_drift_dag(entry: ModelEntry) -> None:
    """retrain_on_drift of ``entry``'s model (the default model's DAG id is plain ``retrain_on_drift``)."""
    assets = loop_assets(entry)
    model = None if entry.default else entry.name  # None: the default model, as named when a task runs

    @dag(
        dag_id=entry.dag_id("retrain_on_drift"),
        dag_display_name=display_name(entry, "retrain_on_drift"),
        schedule=_schedule(entry, assets),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={
            "retries": 1,
            "retry_delay": timedelta(seconds=20),
            "on_failure_callback": LoopFailureNotifier(model=model),
            "on_success_callback": LoopRecoveryNotifier(model=model),
        },
        params={
            "reason": Param(
                None,
                type=["null", "string"],
                description="Why a retrain is requested (a manual trigger needs one; kept in the decision and the request)",
            ),
            "event_time": Param(
                None,
                type=["null", "string"],
                description="Event time of a manual request, ISO (empty: the end of the latest day of served traffic)",
            ),
        },
        tags=dag_tags(entry, "monitoring", "model"),
        doc_md=model_doc(entry, "retrain_on_drift", __doc__),
    )
    def retrain_on_drift() -> None:
        @task.branch
        def govern() -> list[str]:
            """Judge every trigger of this run (its events, or a manual request); the verdicts, the
            accepted request and a summary are the XCom ``result`` and the run's note. Runs
            ``request_retrain`` only when a trigger was accepted."""
            from include.mlops.adapters.events import triggering_events
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.governance import govern_run, note_run

            context = get_current_context()
            rt = load_runtime(model=model)
            dag_id, run_id = context["dag"].dag_id, context["run_id"]
            events = [(assets.step_name(e.asset), e.extra) for e in triggering_events(context)]  # the steps' (unprefixed) names
            result = govern_run(rt, events, dict(context["params"]), dag_id=dag_id, run_id=run_id)
            context["ti"].xcom_push(key=RESULT, value=result)
            log.info("%s", result["summary"])
            if result["verdicts"]:  # a window that only checked freshness leaves no note
                note_run(rt, dag_id, run_id, result["summary"])
            return ["request_retrain"] if result["request"] else []

        @task(outlets=[assets.retrain_requested])
        def request_retrain(*, outlet_events: Any = None) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            result = get_current_context()["ti"].xcom_pull(task_ids="govern", key=RESULT) or {"verdicts": [], "request": None}
            if not result["request"]:
                raise AirflowSkipException(
                    "governance refused every trigger of this run: " + "; ".join(v["reason_code"] for v in result["verdicts"])
                )
            outlet_events[assets.retrain_requested].extra = result["request"]
            return dict(result["request"])

        govern() >> request_retrain()

    retrain_on_drift()


for _entry in deployment_models():
    retrain_on_drift_dag(_entry)
