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

What a score and a prediction are depends on the spec's ``task`` (:mod:`include.mlops.domain.tasks`):
for a classifier score = ``predict_proba(X)[:, 1]`` and prediction = ``int(score >= 0.5)``; for a
regressor score = prediction = ``predict(X)``, the predicted value.

Each outcome carries ``model_ms``: the duration of the ``predict_proba`` call (input building
included) of the version that scored the row, so champion and challenger are timed on their own
calls even when they score rows of the same micro-batch (the request's latency is the same for
both). It is the latency the row saw from its model, not a per-row share: under concurrency a
call holds the rows of several requests, and a canary's calls hold fewer rows than the
champion's (its share), which for a pipeline whose cost is mostly per call changes little.

When a model call fails on a batch of several requests, each request is scored again alone, so a
request whose values the model cannot score fails by itself and the others get their answers. A
request the champion cannot score while it does score the probe row (a plausible row built from
the spec) is the request's fault: it is answered 422 (:class:`Unscorable`), not 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from include.mlops.domain.tasks import scores as task_scores
from include.mlops.serving.routing import CHALLENGER, CHAMPION, SHADOW

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.spec import Spec
    from include.mlops.domain.tasks import Task
    from include.mlops.serving.batching import Job
    from include.mlops.serving.metrics import ModelMetrics
    from include.mlops.serving.models import LoadedModel, ModelManager, ServingState
    from include.mlops.serving.schema import Row

log = logging.getLogger(__name__)

THRESHOLD = 0.5


def _class(score: float) -> int:
    return int(score >= THRESHOLD)


def _value(score: float) -> float:
    return score


class NoChampion(Exception):
    """Nothing to answer with: no champion alias, or its model could not be loaded."""


class Unscorable(Exception):
    """The champion cannot score this request's values, though it scores the probe row: a 422."""


