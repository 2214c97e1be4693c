"""Fitted models of the backtest, cached by training window.

A training window is planned by the loop's own rules (``steps.training_window.plan_window`` on the
days whose labels have arrived, ``check_rows``), the spec's pipeline (``domain.pipelines``) is
fitted on it, scored on its holdout, and its reference is built by the call training makes
(``steps.training_reference.reference_statistics``: drift statistics and, when the spec turns it
on, the calibrated thresholds). A window fitted once is reused by every policy that trains on it
(the weekly schedule, the monthly one and the loop), and each model's scores on the history are
computed once per row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from include.mlops.domain.tasks import scores as task_scores
from include.mlops.steps.backtest.history import SCORE, History
from include.mlops.steps.monitoring.reference import Reference
from include.mlops.steps.training_window import Window, check_rows, plan_window

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

#: Rows scored per predict call at least (about three weeks of flights).
SCORE_AHEAD = 20_000


@dataclass
class Fitted:
    """One fitted window: the pipeline, its holdout evaluation and its monitoring reference."""

    window: Window
    pipe: Any
    metrics: dict[str, float]
    reference: Reference
    train_rows: int
    holdout_rows: int
    #: The holdout's row offsets in the history (the gates compare models on these rows).
    holdout_span: tuple[int, int]
    #: Scores on the history's rows, computed on demand (NaN where not computed yet).
    scores: np.ndarray = field(repr=False)
    scored: np.ndarray = field(repr=False)

    @property
    def key(self) -> str:
        return self.window.label


class Trainer:
    """Plans, fits and scores windows of one history; every fit is cached by its window."""

    def __init__(self, history: History, *, references: bool = True) -> None:
        self.history = history
        #: Build each fit's monitoring reference (drift statistics, calibration); off for callers
        #: that only score (``steps.value``'s weekly schedule): the reference is most of a fit's extra cost.
        self.references = references
        self.fits: dict[Window, Fitted] = {}
        #: Refits on window + holdout (``training.refit_with_holdout``), by the validated window.
        self.refits: dict[Window, Fitted] = {}
        self.fit_seconds = 0.0
        self.score_seconds = 0.0

    def plan(self, labelled_days: list[date], *, train_start: date | None = None, train_end: date | None = None) -> Window:
        """The window ``train_candidate`` would train on with this pool (may raise ``TrainingRefused``)."""
        return plan_window(self.history.spec, labelled_days, train_start=train_start, train_end=train_end)

    def fit(self, window: Window) -> Fitted:
        """The fitted model of ``window`` (fitted on first use; raises ``TrainingRefused`` like
        ``train_candidate`` when the holdout is too small or the window empty)."""
        found = self.fits.get(window)
        if found is not None:
            return found
        import numpy as np

        from include.mlops.domain.pipelines import build_pipeline
        from include.mlops.domain.tasks import evaluate
        from include.mlops.steps.training_reference import calibrates_score, reference_statistics

        h, spec = self.history, self.history.spec
        train = h.rows(window.train_start, window.train_end)
        hold_span = h.span(window.holdout_start, window.holdout_end)
        check_rows(spec, window, len(train), hold_span[1] - hold_span[0])
        started = time.perf_counter()
        pipe = build_pipeline(spec)
        lo, hi = h.span(window.train_start, window.train_end)
        pipe.fit(train[spec.feature_names], h.labels[lo:hi])
        self.fit_seconds += time.perf_counter() - started
        scores = np.full(len(h.frame), np.nan)
        scored = np.zeros(len(h.frame), dtype=bool)
        holdout = h.frame.iloc[hold_span[0] : hold_span[1]][[spec.entity_id, spec.time_column, spec.target.name]].copy()
        fitted = Fitted(window, pipe, {}, None, len(train), len(holdout), hold_span, scores, scored)  # type: ignore[arg-type]
        holdout[SCORE] = self.scores(fitted, *hold_span)
        fitted.metrics = evaluate(spec.task, holdout[spec.target.name].to_numpy(), holdout[SCORE].to_numpy())
        stats: dict[str, Any] = {}
        calibration = None
        if self.references:
            train_scores = self.scores(fitted, lo, hi) if calibrates_score(spec) else None
            stats, calibration = reference_statistics(spec, train, holdout[SCORE].to_numpy(), train_scores)
        sample = train[spec.feature_names].head(0)
        fitted.reference = Reference(window.label, "backtest", stats, sample, holdout, fitted.metrics, calibration)
        self.fits[window] = fitted
        primary = spec.deployment.primary_metric
        log.info("fitted %s: %d rows, holdout %s %.4f", window.label, len(train), primary, fitted.metrics[primary])
        return fitted

    def fit_newest(self, labelled_days: list[date]) -> Fitted:
        """Blind retraining's model: the spec's pipeline on the ``training.window_days`` days that end
        with the newest labelled day, no holdout (nothing to gate, so no week held back from
        training), no metrics and no monitoring reference. Cached like :meth:`fit`; raises
        ``TrainingRefused`` when those days have no labelled rows."""
        from datetime import timedelta

        from include.mlops.steps.training_window import TrainingRefused

        h, spec = self.history, self.history.spec
        if not labelled_days:
            raise TrainingRefused("empty_pool", "no labelled day yet")
        end = labelled_days[-1]
        start = max(end - timedelta(days=spec.training.window_days - 1), h.first)
        window = Window(start, end, end + timedelta(days=1), end)  # an empty holdout (label: "no holdout")
        found = self.fits.get(window)
        if found is not None:
            return found
        import numpy as np

        from include.mlops.domain.pipelines import build_pipeline

        lo, hi = h.span(start, end)
        if hi <= lo:
            raise TrainingRefused("window_missing", f"no rows in the training window {window.label}", window.to_dict())
        started = time.perf_counter()
        pipe = build_pipeline(spec)
        pipe.fit(h.frame.iloc[lo:hi][spec.feature_names], h.labels[lo:hi])
        self.fit_seconds += time.perf_counter() - started
        fitted = Fitted(
            window,
            pipe,
            {},
            None,  # type: ignore[arg-type]  # no monitoring reference: nothing monitors a baseline
            hi - lo,
            0,
            (hi, hi),
            np.full(len(h.frame), np.nan),
            np.zeros(len(h.frame), dtype=bool),
        )
        self.fits[window] = fitted
        log.info("fitted %s: %d rows", window.label, hi - lo)
        return fitted

    def refit(self, fitted: Fitted) -> Fitted:
        """What ``train_candidate`` registers with ``training.refit_with_holdout``: the spec's pipeline
        fitted again on the validated window's training days and its holdout. Its metrics, holdout and
        monitoring reference are the validation fit's (the gates judged that fit; the refit has no
        unseen holdout of its own). Cached by the validated window."""
        found = self.refits.get(fitted.window)
        if found is not None:
            return found
        import numpy as np

        from include.mlops.domain.pipelines import build_pipeline

        h, spec, w = self.history, self.history.spec, fitted.window
        lo, hi = h.span(w.train_start, w.holdout_end)
        started = time.perf_counter()
        pipe = build_pipeline(spec)
        pipe.fit(h.frame.iloc[lo:hi][spec.feature_names], h.labels[lo:hi])
        self.fit_seconds += time.perf_counter() - started
        n = len(h.frame)
        refit = Fitted(w, pipe, fitted.metrics, fitted.reference, hi - lo, fitted.holdout_rows, fitted.holdout_span,
                       np.full(n, np.nan), np.zeros(n, dtype=bool))  # fmt: skip
        self.refits[w] = refit
        log.info("refitted %s on its holdout too: %d rows", w.label, hi - lo)
        return refit

    def scores(self, fitted: Fitted, lo: int, hi: int) -> np.ndarray:
        """``fitted``'s scores on rows ``lo..hi`` (each row scored once per model)."""
        import numpy as np

        todo = np.flatnonzero(~fitted.scored[lo:hi]) + lo
        if todo.size:
            started = time.perf_counter()
            # one contiguous block from the first missing row, at least SCORE_AHEAD rows long: a model
            # answering day by day is scored a few weeks at a time (a predict call costs ~30 ms of overhead)
            a = int(todo[0])
            b = min(len(fitted.scores), max(int(todo[-1]) + 1, a + SCORE_AHEAD))
            x = self.history.frame.iloc[a:b][self.history.spec.feature_names]
            fitted.scores[a:b] = task_scores(self.history.spec.task, fitted.pipe, x)
            fitted.scored[a:b] = True
            self.score_seconds += time.perf_counter() - started
        return fitted.scores[lo:hi]

    def scores_at(self, fitted: Fitted, rows: np.ndarray) -> np.ndarray:
        """``fitted``'s scores on the history rows ``rows`` (positions), scoring only those missing."""
        todo = rows[~fitted.scored[rows]]
        if todo.size:
            started = time.perf_counter()
            x = self.history.frame.iloc[todo][self.history.spec.feature_names]
            fitted.scores[todo] = task_scores(self.history.spec.task, fitted.pipe, x)
            fitted.scored[todo] = True
            self.score_seconds += time.perf_counter() - started
        return fitted.scores[rows]
