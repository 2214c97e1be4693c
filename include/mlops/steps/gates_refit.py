"""What the ``evaluation`` gate needs beyond MLflow's evaluation: a candidate refitted on its holdout
(``training.refit_with_holdout``) is judged by its validation fit's recorded holdout scores, and the
champion is compared only on the holdout rows it has not trained on (the backtest calls the same
:func:`champion_seen_rows` and :func:`data_end`)."""

from __future__ import annotations

import json
from datetime import date
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.domain.spec import Spec
    from include.mlops.runtime import Runtime
    from include.mlops.steps.deploy import Candidate
    from include.mlops.steps.gates import GateResult


def champion_seen_rows(days: Any, champion_end: date | None) -> Any:
    """Which holdout rows (their event ``days``) the champion has trained on: those up to the last day
    of its data (``champion_end``: its window's ``train_end``, or ``holdout_end`` when it was refitted on
    its holdout, :func:`data_end`). None when either is unknown (no comparison is restricted). A
    champion retrained weekly ends before the next candidate's holdout begins; one trained days
    before (a manual retrain, the demo's fragile drill on the champion's own window) has seen some
    or all of it and would win there by memory: the gate compares only on the rows it has not seen."""
    import numpy as np

    if days is None or champion_end is None:
        return None
    return np.asarray([d <= champion_end for d in days], dtype=bool)


def data_end(window: dict[str, Any], *, refit: bool) -> date | None:
    """The last day of data a version of ``window`` (``Window.to_dict()``) trained on."""
    key = "holdout_end" if refit else "train_end"
    return date.fromisoformat(window[key]) if window.get(key) else None


def champion_data_end(rt: Runtime, c: Candidate) -> date | None:
    """The last day the champion trained on, from its ``mlops.window`` tag and its run's refit tag."""
    from include.mlops.adapters.registry import TAG_REFIT, mlflow_client

    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    mv = client.get_model_version(c.model, str(c.champion))
    try:
        window = json.loads(mv.tags.get("mlops.window") or "{}")
    except ValueError:
        return None
    refit = bool(mv.run_id) and bool(client.get_run(str(mv.run_id)).data.tags.get(TAG_REFIT))
    return data_end(window, refit=refit)


def champion_saw_holdout(spec: Spec, c: Candidate, unseen: int, rows: int) -> GateResult:
    """``beats_champion`` when the champion has trained on nearly all of the candidate's holdout."""
    from include.mlops.steps.gates import GateResult

    return GateResult(
        "beats_champion",
        True,
        "champion_trained_on_holdout",
        f"champion v{c.champion} trained on {rows - unseen} of the {rows} holdout rows; the {unseen} it has not seen are fewer"
        f" than training.min_holdout_rows ({spec.training.min_holdout_rows}): no fair comparison offline, the release"
        " compares them on live traffic",
        {"champion_version": c.champion, "rows": rows, "unseen_rows": unseen},
    )


def refitted(rt: Runtime, c: Candidate) -> bool:
    """Whether ``c`` was refitted on its window and holdout after validation (``training.refit_with_holdout``)."""
    from include.mlops.adapters.registry import TAG_REFIT, mlflow_client

    if not c.mlflow_run_id:  # a version registered without a run (brought from elsewhere): not one of training's
        return False
    return bool(mlflow_client(rt.settings.mlflow_tracking_uri).get_run(c.mlflow_run_id).data.tags.get(TAG_REFIT))


def recorded_scores(c: Candidate) -> Any:
    """A refitted candidate's validation-fit scores of its holdout rows, recorded by training with the
    reference (``reference/holdout_predictions.parquet``, in the rows' order of ``holdout/holdout.parquet``)."""
    import mlflow
    import pandas as pd

    path = mlflow.artifacts.download_artifacts(run_id=c.mlflow_run_id, artifact_path="reference/holdout_predictions.parquet")
    return pd.read_parquet(path)["score"].to_numpy()


def scores_evaluation(spec: Spec, data: Any, scores: Any) -> Any:
    """The task's metrics of ``scores`` against ``data``'s target, logged to the active run under
    MLflow's names; shaped like an evaluation result (``.metrics``). A refitted candidate is judged
    so: the refit has no unseen holdout of its own."""
    import mlflow

    from include.mlops.domain.tasks import METRICS, evaluate, labels

    values = evaluate(spec.task, labels(spec.task, data[spec.target.name]), scores)
    metrics = {m.mlflow_name: float(values[k]) for k, m in METRICS[spec.task].items() if k in values}
    mlflow.log_metrics(metrics)
    mlflow.set_tag("mlops.scored_by", "validation fit (training.refit_with_holdout)")
    return SimpleNamespace(metrics=metrics)
