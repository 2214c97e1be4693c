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
  event's extra; `retrain_on_drift` governs what happens next. `monitor` is a branch: it runs
  `emit_drift` / `emit_decay` only when there is something to emit (the others show as skipped),
  and its full result is the XCom `result`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from include.mlops.adapters.assets import loop_assets, monitoring_schedule
from include.mlops.adapters.model_dags import dag_tags, deployment_models, display_name, model_doc
from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier
from include.mlops.catalog import ModelEntry

#: the XCom key of a monitoring pass's result (the task's return value is its branch choice)
RESULT = "result"
#: follow-up task -> the (unprefixed) asset it emits when the champion shows the condition
EMITTERS = {"emit_drift": "drift_detected", "emit_decay": "performance_degraded"}


def monitor_model_dag(entry: ModelEntry) -> None:
    """monitor_model of ``entry``'s model (the default model's DAG id is plain ``monitor_model``)."""
    assets = loop_assets(entry)
    model = None if entry.default else entry.name  # None: the default model, as named when a task runs

    @dag(
        dag_id=entry.dag_id("monitor_model"),
        dag_display_name=display_name(entry, "monitor_model"),
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(monitoring_schedule(entry), timezone="UTC"), assets=[assets.inference_window_closed]
        ),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={
            "retries": 2,
            "retry_delay": timedelta(seconds=30),
            "on_failure_callback": LoopFailureNotifier(model=model),
            "on_success_callback": LoopRecoveryNotifier(model=model),
        },
        params={
            "window_start": Param(
                None, type=["null", "string"], description="Event-time window start (empty: from the event or the latest day)"
            ),
            "window_end": Param(None, type=["null", "string"], description="Event-time window end (exclusive)"),
            "force": Param(False, type="boolean", description="Judge again a window already judged"),
        },
        tags=dag_tags(entry, "monitoring"),
        doc_md=model_doc(entry, "monitor_model", __doc__),
    )
    def monitor_model() -> None:
        @task.branch
        def monitor() -> list[str]:
            """Judge the windows; the pass's result is the XCom ``result``. Returns the follow-ups to run
            (``emit_drift`` / ``emit_decay``): an event nobody needs costs no task process."""
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.monitoring import event_extra, run_windows

            context = get_current_context()
            params = dict(context["params"])
            windows: list[tuple[str | None, str | None]] = []
            if params.get("window_start") or params.get("window_end"):
                windows.append((params.get("window_start"), params.get("window_end")))
            for events in (context.get("triggering_asset_events") or {}).values():
                for event in events:  # every window announced since the last run, judged in order
                    extra = event.extra or {}
                    windows.append((extra.get("window_start"), extra.get("window_end")))
            force = bool(params.get("force"))
            result = run_windows(load_runtime(model=model), windows, force=force, dag_id=context["dag"].dag_id, run_id=context["run_id"])
            context["ti"].xcom_push(key=RESULT, value=result)
            return [task_id for task_id, asset in EMITTERS.items() if event_extra(result, asset) is not None]

        def _emit(asset: Any, outlet_events: Any) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            from include.mlops.steps.monitoring import event_extra

            result = get_current_context()["ti"].xcom_pull(task_ids="monitor", key=RESULT) or {}
            extra = event_extra(result, assets.step_name(asset.name))
            if extra is None:  # only a manual re-run of this task gets here: monitor chose it otherwise
                raise AirflowSkipException(f"no {asset.name} for the champion in this window")
            outlet_events[asset].extra = extra
            return extra

        @task(outlets=[assets.drift_detected])
        def emit_drift(*, outlet_events: Any = None) -> dict[str, Any]:
            return _emit(assets.drift_detected, outlet_events)

        @task(outlets=[assets.performance_degraded])
        def emit_decay(*, outlet_events: Any = None) -> dict[str, Any]:
            return _emit(assets.performance_degraded, outlet_events)

        monitor() >> [emit_drift(), emit_decay()]

    monitor_model()


for _entry in deployment_models():
    monitor_model_dag(_entry)
