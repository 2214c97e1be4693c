"""Scoring a micro-batch: build the model input once, route rows, call ``predict_proba`` per model.

One :class:`ServingState` snapshot is taken per batch, so every row of a batch is answered by the
versions of that snapshot, and the version and route reported (and logged) are those that really
scored it, even while a hot swap happens.

* no challenger: the champion scores every row (route ``champion``);
* canary: rows whose entity falls in the canary share (sticky hash) are scored by the challenger
  (route ``challenger``), the rest by the champion. If the challenger fails on its rows, they are
  answered by the champion and the challenger's failure is logged as an ``error`` record;
* shadow: the champion scores and answers every row; the challenger scores the same rows and its
  result is logged as a second record with route ``shadow`` (its failure never reaches the client).

Score = ``predict_proba(X)[:, 1]``, prediction = ``int(score >= 0.5)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from include.mlops.serving.routing import CHALLENGER, CHAMPION, SHADOW

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.spec import Spec
    from include.mlops.serving.batching import Job
    from include.mlops.serving.metrics import ServingMetrics
    from include.mlops.serving.models import LoadedModel, ModelManager
    from include.mlops.serving.schema import Row

log = logging.getLogger(__name__)

THRESHOLD = 0.5


class NoChampion(Exception):
    """Nothing to answer with: no champion alias, or its model could not be loaded."""


class Outcome:
    """What happened to one row with one model."""

    __slots__ = ("error", "extra", "prediction", "route", "score", "status", "version")

    def __init__(
        self,
        version: str,
        route: str,
        score: float | None = None,
        prediction: int | None = None,
        status: str = "ok",
        error: str | None = None,
    ):
        self.version = version
        self.route = route
        self.score = score
        self.prediction = prediction
        self.status = status
        self.error = error
        #: A second inference-log record for this row (the shadow's score, or a failed canary).
        self.extra: Outcome | None = None


class FrameBuilder:
    """Builds the model's input DataFrame straight from validated rows (no per-row pandas work)."""

    def __init__(self, spec: Spec):
        self.names = list(spec.feature_names)
        self.kinds = [f.type for f in spec.features]

    def frame(self, rows: Sequence[Row]) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        columns = list(zip(*(r.values for r in rows), strict=True)) if rows else [() for _ in self.names]
        data: dict[str, Any] = {}
        for name, kind, values in zip(self.names, self.kinds, columns, strict=True):
            if kind == "categorical":
                data[name] = np.array(values, dtype=object)
            elif kind == "integer" and None not in values:
                data[name] = np.array(values, dtype=np.int64)
            else:  # numbers, with None -> NaN
                data[name] = np.array(values, dtype=np.float64)
        return pd.DataFrame(data, copy=False)

    def probe_row(self, spec: Spec) -> tuple[Any, ...]:
        """A plausible row (first category, mid-range numbers) to check a freshly loaded model on."""
        values: list[Any] = []
        for f in spec.features:
            if f.type == "categorical":
                values.append((f.categories or ["x"])[0])
            else:
                lo = f.min if f.min is not None else 0.0
                hi = f.max if f.max is not None else lo + 1.0
                mid = (lo + hi) / 2
                values.append(round(mid) if f.type == "integer" else mid)
        return tuple(values)


class Scorer:
    """The micro-batch ``process`` function: scores a batch of jobs with the current serving state."""

    def __init__(self, manager: ModelManager, frames: FrameBuilder, metrics: ServingMetrics | None = None, salt: str = ""):
        self.manager = manager
        self.frames = frames
        self.metrics = metrics
        self.salt = salt

    def _predict(self, model: LoadedModel, rows: Sequence[Row]) -> list[float]:
        started = time.perf_counter()
        # the direct path gives the same probabilities without the DataFrame (checked at load)
        direct = model.direct
        proba = direct.predict_proba(rows) if direct is not None else model.model.predict_proba(self.frames.frame(rows))
        if self.metrics:
            self.metrics.predict_seconds.labels(model_version=model.version).observe(time.perf_counter() - started)
        scores = proba[:, 1].tolist()
        if len(scores) != len(rows):
            raise ValueError(f"predict_proba returned {len(scores)} scores for {len(rows)} rows")
        return scores

    def __call__(self, jobs: list[Job]) -> None:
        state = self.manager.state
        champion = state.champion
        if champion is None:
            err = NoChampion(self.manager.unavailable_reason())
            for job in jobs:
                job.error = err
            return
        rows: list[Row] = [r for job in jobs for r in job.rows]
        if self.metrics:
            self.metrics.batch_rows.observe(len(rows))
        outcomes: list[Outcome | None] = [None] * len(rows)
        challenger = state.challenger
        to_champion: list[int] = list(range(len(rows)))
        fallbacks: dict[int, Outcome] = {}

        if challenger is not None and state.canary:
            picked = [i for i, r in enumerate(rows) if state.takes_canary(r.entity_id, self.salt)]
            if picked:
                try:
                    scores = self._predict(challenger, [rows[i] for i in picked])
                except Exception as exc:
                    log.warning(
                        "challenger %s failed on %d canary rows, answering with the champion: %s", challenger.version, len(picked), exc
                    )
                    failed = f"challenger failed, answered by the champion: {type(exc).__name__}: {exc}"[:2000]
                    fallbacks = {i: Outcome(challenger.version, CHALLENGER, status="error", error=failed) for i in picked}
                else:
                    for i, s in zip(picked, scores, strict=True):
                        outcomes[i] = Outcome(challenger.version, CHALLENGER, s, int(s >= THRESHOLD))
                    chosen = set(picked)
                    to_champion = [i for i in to_champion if i not in chosen]

        if to_champion:
            subset = rows if len(to_champion) == len(rows) else [rows[i] for i in to_champion]
            try:
                scores = self._predict(champion, subset)
            except Exception as exc:
                log.exception("champion %s failed to score %d rows", champion.version, len(subset))
                msg = f"model failed to score: {type(exc).__name__}: {exc}"[:2000]
                for i in to_champion:
                    outcomes[i] = Outcome(champion.version, CHAMPION, status="error", error=msg)
            else:
                for i, s in zip(to_champion, scores, strict=True):
                    outcomes[i] = Outcome(champion.version, CHAMPION, s, int(s >= THRESHOLD))
        for i, failed_canary in fallbacks.items():
            out = outcomes[i]
            if out is not None:
                out.extra = failed_canary

        if challenger is not None and state.mode == SHADOW:
            try:
                scores = self._predict(challenger, rows)
            except Exception as exc:
                log.warning("shadow %s failed on %d rows: %s", challenger.version, len(rows), exc)
                msg = f"shadow model failed: {type(exc).__name__}: {exc}"[:2000]
                shadows = [Outcome(challenger.version, SHADOW, status="error", error=msg) for _ in rows]
            else:
                shadows = [Outcome(challenger.version, SHADOW, s, int(s >= THRESHOLD)) for s in scores]
            for out, shadow in zip(outcomes, shadows, strict=True):
                if out is not None:
                    out.extra = shadow

        start = 0
        for job in jobs:
            end = start + len(job.rows)
            job.result = outcomes[start:end]
            start = end
