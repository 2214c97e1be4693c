"""Drift thresholds calibrated on the reference itself, per feature (NannyML's univariate rule).

Why: a fixed threshold (Evidently's 0.1 normed Wasserstein, 0.1 Jensen-Shannon, p <= 0.05) says
nothing about how much a feature moves from week to week when nothing is wrong. On the 2013 flights
every weekly window "drifts" (the weather of one week never looks like the weather of eight weeks),
so the signal is always on and carries no information. Here a feature drifts only when its statistic
is unusual *for this data*:

1. split the reference (the model's training inputs) into chunks, by row count (``chunk_size``)
   or by event time (``period``, e.g. ``"7D"`` for weekly monitoring windows), in the reference's
   own order: contiguous chunks keep the reference's own temporal variability in the spread;
2. compute each chunk's drift statistic against the rest of the reference (``leave_chunk_out``)
   with the test monitoring uses (:func:`include.mlops.domain.drift.column_drift`, pinned per
   column so that a window and the chunks are measured alike);
3. set the threshold from the spread of those chunk statistics (:class:`ThresholdRule`):
   ``mean + k * std`` (default, ``k = 3``, NannyML's ``StandardDeviationThreshold`` with no lower
   bound) or an upper quantile; a window's feature drifts when its statistic is *above* its
   threshold (strictly, as NannyML's alert).

The statistic is the test's distance, or ``-log10(p)`` for the p-value tests (KS, chi-squared, z),
so that larger always means "further from the reference".

Choices, and why:

* ``mean + k * std`` (``ddof=1``) by default: 8 weekly chunks of a 56-day reference give 8 values,
  whose upper quantile is their maximum (one odd week decides); ``quantile`` is for >= 20 chunks.
* ``k = 3``: NannyML's default; with 8 chunks the std is itself uncertain (~27 % relative error).
* Chunk size should match the monitoring window: a statistic's sampling noise grows as the sample
  shrinks, so chunks much larger than the window give thresholds that are too low (false alarms),
  much smaller ones thresholds that are too high. :func:`calibrated_drift` logs a warning when a
  window has fewer than half the rows of the median chunk.
* ``leave_chunk_out=True`` (default; NannyML compares each chunk with the whole reference): each
  chunk is compared with the *rest* of the reference. Against the whole, which contains the chunk,
  a chunk of ``m`` of ``N`` rows has distance noise ``(1 - m/N) * sqrt(1/m + 1/(N - m))`` (0.935 /
  sqrt(m) for 8 weekly chunks) where a new window has ``sqrt(1/m + 1/N)`` (1.061): every window would
  look 13 % further away than any chunk. Against the rest it is ``sqrt(1/m + 1/(N - m))`` (1.069). On
  stationary synthetic series this halves the false alarms (docs/signals.md); it costs one
  ``reference_stats`` per chunk.
* A feature constant in the reference (every chunk statistic 0, std 0) gets threshold 0: any
  different value in a window is drift, as it should be (the model never saw it).

Everything here is pure: data in, dataclasses out; :meth:`DriftCalibration.to_dict` /
:meth:`DriftCalibration.from_dict` make the calibration JSON-able so training can store it next to
``drift_stats.json`` and monitoring can read it back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from include.mlops.domain import drift

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.domain.spec import Spec

log = logging.getLogger(__name__)

CALIBRATION_FORMAT = "mlops.drift.calibration/1"
#: p-values below this are clipped before ``-log10`` (a window can give p == 0.0 exactly).
MIN_P_VALUE = 1e-300
#: Fewer usable chunks than this and :func:`calibrate` refuses: a spread needs several points.
MIN_CHUNKS = 4
#: Numeric columns whose automatic test is chi-squared or z (few values, small reference) cannot
#: have those tests pinned (``drift.METHODS`` allows them on categorical columns only): they are
#: calibrated with Jensen-Shannon on their exact values instead.
FEW_VALUED_NUMERIC_METHOD = "jensenshannon"

RuleKind = Literal["std", "quantile"]


@dataclass(frozen=True)
class ThresholdRule:
    """How a threshold is set from the chunk statistics of one feature."""

    #: ``std``: ``mean + k * std`` of the chunk statistics; ``quantile``: their ``quantile``-th quantile.
    kind: RuleKind = "std"
    k: float = 3.0
    quantile: float = 0.95
    #: Also require Evidently's default threshold (drift only when unusual *and* beyond the default):
    #: ``threshold = max(calibrated, default)``.
    floor_at_default: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("std", "quantile"):
            raise ValueError(f"rule kind must be 'std' or 'quantile', got {self.kind!r}")
        if not math.isfinite(self.k) or self.k < 0:
            raise ValueError(f"rule k must be a finite number >= 0, got {self.k!r}")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"rule quantile must be in (0, 1], got {self.quantile!r}")

    def threshold(self, statistics: np.ndarray) -> float:
        import numpy as np

        if self.kind == "quantile":
            return float(np.quantile(statistics, self.quantile))
        std = float(statistics.std(ddof=1)) if statistics.size > 1 else 0.0
        return float(statistics.mean()) + self.k * std


@dataclass(frozen=True)
class FeatureThreshold:
    """The calibrated threshold of one column and the reference spread it comes from."""

    column: str
    kind: drift.Kind
    #: The drift test, pinned for this column (the monitoring pass must use the same).
    method: str
    #: ``distance`` (the statistic is the test's distance) or ``p_value`` (the statistic is -log10 p).
    score_kind: str
    #: On the statistic's scale; a window drifts when its statistic is strictly above it.
    threshold: float
    #: Mean and standard deviation (ddof=1) of the chunk statistics.
    reference_mean: float
    reference_std: float
    chunk_statistics: list[float]
    #: True when the spec (or the caller) fixed this threshold instead of the rule.
    overridden: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftCalibration:
    """Per-feature thresholds calibrated on one reference (JSON-able)."""

    rule: ThresholdRule
    #: ``size`` or ``period`` chunking, and its parameter (rows, or a pandas offset such as ``7D``).
    chunking: str
    chunk_parameter: str
    chunk_rows: list[int]
    leave_chunk_out: bool
    features: dict[str, FeatureThreshold]
    #: Chunks left out (too small: fewer than half the median chunk's rows).
    dropped_chunks: int = 0
    format: str = CALIBRATION_FORMAT

    @property
    def median_chunk_rows(self) -> int:
        rows = sorted(self.chunk_rows)
        return rows[len(rows) // 2] if rows else 0

    def overrides(self) -> dict[str, dict[str, Any]]:
        """``drift.column_drift`` overrides that pin each calibrated column's test."""
        return {c: {"method": t.method} for c, t in self.features.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftCalibration:
        if data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"unknown drift calibration format {data.get('format')!r} (expected {CALIBRATION_FORMAT!r})")
        return cls(
            rule=ThresholdRule(**data["rule"]),
            chunking=str(data["chunking"]),
            chunk_parameter=str(data["chunk_parameter"]),
            chunk_rows=[int(r) for r in data["chunk_rows"]],
            leave_chunk_out=bool(data["leave_chunk_out"]),
            features={c: FeatureThreshold(**f) for c, f in data["features"].items()},
            dropped_chunks=int(data.get("dropped_chunks", 0)),
        )


