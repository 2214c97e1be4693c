"""A spec's labelled history, laid out for replay in event time.

Rows are sorted by the spec's time column; each day's rows are one contiguous slice, so "the rows
of days a..b" is a slice and every per-row array of the backtest (served version, scores) is
indexed like the frame. The label of a row is the spec's target rule on its raw outcome.

When labels may be used: the outcome of every event of day ``d`` has landed at the end of that
day plus ``spec.label_delay_hours`` (``label_time``). With the flights' 24 h, the labels of day
``d`` are usable from the start of day ``d + 2``: at the close of day ``t`` the pool holds the
labels of days up to ``t - 1``. Nothing in the backtest reads a label before that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.domain.spec import Spec

DAY = timedelta(days=1)
#: The label column the backtest adds (the spec's ``target.name``, derived from the raw outcome).
SCORE = "score"


def day_start(d: date) -> datetime:
    return datetime.combine(d, datetime.min.time())


@dataclass(frozen=True)
class History:
    """The spec's labelled rows between ``first`` and ``last`` (inclusive days), sorted by event time."""

    spec: Spec
    frame: pd.DataFrame
    days: list[date]
    #: Row offset of each day's first row (``starts[i]`` .. ``starts[i + 1]``: day ``days[i]``).
    starts: np.ndarray
    labels: np.ndarray

    @classmethod
    def of(cls, spec: Spec, raw: pd.DataFrame, *, start: date | None = None, end: date | None = None) -> History:
        """The rows of ``raw`` (a frame shaped like the spec's label batches) from ``start`` to ``end``."""
        import numpy as np
        import pandas as pd

        missing = [c for c in spec.batch_columns if c not in raw.columns]
        if missing:
            raise ValueError(f"the history lacks the spec's column(s): {', '.join(missing)}")
        t = pd.to_datetime(raw[spec.time_column])
        keep = t.notna() & raw[spec.target.source_column].notna()
        if start is not None:
            keep &= t >= pd.Timestamp(start)
        if end is not None:
            keep &= t < pd.Timestamp(end) + pd.Timedelta(days=1)
        frame = raw.loc[keep, spec.batch_columns].copy()
        frame[spec.time_column] = pd.to_datetime(frame[spec.time_column])
        frame = frame.sort_values([spec.time_column, spec.entity_id], kind="stable").reset_index(drop=True)
        if frame.empty:
            raise ValueError("no labelled rows in the history between the dates given")
        derived = spec.target.derive(frame[spec.target.source_column])
        frame[spec.target.name] = derived.astype(float) if spec.task == "regression" else derived.astype(int)
        day = frame[spec.time_column].dt.normalize()
        first, last = day.iloc[0].date(), day.iloc[-1].date()
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        edges = pd.to_datetime([day_start(d) for d in days])
        starts = np.searchsorted(day.to_numpy(), edges.to_numpy(), side="left")
        starts = np.append(starts, len(frame))
        return cls(spec, frame, days, starts, frame[spec.target.name].to_numpy())

    @property
    def first(self) -> date:
        return self.days[0]

    @property
    def last(self) -> date:
        return self.days[-1]

    def span(self, first: date, last: date) -> tuple[int, int]:
        """Row offsets ``[lo, hi)`` of the days ``first`` .. ``last`` (inclusive), clipped to the history."""
        i = max(0, (first - self.first).days)
        j = min(len(self.days), (last - self.first).days + 1)
        if j <= i:
            return 0, 0
        return int(self.starts[i]), int(self.starts[j])

    def day_index(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """For each row ``lo`` .. ``hi`` (default: all), the index of its day in :attr:`days`."""
        import numpy as np

        end = len(self.frame) if hi is None else hi
        return np.searchsorted(self.starts, np.arange(lo, end), side="right") - 1

    def row_days(self, lo: int, hi: int) -> list[date]:
        """The event day of each row ``lo`` .. ``hi``."""
        return [self.days[int(i)] for i in self.day_index(lo, hi)]

    def rows(self, first: date, last: date) -> pd.DataFrame:
        lo, hi = self.span(first, last)
        return self.frame.iloc[lo:hi]

    def label_time(self, d: date) -> datetime:
        """When the labels of day ``d`` may be used: the end of the day plus the spec's label delay."""
        return day_start(d) + DAY + timedelta(hours=self.spec.label_delay_hours)

    def labelled_days(self, now: datetime) -> list[date]:
        """Days whose labels have arrived by ``now`` (the training pool at that moment)."""
        return [d for d in self.days if self.label_time(d) <= now and self.span(d, d)[1] > self.span(d, d)[0]]

    def labels_usable(self, lo: int, hi: int, now: datetime) -> np.ndarray:
        """Mask over rows ``lo..hi``: the row's label has arrived by ``now`` (its day's
        ``label_time`` is at or before ``now``)."""
        import numpy as np

        cutoff = now - timedelta(hours=self.spec.label_delay_hours) - DAY  # a day starting at or before this has its labels
        bound = np.datetime64(day_start(cutoff.date()) + DAY)
        return self.frame[self.spec.time_column].to_numpy()[lo:hi] < bound
