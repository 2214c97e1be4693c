"""Which rows a candidate is trained and judged on: the training window and the time-based
holdout right after it, planned from the days of the validated pool and read from it.

:class:`TrainingRefused` is how training says no: the data does not allow a trustworthy candidate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.adapters.lake import Lake
from include.mlops.domain.spec import Spec

if TYPE_CHECKING:
    import pandas as pd


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
        if self.holdout_end < self.holdout_start:  # a fit with no holdout (the backtest's blind schedule)
            return f"{self.train_start}..{self.train_end} (no holdout)"
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


def check_rows(spec: Spec, window: Window, train_rows: int, holdout_rows: int) -> None:
    """Refuse a window whose holdout has too few labelled rows or whose training window has none."""
    if holdout_rows < spec.training.min_holdout_rows:
        raise TrainingRefused(
            "holdout_too_small",
            f"the holdout {window.holdout_start}..{window.holdout_end} has {holdout_rows} labelled rows; "
            f"at least {spec.training.min_holdout_rows} are needed",
            window.to_dict(),
        )
    if train_rows == 0:
        raise TrainingRefused("window_missing", f"no rows in the training window {window.label}", window.to_dict())


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
