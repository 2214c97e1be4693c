"""Both versions' scores of the same labelled requests, and the spec's paired test on them.

In canary mode a request is scored by one version only, and in shadow mode the champion's score of a
challenger-routed row is not logged at all. So the promotion (:func:`include.mlops.steps.release.decide_final`)
and the end of a bake period (:mod:`include.mlops.steps.bake`) score the labelled requests of the
period offline with *both* versions' registry artifacts (:func:`paired_scores`): the same rows, the
same features as logged at serving time, the scores serving would have given (the probe-set check
keeps live and registry scores equal). A week of requests is a few thousand rows: well under a
second per model. :func:`compare` runs ``promotion.test`` (``domain.significance``'s DeLong test or
paired bootstrap; for a regressor the paired bootstrap of MAE, RMSE or R2) on them. A regressor's
labels are the outcomes (``ground_truth.outcome``), its scores the predicted values.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from include.mlops.domain.policy import Realized
from include.mlops.domain.roles import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    import numpy as np

    from include.mlops.domain.significance import PairedComparison
    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairedScores:
    """Labels of the labelled requests of a period, and each version's score of the same rows."""

    labels: np.ndarray
    scores: dict[str, np.ndarray]
    #: Event time of the first and last labelled request (None without rows).
    first_event: datetime | None = None
    last_event: datetime | None = None

    @property
    def rows(self) -> int:
        return int(self.labels.size)


def paired_scores(
    rt: Runtime, since: datetime, versions: tuple[str, ...], routes: tuple[str, ...] = (CHAMPION, CHALLENGER)
) -> PairedScores:
    """The labelled requests served on ``routes`` since ``since`` (wall time; one row per entity),
    scored offline by every version in ``versions`` with its registry artifact (see the module's
    "Paired scores")."""
    import numpy as np
    import pandas as pd

    from include.mlops.adapters.model_artifacts import load_model_version
    from include.mlops.domain.tasks import labels, scores, truth_column

    task = rt.spec.task
    rows = rt.store.labelled_inference(
        rt.model_name, ["entity_id", "features", "event_time"], routes=list(routes), created_from=since, truth=truth_column(task)
    )
    if not rows:
        return PairedScores(np.zeros(0, dtype=int), {v: np.zeros(0) for v in versions})
    df = pd.DataFrame(
        [{**(json.loads(f) if isinstance(f, str) else f or {}), "_id": e, "_t": t, "_y": y} for e, f, t, y in rows]
    ).drop_duplicates("_id")
    x = df.reindex(columns=rt.spec.feature_names)
    uri = rt.settings.mlflow_tracking_uri
    models = {v: load_model_version(rt.store, rt.spec, rt.model_name, v, tracking_uri=uri) for v in versions}
    by_version = {v: scores(task, m, x) for v, m in models.items()}
    times = pd.to_datetime(df["_t"])
    return PairedScores(labels(task, df["_y"]), by_version, times.min().to_pydatetime(), times.max().to_pydatetime())


def realized_quality(rt: Runtime, since: datetime, champion: str, challenger: str, paired: PairedScores | None = None) -> Realized | None:
    """Both versions scored offline (registry artifacts) on the same labelled requests of the window."""
    import numpy as np

    from include.mlops.domain.tasks import evaluate
    from include.mlops.domain.tasks import metric as task_metric

    metric = rt.spec.promotion.metric
    higher = task_metric(rt.spec.task, metric).higher_is_better
    paired = paired or paired_scores(rt, since, (champion, challenger))
    if not paired.rows:
        return Realized(0, metric, None, None, higher)
    values = {v: evaluate(rt.spec.task, paired.labels, paired.scores[v]).get(metric) for v in (champion, challenger)}
    c, n = values[champion], values[challenger]
    ok = [v for v in (c, n) if v is not None and not np.isnan(v)]
    return Realized(paired.rows, metric, c if len(ok) == 2 else None, n if len(ok) == 2 else None, higher)


#: ``promotion.metric`` -> the metric name of ``domain.significance``
TEST_METRICS = {"roc_auc": "roc_auc", "accuracy_score": "accuracy", "f1_score": "f1", "mae": "mae", "rmse": "rmse", "r2": "r2"}


def compare(rt: Runtime, paired: PairedScores, champion: str, challenger: str, *, min_gain: float) -> PairedComparison | None:
    """``promotion.test`` on the paired scores (``difference``: the challenger's gain, in the
    metric's direction: for MAE ``champion - challenger``); None when the test is off, there are no
    rows, or the metric is undefined on them (one class only, or constant outcomes)."""
    from include.mlops.domain.significance import delong_test, paired_bootstrap

    p = rt.spec.promotion
    if p.test == "none" or not paired.rows or paired.labels.min() == paired.labels.max():
        return None
    a, b = paired.scores[champion], paired.scores[challenger]
    try:
        if p.test == "delong":
            return delong_test(paired.labels, a, b, alpha=p.alpha, min_gain=min_gain)
        metric = TEST_METRICS[p.metric]
        return paired_bootstrap(paired.labels, a, b, metric=metric, alpha=p.alpha, min_gain=min_gain, seed=rt.spec.training.random_state)  # type: ignore[arg-type]
    except ValueError as exc:
        log.warning("promotion.test %s not computable: %s", p.test, exc)
        return None
