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
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.adapters.lake import Lake
from include.mlops.domain.spec import Spec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)


class TrainingRefused(Exception):
    """The pipeline refuses to train: the data does not allow a trustworthy candidate."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True)
class Window:
    train_start: date
    train_end: date  # inclusive
    holdout_start: date
    holdout_end: date  # inclusive

    def to_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in asdict(self).items()}

    @property
    def label(self) -> str:
        return f"{self.train_start}..{self.train_end} (holdout {self.holdout_start}..{self.holdout_end})"


def pool_days(lake: Lake) -> list[date]:
    """Days that have at least one accepted batch in the pool."""
    days = []
    for p in lake.pool.glob("day=*"):
        if any(p.glob("*.parquet")):
            try:
                days.append(date.fromisoformat(p.name.removeprefix("day=")))
            except ValueError:
                continue
    return sorted(days)


def plan_window(
    spec: Spec,
    available: list[date],
    *,
    train_start: date | None = None,
    train_end: date | None = None,
    window_days: int | None = None,
    holdout_days: int | None = None,
) -> Window:
    """The training window and the holdout right after it.

    Default: the holdout is the last ``holdout_days`` days of the pool and the window the
    ``window_days`` days before it. With ``train_end`` (and optionally ``train_start``) given, the
    holdout is the ``holdout_days`` days after ``train_end``.
    """
    if not available:
        raise TrainingRefused("empty_pool", "the training pool is empty: no label batch has been accepted yet")
    wdays = window_days or spec.training.window_days
    hdays = holdout_days or spec.training.holdout_days
    if train_end is None:
        holdout_end = available[-1]
        train_end = holdout_end - timedelta(days=hdays)
    if train_start is None:
        train_start = train_end - timedelta(days=wdays - 1)
    if train_start > train_end:
        raise TrainingRefused("bad_window", f"train_start {train_start} is after train_end {train_end}")
    window = Window(train_start, train_end, train_end + timedelta(days=1), train_end + timedelta(days=hdays))
    have = set(available)
    if not any(window.holdout_start <= d <= window.holdout_end for d in have):
        raise TrainingRefused(
            "holdout_missing",
            f"no accepted labels for the holdout {window.holdout_start}..{window.holdout_end} that follows the window "
            f"(the pool covers {available[0]}..{available[-1]})",
            window.to_dict(),
        )
    if not any(window.train_start <= d <= window.train_end for d in have):
        raise TrainingRefused(
            "window_missing", f"no accepted labels in the training window {window.train_start}..{window.train_end}", window.to_dict()
        )
    return window


def load_pool(lake: Lake, start: date, end: date) -> tuple[pd.DataFrame, list[int]]:
    """Pool rows whose day is in [start, end], and the ids of the batches they came from."""
    import pandas as pd

    frames, batch_ids = [], []
    day = start
    while day <= end:
        for f in sorted(lake.pool_partition(day.isoformat()).glob("batch-*.parquet")):
            frames.append(pd.read_parquet(f))
            batch_ids.append(int(f.stem.removeprefix("batch-")))
        day += timedelta(days=1)
    if not frames:
        return pd.DataFrame(), []
    return pd.concat(frames, ignore_index=True), batch_ids


def classification_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Holdout metrics, named like MLflow's builtin classifier metrics."""
    import numpy as np
    from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, f1_score, log_loss, roc_auc_score

    y = np.asarray(y).astype(int)
    pred = (scores >= 0.5).astype(int)
    both = len(set(y.tolist())) == 2
    return {
        "roc_auc": float(roc_auc_score(y, scores)) if both else float("nan"),
        "precision_recall_auc": float(average_precision_score(y, scores)) if both else float("nan"),
        "log_loss": float(log_loss(y, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier_score": float(brier_score_loss(y, scores)),
        "accuracy_score": float(accuracy_score(y, pred)),
        "f1_score": float(f1_score(y, pred, zero_division=0)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "predicted_positive_rate": float(pred.mean()) if len(pred) else float("nan"),
    }


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
    from mlflow.models import infer_signature

    from include.mlops.adapters.registry import TAG_DAG_RUN, TAG_STATUS, mlflow_client, quiet_model_imports
    from include.mlops.domain.drift import reference_stats
    from include.mlops.domain.pipelines import build_pipeline, trusted_types
    from include.mlops.domain.profiles import build_profile, probe_frame

    spec, model = rt.spec, rt.model_name
    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    if run_id:
        existing = find_registered(client, model, run_id)
        if existing:
            log.info("version %s was already registered by run %s: reusing it", existing, run_id)
            mv = client.get_model_version(model, existing)
            run = client.get_run(str(mv.run_id))
            window_tags = json.loads(run.data.tags.get("mlops.window", "{}"))
            if not mv.tags.get(TAG_STATUS):  # the earlier try died before tagging the version: finish it
                _tag_version(client, model, existing, reason, run_id, window_tags, run.data.metrics, run.data.params)
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status="FINISHED")
            return _summary(model, existing, str(mv.run_id), window_tags, run.data.metrics, reason)
        _end_abandoned_runs(client, model, run_id)

    window = plan_window(
        spec, pool_days(rt.lake), train_start=train_start, train_end=train_end, window_days=window_days, holdout_days=holdout_days
    )
    train_df, train_batches = load_pool(rt.lake, window.train_start, window.train_end)
    holdout_df, holdout_batches = load_pool(rt.lake, window.holdout_start, window.holdout_end)
    if len(holdout_df) < spec.training.min_holdout_rows:
        raise TrainingRefused(
            "holdout_too_small",
            f"the holdout {window.holdout_start}..{window.holdout_end} has {len(holdout_df)} labelled rows; "
            f"at least {spec.training.min_holdout_rows} are needed",
            window.to_dict(),
        )
    features, target = spec.feature_names, spec.target.name
    with tempfile.TemporaryDirectory(prefix="train-") as tmp:
        out = Path(tmp)
        (out / "validation").mkdir()
        if len(train_df) == 0:
            raise TrainingRefused("window_missing", f"no rows in the training window {window.label}", window.to_dict())
        gx_summary = _gate_training_set(train_df, spec, out / "validation")

        mlflow.set_tracking_uri(rt.settings.mlflow_tracking_uri)
        mlflow.set_experiment(model)
        with mlflow.start_run(run_name=f"train {window.train_start}..{window.train_end}") as run:
            mlflow.set_tags(
                {
                    "mlops.kind": "training",
                    "mlops.reason": reason,
                    "mlops.window": json.dumps(window.to_dict()),
                    "mlops.train_batch_ids": ",".join(map(str, train_batches)),
                    "mlops.holdout_batch_ids": ",".join(map(str, holdout_batches)),
                    TAG_DAG_RUN: run_id or "",
                    "mlops.dag_id": dag_id or "",
                }
            )
            mlflow.log_params(
                {
                    "pipeline": spec.training.pipeline,
                    **{f"param.{k}": v for k, v in spec.training.params.items()},
                    **window.to_dict(),
                    "train_rows": len(train_df),
                    "holdout_rows": len(holdout_df),
                    "features": ",".join(features),
                    "target": f"{spec.target.source_column} {spec.target.op} {spec.target.value:g}",
                }
            )
            x_train, y_train = train_df[features], train_df[target].astype(int).to_numpy()
            x_hold, y_hold = holdout_df[features], holdout_df[target].astype(int).to_numpy()
            pipe = build_pipeline(spec)
            pipe.fit(x_train, y_train)
            scores = pipe.predict_proba(x_hold)[:, 1]
            metrics = classification_metrics(y_hold, scores)
            train_metrics = classification_metrics(y_train, pipe.predict_proba(x_train)[:, 1])
            mlflow.log_metrics({**metrics, **{f"train_{k}": v for k, v in train_metrics.items()}})
            log.info("trained on %s rows, holdout %s rows: %s", len(train_df), len(holdout_df), metrics)

            _log_datasets(rt, train_df, holdout_df, window, train_batches, holdout_batches)
            mlflow.log_dict(gx_summary, "validation/gx_summary.json")
            mlflow.log_artifacts(str(out / "validation"), "validation")

            ref = out / "reference"
            ref.mkdir()
            profile = build_profile(spec, x_train, scores, y_hold)
            (ref / "profile.json").write_text(json.dumps(profile, indent=1))
            # Precomputed once per version: every monitoring run compares against these statistics.
            (ref / "drift_stats.json").write_text(json.dumps(reference_stats(x_train, spec, score=scores)))
            sample = x_train.sample(n=min(spec.training.reference_rows, len(x_train)), random_state=spec.training.random_state)
            sample.to_parquet(ref / "sample.parquet", index=False)
            preds = holdout_df[[spec.entity_id, spec.time_column, target]].copy()
            preds["score"] = scores
            preds["prediction"] = (scores >= 0.5).astype(int)
            preds.to_parquet(ref / "holdout_predictions.parquet", index=False)
            probes = probe_frame(spec)
            probe_scores = probes[[spec.entity_id]].copy()
            probe_scores["score"] = pipe.predict_proba(probes[features])[:, 1]
            probe_scores.to_parquet(ref / "probe_scores.parquet", index=False)
            mlflow.log_artifacts(str(ref), "reference")
            hold_dir = out / "holdout"
            hold_dir.mkdir()
            holdout_df.to_parquet(hold_dir / "holdout.parquet", index=False)
            mlflow.log_artifacts(str(hold_dir), "holdout")

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
                skops_trusted_types=trusted_types(spec),
            )
            version = str(info.registered_model_version)
            mlflow_run_id = run.info.run_id
    _tag_version(client, model, version, reason, run_id, window.to_dict(), metrics, {"train_rows": len(train_df)})
    return _summary(model, version, mlflow_run_id, window.to_dict(), metrics, reason, len(train_df), len(holdout_df), np.mean(y_train))


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

    for key, value in {
        TAG_STATUS: "candidate",
        TAG_REASON: reason,
        TAG_DAG_RUN: run_id or "",
        "mlops.window": json.dumps(window),
        "mlops.holdout_roc_auc": f"{metrics['roc_auc']:.4f}",
    }.items():
        client.set_model_version_tag(model, version, key, value)
    label = f"{window.get('train_start')}..{window.get('train_end')} (holdout {window.get('holdout_start')}..{window.get('holdout_end')})"
    rows = params.get("train_rows")
    client.update_model_version(
        model, version, description=f"Trained on {label}, {rows} rows ({reason}). Holdout ROC AUC {metrics['roc_auc']:.4f}."
    )


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
    keep = ("roc_auc", "precision_recall_auc", "log_loss", "brier_score", "accuracy_score")
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


def _log_datasets(
    rt: Runtime, train_df: pd.DataFrame, holdout_df: pd.DataFrame, window: Window, train_batches: list[int], holdout_batches: list[int]
) -> None:
    import mlflow
    import mlflow.data.pandas_dataset

    target = rt.spec.target.name
    for df, name, context, batches, (start, end) in (
        (train_df, "training_window", "training", train_batches, (window.train_start, window.train_end)),
        (holdout_df, "holdout", "holdout", holdout_batches, (window.holdout_start, window.holdout_end)),
    ):
        ds = mlflow.data.pandas_dataset.from_pandas(
            df, source=str(rt.lake.pool), name=f"{name} {start}..{end}", targets=target, digest=dataset_digest(df)
        )
        ds.schema = dataset_schema(df)  # a cached property: given, not inferred cell by cell
        mlflow.log_input(ds, context=context, tags={"batch_ids": batch_ids_tag(batches), "days": f"{start}..{end}"})


#: MLflow refuses a dataset input's tag longer than this
MAX_INPUT_TAG = 500


def batch_ids_tag(batches: list[int]) -> str:
    """The batch ids, comma-separated; when that is too long for a tag, the first and last ones
    and the count (the full lists are the run's tags ``mlops.train_batch_ids`` and
    ``mlops.holdout_batch_ids``)."""
    full = ",".join(map(str, batches))
    if len(full) <= MAX_INPUT_TAG:
        return full
    head, tail, n = ",".join(map(str, batches[:20])), ",".join(map(str, batches[-20:])), len(batches)
    return f"{head},...,{tail} ({n} batches)"[:MAX_INPUT_TAG]


def _all_str(s: pd.Series) -> bool:
    return s.dtype.kind == "O" and bool(s.map(type).eq(str).all())


def dataset_digest(df: pd.DataFrame) -> str:
    """What ``mlflow.data.digest_utils.compute_pandas_digest`` returns, without typing every cell
    of the numeric columns (3 CPU s on a three-month training window; 0.1 s this way). Equality
    with MLflow's own is a unit test."""
    import numpy as np
    import pandas as pd
    from mlflow.data.digest_utils import MAX_ROWS, get_normalized_md5_digest

    trimmed = df.head(MAX_ROWS)
    strings = pd.Index([c for c in df.columns if _all_str(df[c])])
    trimmed = trimmed[strings.union(trimmed.select_dtypes(include=[np.number]).columns)]
    parts = [pd.util.hash_pandas_object(trimmed).values, np.int64(len(df)), *[str(c).encode() for c in df.columns]]
    return str(get_normalized_md5_digest(parts))


def dataset_schema(df: pd.DataFrame) -> Any:
    """What ``mlflow.types.utils._infer_schema`` returns for a frame, with numeric and all-string
    columns judged by pandas instead of a Python loop over every cell. Any other column goes
    through MLflow's own per-column inference. Equality with MLflow's own is a unit test."""
    from mlflow.types.schema import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.utils import _infer_pandas_column, _infer_required

    cols: list[ColSpec | TensorSpec] = []
    for name in df.columns:
        s = df[name]
        if s.dtype.kind in "fiub":  # numpy numbers: a missing value can only be a float NaN
            cols.append(ColSpec(type=_infer_pandas_column(s), name=name, required=not bool(s.isna().any())))
        elif len(s) and _all_str(s):
            cols.append(ColSpec(type=DataType.string, name=name, required=True))
        else:
            cols.append(ColSpec(type=_infer_pandas_column(s), name=name, required=_infer_required(s)))
    return Schema(cols)


# -- entry point of the train_candidate DAG ----------------------------------------------------
def run_training(params: dict[str, Any], *, dag_id: str | None, run_id: str | None) -> dict[str, Any]:
    """Train from DAG params (dates as ISO strings or empty); records the decision either way."""
    from include.mlops.adapters.alerts import mark_alerted, raise_alert
    from include.mlops.runtime import load_runtime

    rt = load_runtime()

    def _day(key: str) -> date | None:
        value = params.get(key)
        return date.fromisoformat(str(value)) if value else None

    reason = str(params.get("reason") or "manual")
    if params.get("pipeline"):  # a one-off pipeline (e.g. a fire drill); the spec stays the contract
        spec = rt.spec.model_copy(update={"training": rt.spec.training.model_copy(update={"pipeline": str(params["pipeline"])})})
        rt = replace(rt, spec=spec)
    try:
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
            inputs=summary,
            dag_id=dag_id,
            run_id=run_id,
        )
    return summary