@dataclass(frozen=True)
class CalibratedColumnDrift:
    """One column of a window judged against its calibrated threshold."""

    column: str
    method: str
    #: The distance, or -log10 p; ``None`` when no test ran (see ``status``).
    statistic: float | None
    threshold: float | None
    drifted: bool
    #: How unusual: reference standard deviations above the reference mean (``inf`` when the
    #: reference spread is 0 and the statistic is above it; ``None`` when undefined).
    z_score: float | None
    #: Share of reference chunks whose statistic is at least as large, as ``(1 + count) / (1 + chunks)``:
    #: an empirical p-value (small = unusual).
    exceedance: float | None
    #: ``drift.ColumnDrift.status`` (``ok``, ``missing_column``, ``all_null``, ...).
    status: str
    #: The verdict of today's fixed rule on the same window, for comparison.
    default_drifted: bool
    #: The underlying verdict from ``drift.column_drift`` (score, counts, unseen categories ...).
    detail: drift.ColumnDrift = field(repr=False)

    def as_column_drift(self) -> drift.ColumnDrift:
        """The drift verdict with the calibrated threshold (on the test's own scale) and decision,
        so ``drift.dataset_drift`` and every reader of ``ColumnDrift`` work unchanged."""
        if self.threshold is None:
            return self.detail
        threshold = self.threshold
        if self.detail.score_kind == "p_value":
            threshold = 10.0 ** (-self.threshold)
        return replace(self.detail, threshold=threshold, drifted=self.drifted, note=_note(self))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["detail"] = self.detail.to_dict()
        return out


