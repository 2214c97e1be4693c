"""
### ingest_outcomes

Every labelled outcome batch that lands is validated by the spec's Great Expectations suite, then
**accepted** into the training pool and ground truth, or **quarantined** with its reasons.

* **Runs** when a producer touches `_READY` in the model's landing folder (`<lake>/landing/` for
  the default model, `<lake>/landings/<model>/` for the others; asset watcher on
  `label_batches_landed`: event-driven, no worker slot held while waiting), and every 10 minutes
  as a sweep for files dropped without the marker. Trigger it by hand to look right now (params:
  `files` to ingest only some of the waiting files, `reason` kept in the log).
* **Mapped tasks** over the waiting files (at most 2, run side by side, whole days each, so a backlog
  costs a few task starts, not one per day); each label in the grid says what happened
  (`outcomes_2013-01-05.parquet: quarantined (temperature_not_fahrenheit)`).
* **Emits** `training_pool` + `ground_truth` when a batch was accepted, `batch_quarantined` when
  one was not; the event extras list the batches (and the reasons).
* **Revises** (`revise_quality`, after an accepted batch; skipped otherwise) the realized quality
  of the recent judged monitoring windows these labels belong to: the verdict stays, the revision
  is what the trend test and the status page read, and a decay only the late labels show is
  recorded (`decay_revised`) and alerted (docs/signals.md, "Late labels").
* Symbolic links and special files in landing are quarantined unread, as are files over the spec's
  size and row limits (from a parquet file's metadata); a batch the spec accepts is judged against
  the profile learned from accepted batches. A file whose validation crashes is `deferred` (it
  stays in landing, the rest of the chunk goes on) and quarantined as `validation_crashed` after
  `batch.max_validation_attempts`.
* Reports: `<lake>/reports/<model>/ingest/batch-<id>.html`; quarantined files:
  `<lake>/quarantine/<model>/`. Re-running is idempotent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from include.mlops.adapters.assets import loop_assets
from include.mlops.adapters.model_dags import dag_tags, deployment_models, display_name, model_doc
from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier
from include.mlops.catalog import ModelEntry


def ingest_outcomes_dag(entry: ModelEntry) -> None:
    """ingest_outcomes of ``entry``'s model (the default model's DAG id is plain ``ingest_outcomes``)."""
    assets = loop_assets(entry)
    model = None if entry.default else entry.name  # None: the default model, as named when a task runs

    @dag(
        dag_id=entry.dag_id("ingest_outcomes"),
        dag_display_name=display_name(entry, "ingest_outcomes"),
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable("*/10 * * * *", timezone="UTC"),
            assets=[assets.label_batches_landed],
        ),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={
            "retries": 2,
            "retry_delay": timedelta(seconds=10),
            "on_failure_callback": LoopFailureNotifier(model=model),
            "on_success_callback": LoopRecoveryNotifier(model=model),
        },
        params={
            "files": Param(
                None,
                type=["null", "array"],
                items={"type": "string"},
                description="File names in the landing folder to ingest (empty: every waiting file)",
            ),
            "reason": Param(None, type=["null", "string"], description="Why this run was started by hand (written to the task log)"),
        },
        tags=dag_tags(entry, "data"),
        doc_md=model_doc(entry, "ingest_outcomes", __doc__),
    )
    def ingest_outcomes() -> None:
        @task
        def find_batches() -> list[list[str]]:
            import logging

            from include.mlops.steps.ingest import find_batch_groups

            params = get_current_context()["params"]
            groups = find_batch_groups(model=model)
            if params.get("reason"):
                logging.getLogger(__name__).info("started by hand: %s", params["reason"])
            wanted = set(params.get("files") or [])
            if not wanted:
                return groups
            missing = wanted - {f for g in groups for f in g}
            if missing:
                logging.getLogger(__name__).warning("not waiting in the landing folder: %s", ", ".join(sorted(missing)))
            return [kept for kept in ([f for f in g if f in wanted] for g in groups) if kept]

        @task(map_index_template="{{ batch_label }}", max_active_tis_per_dagrun=2)
        def ingest_batches(files: list[str]) -> list[dict[str, Any]]:
            from include.mlops.steps.ingest import ingest_files, task_label

            context = get_current_context()
            results = ingest_files(files, dag_id=context["dag"].dag_id, run_id=context["run_id"], model=model)
            # within Airflow's 250-character label column (PostgreSQL refuses longer ones)
            context["batch_label"] = task_label(results, files)  # type: ignore[typeddict-unknown-key]
            return results

        @task(outlets=[assets.training_pool, assets.ground_truth])
        def publish_accepted(results: list[list[dict[str, Any]]], *, outlet_events: Any = None) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            from include.mlops.steps.ingest import summarize

            summary = summarize([r for group in results for r in group])
            if not summary["accepted"]:
                raise AirflowSkipException("no batch was accepted in this run")
            extra = {"batches": summary["accepted"], "rows": summary["accepted_rows"]}
            outlet_events[assets.training_pool].extra = extra
            outlet_events[assets.ground_truth].extra = extra
            return extra

        @task(outlets=[assets.batch_quarantined])
        def publish_quarantined(results: list[list[dict[str, Any]]], *, outlet_events: Any = None) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            from include.mlops.steps.ingest import summarize

            summary = summarize([r for group in results for r in group])
            if not summary["quarantined"]:
                raise AirflowSkipException("no batch was quarantined in this run")
            extra = {"batches": summary["quarantined"]}
            outlet_events[assets.batch_quarantined].extra = extra
            return extra

        @task
        def revise_quality(accepted: dict[str, Any]) -> dict[str, Any]:
            """Labels that arrived after a window's verdict: the recent judged windows whose labelled
            rows changed are measured again (steps/monitoring/revision.py)."""
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.monitoring.revision import revise_window_quality

            context = get_current_context()
            return revise_window_quality(load_runtime(model=model), dag_id=context["dag"].dag_id, run_id=context["run_id"])

        results = ingest_batches.expand(files=find_batches())
        revise_quality(publish_accepted(results))
        publish_quarantined(results)

    ingest_outcomes()


for _entry in deployment_models():
    ingest_outcomes_dag(_entry)
