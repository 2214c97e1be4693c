"""
### check_early_window

The bake window after every deployment. Watches the new version on live traffic until it has
scored `early_window.min_requests` requests (or `max_minutes` pass), then compares it with the
champion over the same period: error rate, p95 latency (absolute and vs the champion), share of
schema-rejected requests, output shift (Evidently PSI of scores and predicted classes vs its own
holdout predictions and vs the champion's live output), CPU and memory of the serving process.

* **Hard breach** (thresholds in the spec's `early_window`): rolled back at once (challenger
  alias removed, or the champion restored from the ledger), ledger row, critical alert, decision
  with the breached signals and their values; emits `model_rolled_back`.
* **Pass**: emits `early_window_passed` (promote_or_rollback takes it from there).
* **Too few requests** when the window ends, by `early_window.on_inconclusive`: `keep` (the
  default) inconclusive, nothing changes, a person decides (warning alert); `extend` waits
  `max_minutes` once more, then rolls back; `rollback` rolls back at once. With `extend` or
  `rollback` a canary never keeps serving on an unjudged window.
* **Errors vs the champion** (`early_window.max_error_rate_increase`): the new version's error rate
  minus the champion's over the same window above it is a breach.
* Waiting holds no worker slot (sensor in reschedule mode). The Evidently HTML report is kept
  under `<lake>/reports/<model>/early_window/` and linked from the decision.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, PokeReturnValue, dag, get_current_context, task

from include.mlops.adapters.assets import loop_assets
from include.mlops.adapters.model_dags import dag_tags, deployment_models, display_name, model_doc
from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier
from include.mlops.adapters.registry import ALIAS_POOL
from include.mlops.catalog import ModelEntry


def check_early_window_dag(entry: ModelEntry) -> None:
    """check_early_window of ``entry``'s model (the default model's DAG id is plain ``check_early_window``)."""
    assets = loop_assets(entry)
    model = None if entry.default else entry.name  # None: the default model, as named when a task runs

    @dag(
        dag_id=entry.dag_id("check_early_window"),
        dag_display_name=display_name(entry, "check_early_window"),
        schedule=[assets.model_deployed],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={
            "retries": 1,
            "retry_delay": timedelta(seconds=15),
            "on_failure_callback": LoopFailureNotifier(model=model),
            "on_success_callback": LoopRecoveryNotifier(model=model),
        },
        params={
            "version": Param(None, type=["null", "string", "integer"], description="Deployed version to watch (empty: the triggering one)")
        },
        tags=dag_tags(entry, "model", "deployment"),
        doc_md=model_doc(entry, "check_early_window", __doc__),
    )
    def check_early_window() -> None:
        @task
        def start() -> dict[str, Any]:
            from include.mlops.adapters.events import triggering_events
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.release import find_release, serving_process

            context = get_current_context()
            version = context["params"].get("version") or triggering_events(context).first("version")
            rt = load_runtime(model=model)
            release = find_release(rt, str(version) if version else None)
            return {"release": release.to_dict(), "serving_at_start": serving_process(rt.settings.serving_url)}

        @task.sensor(poke_interval=10, timeout=timedelta(hours=6), mode="reschedule")
        def wait_for_traffic(state: dict[str, Any]) -> PokeReturnValue:
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.release import Release, poke

            done, info = poke(load_runtime(model=model), Release(**state["release"]))
            return PokeReturnValue(is_done=done, xcom_value=info)

        @task
        def judge(state: dict[str, Any], traffic: dict[str, Any]) -> dict[str, Any]:
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.release import Release, judge, record_window

            context = get_current_context()
            rt = load_runtime(model=model)
            rel = Release(**state["release"])
            report_dir = rt.lake.root / "reports" / rt.model_name / "early_window" / context["run_id"].replace(":", "_")
            verdict, inputs = judge(rt, rel, state.get("serving_at_start"), report_dir)
            return record_window(rt, rel, verdict, inputs, dag_id=context["dag"].dag_id, run_id=context["run_id"])

        @task.branch
        def route(result: dict[str, Any]) -> str:
            return {"rollback": "roll_back", "passed": "passed"}.get(result["verdict"]["outcome"], "inconclusive")

        @task(outlets=[assets.model_rolled_back], pool=ALIAS_POOL)
        def roll_back(result: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.release import Release, roll_back_release

            context = get_current_context()
            out = roll_back_release(
                load_runtime(model=model),
                Release(**result["release"]),
                result["verdict"]["reasons"],
                dag_id=context["dag"].dag_id,
                run_id=context["run_id"],
            )
            outlet_events[assets.model_rolled_back].extra = {**out, "reasons": result["verdict"]["reasons"], "report": result["report"]}
            return out

        @task(outlets=[assets.early_window_passed])
        def passed(result: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
            extra = {
                "version": result["release"]["version"],
                "strategy": result["release"]["strategy"],
                "signals": result["verdict"]["details"],
            }
            outlet_events[assets.early_window_passed].extra = extra
            return extra

        @task
        def inconclusive(result: dict[str, Any]) -> dict[str, Any]:
            return {"version": result["release"]["version"], "reasons": result["verdict"]["reasons"]}

        state = start()
        result = judge(state, wait_for_traffic(state))
        route(result) >> [roll_back(result), passed(result), inconclusive(result)]

    check_early_window()


for _entry in deployment_models():
    check_early_window_dag(_entry)