def _note(r: CalibratedColumnDrift) -> str:
    if r.z_score is None:
        return "calibrated threshold"
    return f"calibrated threshold: {r.z_score:.1f} reference std above the reference mean"


# -- chunking -------------------------------------------------------------------------------------
def chunk_indices(
    reference: pd.DataFrame,
    *,
    chunk_size: int | None = None,
    period: str | None = None,
    time_column: str | None = None,
) -> list[np.ndarray]:
    """Row positions of each chunk of ``reference``: ``chunk_size`` consecutive rows (in the frame's
    order), or ``period``-long spans of ``time_column`` from its first value (half-open)."""
    import numpy as np
    import pandas as pd

    if (chunk_size is None) == (period is None):
        raise ValueError("give exactly one of chunk_size and period")
    n = len(reference)
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return [np.arange(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    if time_column is None or time_column not in reference.columns:
        raise ValueError(f"period chunking needs the time column in the reference (got {time_column!r})")
    span = pd.Timedelta(period)
    if span <= pd.Timedelta(0):
        raise ValueError(f"period must be positive, got {period!r}")
    t = pd.to_datetime(reference[time_column])
    if t.isna().any():
        raise ValueError(f"time column {time_column!r} has missing values")
    bucket = ((t - t.min()) // span).to_numpy(dtype=np.int64)
    order = np.argsort(bucket, kind="stable")
    keys, starts = np.unique(bucket[order], return_index=True)
    return np.split(order, starts[1:]) if keys.size else []


def _drop_small(chunks: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Chunks with fewer than half the median chunk's rows (an incomplete last week) are dropped:
    their statistics are noisier than a full window's and would inflate the spread."""
    import numpy as np

    if not chunks:
        return chunks, 0
    median = float(np.median([c.size for c in chunks]))
    kept = [c for c in chunks if c.size >= median / 2]
    return kept, len(chunks) - len(kept)


# -- calibration ----------------------------------------------------------------------------------
def statistic(result: drift.ColumnDrift) -> float | None:
    """The drift statistic of a verdict, larger = further: the distance, or ``-log10(p)``."""
    if result.score is None or result.status != "ok":
        return None
    if result.score_kind == "p_value":
        return -math.log10(max(float(result.score), MIN_P_VALUE))
    return float(result.score)


def pinned_method(column_stats: Mapping[str, Any]) -> str:
    """The test ``drift.column_drift`` picks for a window with the reference's own values, pinned so
    every chunk and window of this column is measured with the same statistic."""
    kind: drift.Kind = column_stats.get("kind", "numeric")
    count = int(column_stats.get("count", 0))
    distinct = len(column_stats.get("counts", {})) if kind == "categorical" else int(column_stats.get("distinct", 0))
    method = drift.choose_method(kind, count, distinct)
    if kind == "numeric" and method in ("chisquare", "z"):
        return FEW_VALUED_NUMERIC_METHOD
    return method


def calibrate(
    reference: pd.DataFrame,
    spec: Spec,
    *,
    stats: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    period: str | None = None,
    time_column: str | None = None,
    rule: ThresholdRule | None = None,
    columns: Sequence[str] | None = None,
    fixed_thresholds: Mapping[str, float] | None = None,
    leave_chunk_out: bool = True,
    min_chunks: int = MIN_CHUNKS,
) -> DriftCalibration:
    """Calibrate per-column drift thresholds on ``reference`` (the model's training inputs).

    ``stats``: ``drift.reference_stats`` of the same frame (computed when omitted). ``chunk_size`` /
    ``period`` (+ ``time_column``, default the spec's): how to cut the reference; match the monitoring
    window. ``columns``: default the spec's features (the score only when the reference has a
    ``score`` column and the stats describe it). ``fixed_thresholds``: ``{column: threshold}`` on the
    statistic's scale (distance or -log10 p), replacing the rule for those columns (a spec override).
    Raises ``ValueError`` when fewer than ``min_chunks`` chunks remain.
    """
    rule = rule or ThresholdRule()
    if stats is None:
        stats = drift.reference_stats(reference, spec)
    ref_cols: Mapping[str, Any] = stats.get("columns", {})
    if columns is None:
        names = list(spec.feature_names)
        if drift.SCORE_COLUMN in reference.columns and drift.SCORE_COLUMN in ref_cols:
            names.append(drift.SCORE_COLUMN)
    else:
        names = list(columns)
    names = [n for n in names if n in ref_cols and int(ref_cols[n].get("count", 0)) > 0]
    fixed = _checked_fixed(fixed_thresholds, names)
    if period is not None:
        time_column = time_column or spec.time_column
    chunks, dropped = _drop_small(chunk_indices(reference, chunk_size=chunk_size, period=period, time_column=time_column))
    if len(chunks) < min_chunks:
        raise ValueError(
            f"only {len(chunks)} usable reference chunks (at least {min_chunks} needed): use smaller chunks or a longer reference"
        )
    methods = {n: pinned_method(ref_cols[n]) for n in names}
    per_column = _chunk_statistics(reference, spec, stats, chunks, methods, leave_chunk_out=leave_chunk_out)
    features: dict[str, FeatureThreshold] = {}
    for name in names:
        if len(per_column[name]) < min_chunks:
            log.warning("drift calibration: %s has a statistic in only %d chunks: not calibrated", name, len(per_column[name]))
            continue
        features[name] = _feature_threshold(name, ref_cols[name], methods[name], per_column[name], rule, fixed.get(name))
    chunking = "period" if period is not None else "size"
    log.info(
        "drift calibration: %d columns on %d chunks (%s %s, %d dropped), %s",
        len(features),
        len(chunks),
        chunking,
        period or chunk_size,
        dropped,
        rule,
    )
    return DriftCalibration(
        rule=rule,
        chunking=chunking,
        chunk_parameter=str(period if period is not None else chunk_size),
        chunk_rows=[int(c.size) for c in chunks],
        leave_chunk_out=leave_chunk_out,
        features=features,
        dropped_chunks=dropped,
    )


def _checked_fixed(fixed_thresholds: Mapping[str, float] | None, names: Sequence[str]) -> dict[str, float]:
    fixed = dict(fixed_thresholds or {})
    unknown = sorted(set(fixed) - set(names))
    if unknown:
        raise ValueError(f"fixed thresholds name columns that are not calibrated: {', '.join(unknown)}")
    for column, value in fixed.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"fixed threshold of {column} must be a finite number >= 0, got {value!r}")
    return {c: float(v) for c, v in fixed.items()}


def _chunk_statistics(
    reference: pd.DataFrame,
    spec: Spec,
    stats: Mapping[str, Any],
    chunks: Sequence[np.ndarray],
    methods: Mapping[str, str],
    *,
    leave_chunk_out: bool,
) -> dict[str, list[float]]:
    """Each column's drift statistic for every chunk, against the reference (or the rest of it)."""
    import numpy as np

    names = list(methods)
    overrides = {n: {"method": m} for n, m in methods.items()}
    per_column: dict[str, list[float]] = {n: [] for n in names}
    for idx in chunks:
        chunk_stats: Mapping[str, Any] = stats
        if leave_chunk_out:
            keep = np.ones(len(reference), dtype=bool)
            keep[idx] = False
            chunk_stats = drift.reference_stats(reference.iloc[keep], spec)  # with its score column, if any
        for r in drift.column_drift(reference.iloc[idx], chunk_stats, spec, overrides, columns=names, workers=1):
            value = statistic(r)
            if value is not None:
                per_column[r.column].append(value)
    return per_column


def _feature_threshold(
    name: str, column_stats: Mapping[str, Any], method_name: str, statistics: Sequence[float], rule: ThresholdRule, fixed: float | None
) -> FeatureThreshold:
    import numpy as np

    values = np.asarray(statistics, dtype=np.float64)
    method = drift.METHODS[method_name]
    threshold = rule.threshold(values)
    if rule.floor_at_default:
        default = method.default_threshold
        threshold = max(threshold, -math.log10(default) if method.p_value else default)
    return FeatureThreshold(
        column=name,
        kind=column_stats.get("kind", "numeric"),
        method=method.name,
        score_kind="p_value" if method.p_value else "distance",
        threshold=threshold if fixed is None else fixed,
        reference_mean=float(values.mean()),
        reference_std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        chunk_statistics=values.tolist(),
        overridden=fixed is not None,
    )


# -- judging a window -----------------------------------------------------------------------------
def judge(result: drift.ColumnDrift, threshold: FeatureThreshold | None) -> CalibratedColumnDrift:
    """One ``drift.column_drift`` verdict judged against its calibrated threshold.

    Columns without a calibration keep their default verdict; ``missing_column`` and ``all_null``
    stay drifted (a vanished feature is not a matter of thresholds).
    """
    value = statistic(result)
    if threshold is None or value is None:
        return CalibratedColumnDrift(
            column=result.column,
            method=result.method,
            statistic=value,
            threshold=None,
            drifted=result.drifted,
            z_score=None,
            exceedance=None,
            status=result.status,
            default_drifted=result.drifted,
            detail=result,
        )
    if result.method != threshold.method:
        log.warning("column %s was tested with %s but calibrated with %s", result.column, result.method, threshold.method)
    spread = threshold.reference_std
    diff = value - threshold.reference_mean
    if spread > 0:
        z: float | None = diff / spread
    else:
        z = 0.0 if diff <= 0 else math.inf
    chunks = threshold.chunk_statistics
    exceedance = (1 + sum(1 for c in chunks if c >= value)) / (1 + len(chunks))
    return CalibratedColumnDrift(
        column=result.column,
        method=result.method,
        statistic=value,
        threshold=threshold.threshold,
        drifted=value > threshold.threshold,
        z_score=z,
        exceedance=exceedance,
        status=result.status,
        default_drifted=result.drifted,
        detail=result,
    )


def calibrated_drift(
    current: pd.DataFrame,
    stats: Mapping[str, Any],
    spec: Spec,
    calibration: DriftCalibration,
    *,
    columns: Sequence[str] | None = None,
    workers: int | None = None,
) -> list[CalibratedColumnDrift]:
    """Drift of each column of ``current`` judged against the calibrated thresholds.

    ``stats`` must be the reference statistics the calibration was made with. ``columns``: default
    the calibrated columns. The default verdict of each column (``default_drifted``) comes from the
    same pass.
    """
    names = list(columns) if columns is not None else list(calibration.features)
    median = calibration.median_chunk_rows
    if len(current) and median and len(current) < median / 2:
        log.warning("window of %d rows against thresholds calibrated on chunks of ~%d rows: expect more false alarms", len(current), median)
    pinned = {c: {"method": t.method} for c, t in calibration.features.items() if c in names}
    results = drift.column_drift(current, stats, spec, pinned, columns=names, workers=workers)
    judged = [judge(r, calibration.features.get(r.column)) for r in results]
    drifted = [j.column for j in judged if j.drifted]
    log.info("calibrated drift over %d rows: %d of %d columns drifted %s", len(current), len(drifted), len(judged), drifted)
    return judged


def calibrated_dataset_drift(results: Sequence[CalibratedColumnDrift], share: float = 0.5) -> drift.DatasetDrift:
    """Evidently's dataset rule (``drift.dataset_drift``) over the calibrated verdicts."""
    return drift.dataset_drift([r.as_column_drift() for r in results], share=share)