class Outcome:
    """What happened to one row with one model."""

    __slots__ = ("error", "error_type", "extra", "model_ms", "prediction", "route", "score", "status", "version")

    def __init__(
        self,
        version: str,
        route: str,
        score: float | None = None,
        prediction: float | None = None,
        status: str = "ok",
        error: str | None = None,
        error_type: str | None = None,
        model_ms: float | None = None,
    ):
        self.version = version
        self.route = route
        self.score = score
        self.prediction = prediction
        self.status = status
        self.error = error
        #: The exception's class name alone (what a client may be told; the message goes to the log).
        self.error_type = error_type
        #: Milliseconds of the predict call of ``version`` that scored this row (None: not scored).
        self.model_ms = model_ms
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

    def __init__(
        self,
        manager: ModelManager,
        frames: FrameBuilder,
        metrics: ModelMetrics | None = None,
        salt: str = "",
        probe: Sequence[Row] = (),
        task: Task = "binary_classification",
    ):
        self.manager = manager
        self.task: Task = task
        #: score -> what the API answers as the prediction: the class at 0.5, or the value itself
        self._label: Any = _value if task == "regression" else _class
        self.frames = frames
        self.metrics = metrics
        self.salt = salt
        #: Rows any good model scores; a request failing where these pass is the request's fault.
        self.probe = list(probe)
        self.rescored = 0

    def _predict(self, model: LoadedModel, rows: Sequence[Row]) -> tuple[list[float], float]:
        """The scores of ``rows`` by ``model`` and the call's duration in milliseconds."""
        started = time.perf_counter()
        # the direct path gives the same scores without the DataFrame (checked at load)
        direct = model.direct
        out = task_scores(self.task, direct, rows) if direct is not None else task_scores(self.task, model.model, self.frames.frame(rows))
        elapsed = time.perf_counter() - started
        if self.metrics:
            self.metrics.predict_seconds.labels(model_version=model.version).observe(elapsed)
        scores = out.tolist()
        if len(scores) != len(rows):
            raise ValueError(f"the model returned {len(scores)} scores for {len(rows)} rows")
        return scores, elapsed * 1000

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
        outcomes, failed = self._score(state, rows)
        if len(jobs) == 1 and failed:
            self._settle(state, jobs[0], outcomes)
            return
        # A model failed on a batch of several requests: unless it fails on the probe row too (a broken
        # model: nothing to gain), one request's values may be the cause, so each is scored alone.
        if failed and any(self._scores_probe(model) is not False for model in failed):
            self.rescored += 1
            log.warning("a model failed on a batch of %d requests; scoring each alone", len(jobs))
            for job in jobs:
                alone, _ = self._score(state, list(job.rows))
                self._settle(state, job, alone)
            return
        start = 0
        for job in jobs:
            end = start + len(job.rows)
            job.result = outcomes[start:end]
            start = end

    def _scores_probe(self, model: LoadedModel) -> bool | None:
        """Whether ``model`` scores the probe rows (None: there are none to tell)."""
        if not self.probe:
            return None
        try:
            self._predict(model, self.probe)
        except Exception:
            log.warning("model version %s fails on the probe row too: a model failure, not a request's", model.version)
            return False
        return True

    def _settle(self, state: ServingState, job: Job, outcomes: list[Outcome]) -> None:
        """The answer of a request scored alone: a champion failure on its rows while the champion
        scores the probe row is the request's fault (:class:`Unscorable`, a 422)."""
        failed = next((o for o in outcomes if o.status != "ok"), None)
        if failed is not None and state.champion is not None and self._scores_probe(state.champion):
            job.error = Unscorable(f"the model cannot score this request's values ({failed.error_type or 'error'})")
            return
        job.result = outcomes

    def _score(self, state: ServingState, rows: list[Row]) -> tuple[list[Outcome], list[LoadedModel]]:
        """Every row's outcome (with its shadow / failed-canary record) and the models that failed on them."""
        champion = state.champion
        assert champion is not None
        failures: list[LoadedModel] = []
        outcomes: list[Outcome | None] = [None] * len(rows)
        challenger = state.challenger
        to_champion: list[int] = list(range(len(rows)))
        fallbacks: dict[int, Outcome] = {}

        if challenger is not None and state.canary:
            picked = [i for i, r in enumerate(rows) if state.takes_canary(r.entity_id, self.salt)]
            if picked:
                try:
                    scores, ms = self._predict(challenger, [rows[i] for i in picked])
                except Exception as exc:
                    failures.append(challenger)
                    log.warning(
                        "challenger %s failed on %d canary rows, answering with the champion: %s", challenger.version, len(picked), exc
                    )
                    failed = f"challenger failed, answered by the champion: {type(exc).__name__}: {exc}"[:2000]
                    fallbacks = {i: Outcome(challenger.version, CHALLENGER, status="error", error=failed) for i in picked}
                else:
                    for i, s in zip(picked, scores, strict=True):
                        outcomes[i] = Outcome(challenger.version, CHALLENGER, s, self._label(s), model_ms=ms)
                    chosen = set(picked)
                    to_champion = [i for i in to_champion if i not in chosen]

        if to_champion:
            subset = rows if len(to_champion) == len(rows) else [rows[i] for i in to_champion]
            try:
                scores, ms = self._predict(champion, subset)
            except Exception as exc:
                failures.append(champion)
                log.exception("champion %s failed to score %d rows", champion.version, len(subset))
                msg = f"model failed to score: {type(exc).__name__}: {exc}"[:2000]
                for i in to_champion:
                    outcomes[i] = Outcome(champion.version, CHAMPION, status="error", error=msg, error_type=type(exc).__name__)
            else:
                for i, s in zip(to_champion, scores, strict=True):
                    outcomes[i] = Outcome(champion.version, CHAMPION, s, self._label(s), model_ms=ms)
        for i, failed_canary in fallbacks.items():
            out = outcomes[i]
            if out is not None:
                out.extra = failed_canary

        if challenger is not None and state.mode == SHADOW:
            try:
                scores, ms = self._predict(challenger, rows)
            except Exception as exc:
                failures.append(challenger)
                log.warning("shadow %s failed on %d rows: %s", challenger.version, len(rows), exc)
                msg = f"shadow model failed: {type(exc).__name__}: {exc}"[:2000]
                shadows = [Outcome(challenger.version, SHADOW, status="error", error=msg) for _ in rows]
            else:
                shadows = [Outcome(challenger.version, SHADOW, s, self._label(s), model_ms=ms) for s in scores]
            for out, shadow in zip(outcomes, shadows, strict=True):
                if out is not None:
                    out.extra = shadow
        return [o for o in outcomes if o is not None], failures
