"""What the loop is compared with, on the same rows (every row after the first month):

* ``frozen``: the first model, never retrained;
* ``weekly``: scheduled retraining every 7 days, no gates: at the close of each week the spec's
  window is planned on the labels that have arrived (as the loop plans it) and the new model
  answers from the next day;
* ``monthly``: the same every 28 days (every fourth weekly model: the same fits, none extra);
* ``weekly_newest``: blind weekly retraining as a team without gates would run it: every 7 days
  the spec's pipeline on the ``training.window_days`` days up to the newest label, no holdout
  held back (a model a week fresher than the loop's windows, which keep their newest week to
  evaluate on);
* ``oracle``: each calendar month, the best of all the models the weekly schedule had trained
  before that month (the first model included), chosen in hindsight on that month's labels (on
  every fifth row of the month, the same rows for every model). It bounds what choosing among the
  weekly schedule's models could achieve.

The schedules train through :class:`~include.mlops.steps.backtest.models.Trainer`, so their fits
are the loop's whenever the windows coincide.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from include.mlops.steps.backtest.history import DAY, History, day_start
from include.mlops.steps.backtest.models import Fitted, Trainer
from include.mlops.steps.training_window import TrainingRefused

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Segment:
    """A model answering from ``since`` (inclusive) until the next segment."""

    since: date
    fitted: Fitted


def schedule(trainer: Trainer, first: Fitted, start: date, every_days: int, *, newest: bool = False) -> list[Segment]:
    """Retrain every ``every_days`` from ``start`` (at the close of day ``start + k * every - 1``):
    on the window the loop would plan, or with ``newest`` on the newest labelled days with no holdout."""
    h = trainer.history
    out = [Segment(start, first)]
    close = start + timedelta(days=every_days - 1)
    while close < h.last:
        try:
            labelled = h.labelled_days(day_start(close) + DAY)
            fitted = trainer.fit_newest(labelled) if newest else trainer.fit(trainer.plan(labelled))
        except TrainingRefused:
            fitted = out[-1].fitted  # nothing trainable: the previous model keeps answering
        out.append(Segment(close + DAY, fitted))
        close += timedelta(days=every_days)
    return out


def scheduled_scores(trainer: Trainer, segments: list[Segment], lo: int) -> np.ndarray:
    """The answers of a schedule on rows ``lo..`` of the history."""
    import numpy as np

    h = trainer.history
    out = np.full(len(h.frame) - lo, np.nan)
    for i, seg in enumerate(segments):
        end = segments[i + 1].since - DAY if i + 1 < len(segments) else h.last
        a, b = h.span(seg.since, end)
        a = max(a, lo)
        if b > a:
            out[a - lo : b - lo] = trainer.scores(seg.fitted, a, b)
    return out


def months(h: History, start: date) -> list[tuple[str, int, int]]:
    """Calendar months from ``start``: label and row span."""
    out = []
    first = start
    while first <= h.last:
        nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
        lo, hi = h.span(first, nxt - DAY)
        if hi > lo:
            out.append((f"{first:%Y-%m}", lo, hi))
        first = nxt
    return out


#: The oracle chooses on every ORACLE_STEP-th row of the month (a systematic sample, the same rows
#: for every model), then answers the whole month with the model chosen: scoring every earlier
#: model on every row of every month was most of a year's backtest.
ORACLE_STEP = 5


def oracle_scores(
    trainer: Trainer, weekly: list[Segment], month_spans: list[tuple[str, int, int]], lo: int
) -> tuple[np.ndarray, list[str]]:
    """Each month, the answers of the weekly model that scores it best (in hindsight, on a
    systematic sample of the month's rows)."""
    import numpy as np

    from include.mlops.domain.resampling import roc_auc
    from include.mlops.domain.tasks import evaluate, metric_of

    h = trainer.history
    spec = h.spec

    def quality(y: np.ndarray, s: np.ndarray) -> float:
        """Higher is better: ROC AUC for a classifier, the promotion metric's gain over 0 for a regressor."""
        if spec.task != "regression":
            return float(roc_auc(y, s))
        m = metric_of(spec.promotion.metric)
        return m.gain(float(evaluate(spec.task, y, s)[m.name]), 0.0)

    out = np.full(len(h.frame) - lo, np.nan)
    chosen = []
    for _, a, b in month_spans:
        month_start = h.frame[h.spec.time_column].iloc[a].normalize().date()
        pool = list({id(s.fitted): s.fitted for s in weekly if s.since <= month_start}.values())
        sample = np.arange(a, b, ORACLE_STEP)
        best = max(pool, key=lambda f: quality(h.labels[sample], trainer.scores_at(f, sample)))
        out[a - lo : b - lo] = trainer.scores(best, a, b)
        chosen.append(best.key)
    return out, chosen
