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


def data_end(window: Any, *, refit: bool) -> date | None:
    """The last day of data a version of ``window`` (``Window.to_dict()``) trained on: its
    ``holdout_end`` when it was refitted on its holdout, else its ``train_end``. None when the window
    is unknown or unreadable (a version registered elsewhere, a hand-edited tag)."""
    key = "holdout_end" if refit else "train_end"
    if not isinstance(window, dict) or not window.get(key):
        return None
    try:
        return date.fromisoformat(str(window[key]))
    except ValueError:
        return None


def version_data_end(rt: Runtime, model: str, version: str) -> date | None:
    """The last day ``version`` trained on, from its ``mlops.window`` tag and its run's refit tag. A
    run that cannot be read (deleted) counts as refitted: the later end, so that no holdout row it
    may have trained on is used to judge it."""
    from mlflow.exceptions import MlflowException

    from include.mlops.adapters.registry import TAG_REFIT, mlflow_client

    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    mv = client.get_model_version(model, str(version))
    try:
        window = json.loads(mv.tags.get("mlops.window") or "{}")
    except ValueError:
        return None
    try:
        refit = bool(mv.run_id) and bool(client.get_run(str(mv.run_id)).data.tags.get(TAG_REFIT))
    except MlflowException:
        refit = True
    return data_end(window, refit=refit)


def saw_holdout(
    champion: str, unseen: int, rows: int, *, min_rows: int, candidate_end: date | None, champion_end: date | None
) -> tuple[bool, str, str] | None:
    """The ``beats_champion`` verdict (passed, reason code, message) when the champion has trained on
    so much of the candidate's holdout that fewer than ``min_rows`` (``training.min_holdout_rows``)
    of its rows are left to compare on; None otherwise (compare on the unseen rows). A candidate
    whose data ends no earlier than the champion's (the demo's fragile drill, retrained on the
    champion's own window) passes: the release compares them on live traffic. One whose data ends
    earlier (a manual retrain on an older window) knows less than the champion and is refused."""
    if unseen >= min_rows:
        return None
    counts = f"champion v{champion} trained on {rows - unseen} of the {rows} holdout rows"
    counts += f", {unseen} unseen (training.min_holdout_rows {min_rows})"
    if candidate_end is not None and champion_end is not None and candidate_end < champion_end:
        reason = f"{counts}; the candidate's data ends {candidate_end}, before the champion's ({champion_end})"
        return False, "candidate_older_than_champion", reason
    return True, "champion_trained_on_holdout", f"{counts}: no fair comparison offline, the release compares them on live traffic"


def saw_holdout_gate(rt: Runtime, c: Candidate, unseen: int, rows: int, champion_end: date | None) -> GateResult | None:
    """The evaluation gate's :func:`saw_holdout`, as a ``beats_champion`` result."""
    from include.mlops.steps.gates import GateResult

    mine = version_data_end(rt, c.model, c.version)
    verdict = saw_holdout(
        str(c.champion), unseen, rows, min_rows=rt.spec.training.min_holdout_rows, candidate_end=mine, champion_end=champion_end
    )
    if verdict is None:
        return None
    inputs = {
        "champion_version": c.champion,
        "rows": rows,
        "unseen_rows": unseen,
        "candidate_end": str(mine),
        "champion_end": str(champion_end),
    }
    return GateResult("beats_champion", *verdict, inputs)


def refitted(rt: Runtime, c: Candidate) -> bool:
    """Whether ``c`` was refitted on its window and holdout after validation (``training.refit_with_holdout``)."""
    from include.mlops.adapters.registry import TAG_REFIT, mlflow_client

    if not c.mlflow_run_id:  # a version registered without a run (brought from elsewhere): not one of training's
        return False
    return bool(mlflow_client(rt.settings.mlflow_tracking_uri).get_run(c.mlflow_run_id).data.tags.get(TAG_REFIT))


def recorded_scores(c: Candidate, rows: int) -> Any:
    """A refitted candidate's validation-fit scores of its ``rows`` holdout rows, recorded by training
    with the reference (``reference/holdout_predictions.parquet``, in the rows' order of
    ``holdout/holdout.parquet``). A run without them, or with another count, is an error that says so."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    artifact = "reference/holdout_predictions.parquet"
    try:
        path = mlflow.artifacts.download_artifacts(run_id=c.mlflow_run_id, artifact_path=artifact)
    except (MlflowException, OSError) as exc:
        raise RuntimeError(
            f"v{c.version} is tagged as refitted on its holdout but its run {c.mlflow_run_id} has no {artifact} ({exc}):"
            " its validation fit cannot be judged; retrain it"
        ) from exc
    scores = pd.read_parquet(path)["score"].to_numpy()
    if len(scores) != rows:
        raise RuntimeError(f"v{c.version}'s recorded holdout scores ({len(scores)}) do not match its holdout ({rows} rows); retrain it")
    return scores


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
