"""
### monitor_model

Every window of live traffic, for the champion and the challenger: data drift per feature and
dataset drift, prediction drift, input quality (the spec's GX suite, schema-rejected requests),
realized quality once labels have arrived, probe-set consistency between the live API and the
registry artifact, and system stability (errors, latency).

* **Runs** on the spec's cron (`monitoring.schedule`) and whenever `inference_window_closed` is
  announced (a replay announces each simulated day, so it need not wait for the clock). Windows are
  in event time (`monitoring.window_hours`); a window with too few rows says so.
* **Writes** an Evidently HTML report + JSON summary per version and window
  (`<lake>/reports/<model>/monitoring/v<n>/`), snapshots to the Evidently workspace (dashboards
  over time), metrics on the version's MLflow monitoring run, and a decision: healthy, warning,
  drift, decay or insufficient_data with reason codes.
* **Emits** `drift_detected` / `performance_degraded` (champion only) with the reasons in the
  event's extra; `retrain_on_drift` governs what happens next.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from include.mlops.assets import DRIFT_DETECTED, INFERENCE_WINDOW_CLOSED, PERFORMANCE_DEGRADED, monitoring_schedule
from include.mlops.notifiers import LoopFailureNotifier


@dag(
    dag_id="monitor_model",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(monitoring_schedule(), timezone="UTC"), assets=[INFERENCE_WINDOW_CLOSED]),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "on_failure_callback": LoopFailureNotifier()},
    params={
        "window_start": Param(
            None, type=["null", "string"], description="Event-time window start (empty: from the event or the latest day)"
        ),
        "window_end": Param(None, type=["null", "string"], description="Event-time window end (exclusive)"),
        "force": Param(False, type="boolean", description="Judge again a window already judged"),
    },
    tags=["mlops-loop", "monitoring"],
    doc_md=__doc__,
)
def monitor_model() -> None:
    @task
    def monitor() -> dict[str, Any]:
        from include.mlops.monitoring import run_windows
        from include.mlops.runtime import load_runtime

        context = get_current_context()
        params = dict(context["params"])
        windows: list[tuple[str | None, str | None]] = []
        if params.get("window_start") or params.get("window_end"):
            windows.append((params.get("window_start"), params.get("window_end")))
        for events in (context.get("triggering_asset_events") or {}).values():
            for event in events:  # every window announced since the last run, judged in order
                extra = event.extra or {}
                windows.append((extra.get("window_start"), extra.get("window_end")))
        return run_windows(load_runtime(), windows, force=bool(params.get("force")), dag_id=context["dag"].dag_id, run_id=context["run_id"])

    @task(outlets=[DRIFT_DETECTED])
    def emit_drift(result: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from include.mlops.monitoring import event_extra

        extra = event_extra(result, "drift_detected")
        if extra is None:
            raise AirflowSkipException("no drift for the champion in this window")
        outlet_events[DRIFT_DETECTED].extra = extra
        return extra

    @task(outlets=[PERFORMANCE_DEGRADED])
    def emit_decay(result: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from include.mlops.monitoring import event_extra

        extra = event_extra(result, "performance_degraded")
        if extra is None:
            raise AirflowSkipException("no decay for the champion in this window")
        outlet_events[PERFORMANCE_DEGRADED].extra = extra
        return extra

    result = monitor()
    emit_drift(result)
    emit_decay(result)


monitor_model()
