"""
### train_candidate

Trains a candidate model on a window of the validated training pool and registers it in MLflow.

* **Runs** on a `retrain_requested` asset event (its extra may name the window) and on manual
  trigger (params below; empty dates = the spec's policy: the newest `holdout_days` of the pool are
  the holdout and the `window_days` before them the training window).
* **Refuses to train** when the assembled training set fails its Great Expectations gate or the
  window/holdout has too few labels, or when the `pipeline` param (or the event's extra) names a
  factory that is neither the spec's nor in `MLOPS_TRAINING_PIPELINES` (nothing is imported): the
  run fails with the reason, a decision and an alert.
* **Logs** params, holdout metrics, the model (signature, input example), the datasets with their
  batch ids, the GX result, the reference profile, the holdout and probe scores; **registers** a
  new version tagged `mlops.status=candidate`; **emits** `candidate_registered` (extra: version).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from include.mlops.adapters.assets import loop_assets
from include.mlops.adapters.model_dags import dag_tags, deployment_models, display_name, model_doc
from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier
from include.mlops.catalog import ModelEntry


def train_candidate_dag(entry: ModelEntry) -> None:
    """train_candidate of ``entry``'s model (the default model's DAG id is plain ``train_candidate``)."""
    assets = loop_assets(entry)
    model = None if entry.default else entry.name  # None: the default model, as named when a task runs

    @dag(
        dag_id=entry.dag_id("train_candidate"),
        dag_display_name=display_name(entry, "train_candidate"),
        schedule=[assets.retrain_requested],
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
            "train_start": Param(
                None, type=["null", "string"], format="date", description="First day of the training window (empty: policy)"
            ),
            "train_end": Param(None, type=["null", "string"], format="date", description="Last day of the training window (empty: policy)"),
            "window_days": Param(None, type=["null", "integer"], minimum=1, description="Days in the window (empty: spec)"),
            "holdout_days": Param(None, type=["null", "integer"], minimum=1, description="Holdout days after the window (empty: spec)"),
            "reason": Param("manual", type="string", description="Why this candidate is trained (kept with the version)"),
            "pipeline": Param(
                None,
                type=["null", "string"],
                description="module:function of another pipeline factory, one of MLOPS_TRAINING_PIPELINES (empty: the spec's)",
            ),
        },
        tags=dag_tags(entry, "model"),
        doc_md=model_doc(entry, "train_candidate", __doc__),
    )
    def train_candidate() -> None:
        @task(outlets=[assets.candidate_registered])
        def train(*, outlet_events: Any = None) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            from include.mlops.steps.training import run_training
            from include.mlops.steps.training_window import TrainingRefused

            context = get_current_context()
            params = dict(context["params"])
            for events in (context.get("triggering_asset_events") or {}).values():
                for event in events:  # a governed retrain request names its window and reason
                    params.update({k: v for k, v in (event.extra or {}).items() if k in params and v not in (None, "")})
            try:
                summary = run_training(params, dag_id=context["dag"].dag_id, run_id=context["run_id"], model=model)
            except TrainingRefused as exc:
                raise AirflowFailException(f"training refused ({exc.code}): {exc.message}") from exc
            outlet_events[assets.candidate_registered].extra = {
                "version": summary["version"],
                "metrics": summary["metrics"],
                "window": summary["window"],
            }
            return summary

        train()

    train_candidate()


for _entry in deployment_models():
    train_candidate_dag(_entry)
