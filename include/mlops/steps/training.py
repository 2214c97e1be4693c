"""Train a candidate: build the window from the validated pool, gate it with Great Expectations,
fit the spec's pipeline, evaluate on the time-based holdout that follows the window, log everything
to MLflow and register a new model version.

Logged with each version (run artifacts): the model with signature and input example, params,
holdout metrics, the datasets used (MLflow dataset inputs tagged with their batch ids), the GX
result of the training set, the reference profile (training inputs + holdout predictions), the
holdout itself, and the version's scores on the spec's probe set.

A retried task does not register twice: a version tagged with the same DAG run id is reused.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, replace
from datetime import date
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.domain.spec import Spec
from include.mlops.steps.training_datasets import log_datasets
from include.mlops.steps.training_window import TrainingRefused, Window, check_rows, load_pool, plan_window, pool_days

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)


def pip_requirements() -> list[str]:
    """Exact versions of what the model needs at load time (skips MLflow's slow inference)."""
    return [f"{name}=={pkg_version(name)}" for name in ("scikit-learn", "pandas", "numpy", "scipy", "skops", "mlflow")]


def _runs_of(client: Any, model: str, dag_run_id: str) -> list[Any]:
    """The MLflow training runs an earlier try of this DAG run started (tagged when they start)."""
    experiment = client.get_experiment_by_name(model)
    if experiment is None:
        return []
    return list(client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlops.dag_run_id` = '{dag_run_id}'", max_results=50))


def find_registered(client: Any, model: str, dag_run_id: str) -> str | None:
    """A version already registered by this DAG run (a retry must not register a second one).

    Found by the version's tag, or, when the try died between registering the version and tagging
    it, by the training run it was logged from (that run is tagged as it starts)."""
    from mlflow.exceptions import MlflowException

    try:
        found = {int(v.version) for v in client.search_model_versions(f"name = '{model}' and tags.`mlops.dag_run_id` = '{dag_run_id}'")}
        for run in _runs_of(client, model, dag_run_id):
            found |= {int(v.version) for v in client.search_model_versions(f"name = '{model}' and run_id = '{run.info.run_id}'")}
    except MlflowException:
        return None
    return str(max(found)) if found else None


def _end_abandoned_runs(client: Any, model: str, dag_run_id: str) -> None:
    """Training runs of earlier tries that died (still RUNNING in MLflow) are marked KILLED."""
    for run in _runs_of(client, model, dag_run_id):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status="KILLED")
            log.info("MLflow run %s of an earlier try of %s marked KILLED", run.info.run_id, dag_run_id)


def _gate_training_set(df: pd.DataFrame, spec: Spec, out_dir: Path) -> dict[str, Any]:
    from include.mlops.domain.validation import render_report, validate_frame

    outcome = validate_frame(df, spec, None, training=True)
    (out_dir / "gx_training_set.json").write_text(json.dumps(outcome.gx_result, indent=1, default=str))
    (out_dir / "gx_training_set.html").write_text(
        render_report("Training set", outcome.reasons, outcome.checks, {"rows": outcome.rows, "model": spec.name})
    )
    if not outcome.passed:
        raise TrainingRefused(
            "training_set_invalid",
            "the training set failed its Great Expectations gate: " + "; ".join(r.message for r in outcome.reasons),
            {"reason_codes": outcome.reason_codes, "reasons": [r.to_dict() for r in outcome.reasons]},
        )
    return {"success": True, "checks": len(outcome.checks), "rows": outcome.rows}


def train_candidate(
    rt: Runtime,
    *,
    train_start: date | None = None,
    train_end: date | None = None,
    window_days: int | None = None,
    holdout_days: int | None = None,
    reason: str = "manual",
    dag_id: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate, log and register one candidate; returns a small JSON-able summary."""
    import mlflow
    import numpy as np

    from include.mlops.adapters.registry import mlflow_client

    spec, model = rt.spec, rt.model_name
    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    if run_id:
        existing = find_registered(client, model, run_id)
        if existing:
            if rt.store.model_digest(model, existing) is None:  # the earlier try died before recording it
                _record_digest(rt, client, existing, run_id)
            return _finish_registered(client, model, existing, reason, run_id)
        _end_abandoned_runs(client, model, run_id)

    window = plan_window(
        spec, pool_days(rt.lake), train_start=train_start, train_end=train_end, window_days=window_days, holdout_days=holdout_days
    )
    train_df, train_batches = load_pool(rt.lake, window.train_start, window.train_end)
    holdout_df, holdout_batches = load_pool(rt.lake, window.holdout_start, window.holdout_end)
    check_rows(spec, window, len(train_df), len(holdout_df))
    with tempfile.TemporaryDirectory(prefix="train-") as tmp:
        out = Path(tmp)
        (out / "validation").mkdir()
        gx_summary = _gate_training_set(train_df, spec, out / "validation")
        sets = _Sets.of(spec, train_df, train_batches, holdout_df, holdout_batches)

        mlflow.set_tracking_uri(rt.settings.mlflow_tracking_uri)
        mlflow.set_experiment(model)
        with mlflow.start_run(run_name=f"train {window.train_start}..{window.train_end}") as run:
            _log_setup(spec, window, sets, reason=reason, dag_id=dag_id, run_id=run_id)
            pipe, scores, metrics = _fit(spec, sets)
            served = _refit(spec, sets) if spec.training.refit_with_holdout else pipe
            log_datasets(rt, train_df, holdout_df, window, train_batches, holdout_batches)
            mlflow.log_dict(gx_summary, "validation/gx_summary.json")
            mlflow.log_artifacts(str(out / "validation"), "validation")
            _log_reference(spec, pipe, sets, scores, out, served=served)
            version = _log_model(spec, model, served, sets.x_train)
            mlflow_run_id = run.info.run_id
    _record_digest(rt, client, version, run_id)
    params = {"train_rows": len(train_df)}
    if spec.training.refit_with_holdout:
        params["refit_rows"] = len(train_df) + len(holdout_df)
    _tag_version(client, model, version, reason, run_id, window.to_dict(), metrics, params)
    return _summary(model, version, mlflow_run_id, window.to_dict(), metrics, reason, len(train_df), len(holdout_df), np.mean(sets.y_train))


def _finish_registered(client: Any, model: str, version: str, reason: str, run_id: str) -> dict[str, Any]:
    """The version an earlier try of this DAG run registered: finish what that try left undone
    (its tags, its MLflow run) and return its summary instead of training again."""
    from include.mlops.adapters.registry import TAG_STATUS

    log.info("version %s was already registered by run %s: reusing it", version, run_id)
    mv = client.get_model_version(model, version)
    run = client.get_run(str(mv.run_id))
    window_tags = json.loads(run.data.tags.get("mlops.window", "{}"))
    if not mv.tags.get(TAG_STATUS):  # the earlier try died before tagging the version: finish it
        _tag_version(client, model, version, reason, run_id, window_tags, run.data.metrics, run.data.params)
    if run.info.status == "RUNNING":
        client.set_terminated(run.info.run_id, status="FINISHED")
    return _summary(model, version, str(mv.run_id), window_tags, run.data.metrics, reason)


@dataclass(frozen=True)
class _Sets:
    """The window's rows and the batches they came from, split into model inputs and labels."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    train_batches: list[int]
    holdout_batches: list[int]
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_hold: pd.DataFrame
    y_hold: np.ndarray

    @classmethod
    def of(cls, spec: Spec, train: pd.DataFrame, train_batches: list[int], holdout: pd.DataFrame, holdout_batches: list[int]) -> _Sets:
        from include.mlops.domain.tasks import labels

        features, target = spec.feature_names, spec.target.name
        y_train, y_hold = labels(spec.task, train[target]), labels(spec.task, holdout[target])
        return cls(train, holdout, train_batches, holdout_batches, train[features], y_train, holdout[features], y_hold)


def _log_setup(spec: Spec, window: Window, sets: _Sets, *, reason: str, dag_id: str | None, run_id: str | None) -> None:
    """The training run's tags (why, which window and batches, which DAG run) and params."""
    import mlflow

    from include.mlops.adapters.registry import TAG_DAG_RUN

    mlflow.set_tags(
        {
            "mlops.kind": "training",
            "mlops.reason": reason,
            "mlops.window": json.dumps(window.to_dict()),
            "mlops.train_batch_ids": ",".join(map(str, sets.train_batches)),
            "mlops.holdout_batch_ids": ",".join(map(str, sets.holdout_batches)),
            TAG_DAG_RUN: run_id or "",
            "mlops.dag_id": dag_id or "",
        }
    )
    mlflow.log_params(
        {
            "pipeline": spec.training.pipeline,
            **{f"param.{k}": v for k, v in spec.training.params.items()},
            **window.to_dict(),
            "train_rows": len(sets.train),
            "holdout_rows": len(sets.holdout),
            "features": ",".join(spec.feature_names),
            "task": spec.task,
            "target": target_rule(spec),
        }
    )


def target_rule(spec: Spec) -> str:
    """The target in words: the classifier's rule (``arr_delay > 15``) or the regressor's outcome."""
    t = spec.target
    return t.source_column if t.op is None else f"{t.source_column} {t.op} {float(t.value or 0.0):g}"


def _fit(spec: Spec, sets: _Sets) -> tuple[Any, np.ndarray, dict[str, float]]:
    """Fit the spec's pipeline; log holdout and training metrics (the task's: ``domain.tasks``).
    Returns the pipeline, its holdout scores and its holdout metrics."""
    import mlflow

    from include.mlops.domain.pipelines import build_pipeline
    from include.mlops.domain.tasks import evaluate
    from include.mlops.domain.tasks import scores as task_scores

    pipe = build_pipeline(spec)
    pipe.fit(sets.x_train, sets.y_train)
    scores = task_scores(spec.task, pipe, sets.x_hold)
    metrics = evaluate(spec.task, sets.y_hold, scores)
    train_metrics = evaluate(spec.task, sets.y_train, task_scores(spec.task, pipe, sets.x_train))
    mlflow.log_metrics({**metrics, **{f"train_{k}": v for k, v in train_metrics.items()}})
    log.info("trained on %s rows, holdout %s rows: %s", len(sets.train), len(sets.holdout), metrics)
    return pipe, scores, metrics


def _refit(spec: Spec, sets: _Sets) -> Any:
    """``training.refit_with_holdout``: the spec's pipeline fitted again on the window and its
    holdout (the model that is registered and served; the gates judge the validation fit's holdout
    scores, recorded with the reference). Tags the run ``mlops.refit`` so the gates know."""
    import mlflow
    import numpy as np
    import pandas as pd

    from include.mlops.adapters.registry import TAG_REFIT
    from include.mlops.domain.pipelines import build_pipeline

    pipe = build_pipeline(spec)
    pipe.fit(pd.concat([sets.x_train, sets.x_hold], ignore_index=True), np.concatenate([sets.y_train, sets.y_hold]))
    rows = len(sets.train) + len(sets.holdout)
    mlflow.set_tag(TAG_REFIT, "window+holdout")
    mlflow.log_param("refit_rows", rows)
    log.info("refitted on the window and its holdout (%s rows): this fit is the version registered", rows)
    return pipe


def _log_reference(spec: Spec, pipe: Any, sets: _Sets, scores: np.ndarray, out: Path, *, served: Any) -> None:
    """What monitoring and the gates compare against later: the reference profile, drift
    statistics, a sample of training inputs, holdout predictions, probe scores; and the holdout.
    ``pipe`` is the validation fit (its holdout ``scores``); ``served`` the model registered
    (``pipe`` itself, or its refit: the probe scores are that model's, the probe gate checks the artifact served)."""
    import mlflow

    from include.mlops.domain.profiles import build_profile, probe_frame
    from include.mlops.domain.tasks import predictions
    from include.mlops.domain.tasks import scores as task_scores
    from include.mlops.steps.monitoring.reference import CALIBRATION_FILE
    from include.mlops.steps.training_reference import calibrates_score, reference_statistics

    ref = out / "reference"
    ref.mkdir()
    profile = build_profile(spec, sets.x_train, scores, sets.y_hold)
    (ref / "profile.json").write_text(json.dumps(profile, indent=1))
    # Precomputed once per version: every monitoring run compares against these statistics (and
    # the calibrated thresholds, when monitoring.drift_calibration is on).
    train_scores = task_scores(spec.task, pipe, sets.x_train) if calibrates_score(spec) else None
    stats, calibration = reference_statistics(spec, sets.train, scores, train_scores)
    (ref / "drift_stats.json").write_text(json.dumps(stats))
    if calibration is not None:
        (ref / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict()))
    sample = sets.x_train.sample(n=min(spec.training.reference_rows, len(sets.x_train)), random_state=spec.training.random_state)
    sample.to_parquet(ref / "sample.parquet", index=False)
    preds = sets.holdout[[spec.entity_id, spec.time_column, spec.target.name]].copy()
    preds["score"] = scores
    preds["prediction"] = predictions(spec.task, scores)
    preds.to_parquet(ref / "holdout_predictions.parquet", index=False)
    probes = probe_frame(spec)
    probe_scores = probes[[spec.entity_id]].copy()
    probe_scores["score"] = task_scores(spec.task, served, probes[spec.feature_names])
    probe_scores.to_parquet(ref / "probe_scores.parquet", index=False)
    mlflow.log_artifacts(str(ref), "reference")
    hold_dir = out / "holdout"
    hold_dir.mkdir()
    sets.holdout.to_parquet(hold_dir / "holdout.parquet", index=False)
    mlflow.log_artifacts(str(hold_dir), "holdout")


def _log_model(spec: Spec, model: str, pipe: Any, x_train: pd.DataFrame) -> str:
    """Log the fitted pipeline with its signature and an input example; register it as a new
    version of ``model`` and return that version."""
    import mlflow
    from mlflow.models import infer_signature

    from include.mlops.adapters.registry import quiet_model_imports
    from include.mlops.domain.pipelines import trusted_types

    example = x_train.dropna().head(5)
    if example.empty:
        example = x_train.head(5)
    quiet_model_imports()
    signature = infer_signature(x_train.head(500), pipe.predict(x_train.head(500)))
    info = mlflow.sklearn.log_model(
        pipe,
        name="model",
        registered_model_name=model,
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(),
        serialization_format="skops",
        skops_trusted_types=trusted_types(spec),
    )
    return str(info.registered_model_version)


def _record_digest(rt: Runtime, client: Any, version: str, run_id: str | None) -> None:
    """The model file's sha256, recorded by the loop in the ops store: every later load checks it
    (:mod:`include.mlops.adapters.model_artifacts`)."""
    from include.mlops.adapters.model_artifacts import record_model_digest
    from include.mlops.domain.pipelines import trusted_types

    record_model_digest(
        rt.store,
        client,
        rt.model_name,
        version,
        trusted_types(rt.spec),
        tracking_uri=rt.settings.mlflow_tracking_uri,
        recorded_by=f"training {run_id or 'manual'}",
    )


#: The holdout metric a version is tagged and described with (the first its metrics have): ROC AUC
#: for a classifier, MAE for a regressor; and its name for people.
HEADLINE_METRICS = {"roc_auc": "ROC AUC", "mae": "MAE"}


def _tag_version(
    client: Any,
    model: str,
    version: str,
    reason: str,
    run_id: str | None,
    window: dict[str, Any],
    metrics: dict[str, float],
    params: dict[str, Any],
) -> None:
    from include.mlops.adapters.registry import TAG_DAG_RUN, TAG_REASON, TAG_STATUS

    headline = next((m for m in HEADLINE_METRICS if m in metrics), None)
    for key, value in {
        TAG_STATUS: "candidate",
        TAG_REASON: reason,
        TAG_DAG_RUN: run_id or "",
        "mlops.window": json.dumps(window),
        **({f"mlops.holdout_{headline}": f"{float(metrics[headline]):.4f}"} if headline else {}),
    }.items():
        client.set_model_version_tag(model, version, key, value)
    label = f"{window.get('train_start')}..{window.get('train_end')} (holdout {window.get('holdout_start')}..{window.get('holdout_end')})"
    rows = params.get("train_rows")
    score = f" Holdout {HEADLINE_METRICS[headline]} {float(metrics[headline]):.4f}." if headline else ""
    refit = params.get("refit_rows")
    refit_note = f" Validated so, then refitted on window + holdout ({refit} rows): this is the refit." if refit else ""
    client.update_model_version(model, version, description=f"Trained on {label}, {rows} rows ({reason}).{score}{refit_note}")


def _summary(
    model: str,
    version: str,
    mlflow_run_id: str,
    window: dict[str, Any],
    metrics: dict[str, float],
    reason: str,
    train_rows: int | None = None,
    holdout_rows: int | None = None,
    label_rate: float | None = None,
) -> dict[str, Any]:
    keep = ("roc_auc", "precision_recall_auc", "log_loss", "brier_score", "accuracy_score", "mae", "rmse", "r2", "mean_target")
    return {
        "model": model,
        "version": version,
        "mlflow_run_id": mlflow_run_id,
        "window": window,
        "metrics": {k: round(float(metrics[k]), 6) for k in keep if k in metrics},
        "reason": reason,
        "train_rows": train_rows,
        "holdout_rows": holdout_rows,
        "train_label_rate": None if label_rate is None else round(float(label_rate), 4),
    }


# -- entry point of the train_candidate DAG ----------------------------------------------------
def _allowed_pipeline(rt: Runtime, name: str) -> Spec:
    """The spec training with the pipeline a run named: only the spec's own or one on the
    allow-list (MLOPS_TRAINING_PIPELINES); anything else is refused before it is imported."""
    from include.mlops.domain.pipelines import PipelineNotAllowed, with_pipeline

    try:
        return with_pipeline(rt.spec, name, rt.settings.training_pipelines)
    except PipelineNotAllowed as exc:
        raise TrainingRefused("pipeline_not_allowed", str(exc), {"pipeline": name[:200], "allowed": exc.allowed}) from None


def run_training(params: dict[str, Any], *, dag_id: str | None, run_id: str | None, model: str | None = None) -> dict[str, Any]:
    """Train ``model`` (``None``: the default model) from DAG params (dates as ISO strings or empty);
    records the decision either way."""
    from include.mlops.adapters.alerts import mark_alerted, raise_alert
    from include.mlops.runtime import load_runtime

    rt = load_runtime(model=model)

    def _day(key: str) -> date | None:
        value = params.get(key)
        return date.fromisoformat(str(value)) if value else None

    reason = str(params.get("reason") or "manual")
    try:
        if params.get("pipeline"):  # a one-off pipeline (e.g. a fire drill); the spec stays the contract
            rt = replace(rt, spec=_allowed_pipeline(rt, str(params["pipeline"])))
        summary = train_candidate(
            rt,
            train_start=_day("train_start"),
            train_end=_day("train_end"),
            window_days=int(params["window_days"]) if params.get("window_days") else None,
            holdout_days=int(params["holdout_days"]) if params.get("holdout_days") else None,
            reason=reason,
            dag_id=dag_id,
            run_id=run_id,
        )
    except TrainingRefused as exc:
        rt.store.record_decision(
            rt.model_name,
            "training",
            "refused",
            exc.code,
            subject="training window",
            reasons=[exc.message],
            inputs={"params": params, **exc.details},
            dag_id=dag_id,
            run_id=run_id,
        )
        alert = raise_alert(
            rt.store,
            rt.model_name,
            severity="warning",
            kind="training_refused",
            dedupe_key=f"training_refused:{exc.code}",
            message=f"training refused ({exc.code}): {exc.message}",
            payload={"params": params, "run_id": run_id},
        )
        raise mark_alerted(exc, alert) from None
    already = any(d["run_id"] == run_id and d["outcome"] == "registered" for d in rt.store.list_decisions(rt.model_name, "training"))
    if run_id is None or not already:
        rt.store.record_decision(
            rt.model_name,
            "training",
            "registered",
            "candidate_trained",
            subject=f"version {summary['version']}",
            version=summary["version"],
            inputs=summary,
            dag_id=dag_id,
            run_id=run_id,
        )
    return summary
