"""ROC AUC by midranks, and the vectorised bootstrap engine behind :mod:`significance`.

* :func:`placements` / :func:`roc_auc`: DeLong's structural components and the Mann-Whitney ROC AUC
  (ties count half) in O(n log n) through midranks;
* :func:`bootstrap_metric`: a metric (``roc_auc``, ``accuracy``, ``f1``; for a regressor ``mae``,
  ``rmse``, ``r2`` of predicted values against real-valued outcomes) on many resamples at once.
  A resample is a row of draw counts (weights); each model's scores are sorted once and every
  resample's metric is a weighted sum over that order, so a batch of resamples is one numpy pass.
  ROC AUC resamples positives and negatives separately (every resample has both classes, as DeLong
  conditions on the class counts); accuracy, F1 and the regression metrics resample rows. Batches hold at most
  :data:`BATCH_CELLS` weights;
* :func:`block_bootstrap_metric`: the same engine with whole blocks of rows (e.g. days) drawn with
  replacement, for rows that are not independent (the flights of one day share its weather).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

METRICS: tuple[str, ...] = ("roc_auc", "accuracy", "f1", "mae", "rmse", "r2")
#: Metrics of a regressor: the labels are real-valued outcomes and the scores predicted values.
REGRESSION_METRICS: tuple[str, ...] = ("mae", "rmse", "r2")
#: Metrics where smaller is better (errors).
LOWER_IS_BETTER: tuple[str, ...] = ("mae", "rmse")
#: Bootstrap resamples are drawn in batches of at most this many cells (resamples x rows).
BATCH_CELLS = 2_000_000

ArrayLike = Any  # numpy arrays, pandas Series, sequences of numbers


# -- ROC AUC with midranks ------------------------------------------------------------------------
def as_labels(labels: ArrayLike) -> np.ndarray:
    import numpy as np

    y = np.asarray(labels)
    if y.dtype == bool:
        return y.astype(np.int8)
    y = y.astype(np.float64)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1 (or booleans) with no missing values")
    return y.astype(np.int8)


def as_values(values: ArrayLike) -> np.ndarray:
    """Real-valued outcomes of a regressor (finite floats)."""
    import numpy as np

    y = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(y)):
        raise ValueError("outcomes must be finite numbers with no missing values")
    return y


def as_targets(metric: str, labels: ArrayLike) -> np.ndarray:
    """``labels`` as ``metric`` takes them: real values for a regression metric, else 0/1."""
    return as_values(labels) if metric in REGRESSION_METRICS else as_labels(labels)


def as_scores(scores: ArrayLike, n: int, name: str = "scores") -> np.ndarray:
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"{name} must be a 1-d array of {n} values, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contain NaN or inf")
    return s


def placements(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: for each positive, the share of negatives it outranks
    (``V10``, ties count half); for each negative, the share of positives that outrank it (``V01``).
    Their means are both the ROC AUC. O(n log n) through midranks."""
    import numpy as np
    from scipy.stats import rankdata

    y = as_labels(labels)
    s = as_scores(scores, y.size)
    pos, neg = s[y == 1], s[y == 0]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        raise ValueError("ROC AUC needs both classes among the labels")
    tz = rankdata(np.concatenate([pos, neg]))
    v10 = (tz[:m] - rankdata(pos)) / n
    v01 = 1.0 - (tz[m:] - rankdata(neg)) / m
    return v10, v01


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC (Mann-Whitney, ties count half): equal to scikit-learn's ``roc_auc_score``."""
    v10, _ = placements(labels, scores)
    return float(v10.mean())


# -- the vectorised bootstrap engine --------------------------------------------------------------
@dataclass(frozen=True)
class _Prepared:
    """One model's scores sorted once, for the weighted metrics of many resamples."""

    order: np.ndarray
    #: Start of each run of tied scores in sorted order.
    group_starts: np.ndarray
    labels_sorted: np.ndarray
    predicted: np.ndarray  # score >= threshold, in the original row order
    #: Squared and absolute errors of a regressor's predictions, in the original row order (else None).
    squared: np.ndarray | None = None
    absolute: np.ndarray | None = None


def _prepare(y: np.ndarray, s: np.ndarray, threshold: float, metric: str = "roc_auc") -> _Prepared:
    import numpy as np

    if metric in REGRESSION_METRICS:  # no ordering needed: every regression metric is a weighted sum
        err = s - y
        empty = np.zeros(0, dtype=np.int64)
        return _Prepared(
            order=empty, group_starts=empty, labels_sorted=y, predicted=empty.astype(bool), squared=err**2, absolute=np.abs(err)
        )

    order = np.argsort(s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.concatenate([[True], ss[1:] != ss[:-1]]))
    return _Prepared(order=order, group_starts=starts, labels_sorted=y[order], predicted=s >= threshold)


def _weighted_metric(metric: str, y: np.ndarray, p: _Prepared, w: np.ndarray) -> np.ndarray:
    """The metric of each resample (one row of ``w``: how many times each row was drawn)."""
    import numpy as np

    if metric == "roc_auc":
        ws = w[:, p.order]
        pos = ws * p.labels_sorted
        neg = ws - pos
        pos_g = np.add.reduceat(pos, p.group_starts, axis=1)
        neg_g = np.add.reduceat(neg, p.group_starts, axis=1)
        below = np.cumsum(neg_g, axis=1) - neg_g
        num = np.einsum("ij,ij->i", pos_g, below + 0.5 * neg_g)
        den = pos_g.sum(axis=1) * neg_g.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / den, np.nan)
    if metric in REGRESSION_METRICS:
        return _weighted_regression(metric, y, p, w)
    yb, pred = y.astype(bool), p.predicted
    if metric == "accuracy":
        return (w @ (pred == yb).astype(np.float64)) / w.sum(axis=1)
    if metric == "f1":
        tp = w @ (pred & yb).astype(np.float64)
        fp = w @ (pred & ~yb).astype(np.float64)
        fn = w @ (~pred & yb).astype(np.float64)
        den = 2 * tp + fp + fn
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, 2 * tp / den, np.nan)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _weighted_regression(metric: str, y: np.ndarray, p: _Prepared, w: np.ndarray) -> np.ndarray:
    """MAE, RMSE or R2 of each resample: weighted means of the errors (R2: against the weighted
    variance of the resample's outcomes; NaN when they are all equal)."""
    import numpy as np

    assert p.squared is not None and p.absolute is not None
    n = w.sum(axis=1)
    if metric == "mae":
        return (w @ p.absolute) / n
    sse = w @ p.squared
    if metric == "rmse":
        return np.sqrt(sse / n)
    sst = w @ (y**2) - (w @ y) ** 2 / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 1e-12 * np.maximum(1.0, w @ (y**2)), 1.0 - sse / sst, np.nan)


def _resample_weights(rng: np.random.Generator, y: np.ndarray, size: int, stratified: bool) -> np.ndarray:
    """``size`` x n draw counts: rows resampled with replacement (within each class when stratified)."""
    import numpy as np

    n = y.size
    groups = [np.flatnonzero(y == 1), np.flatnonzero(y == 0)] if stratified else [np.arange(n)]
    offsets = (np.arange(size, dtype=np.int64) * n)[:, None]
    flat = [(offsets + g[rng.integers(0, g.size, size=(size, g.size))]).ravel() for g in groups if g.size]
    return np.bincount(np.concatenate(flat), minlength=size * n).reshape(size, n).astype(np.float64)


def bootstrap_metric(
    metric: str,
    samples: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]],
    *,
    n_boot: int,
    seed: int,
    threshold: float,
) -> list[list[np.ndarray]]:
    """For each (labels, [scores...]) sample: the metric of every score array on ``n_boot`` resamples.
    Score arrays of one sample share their resamples (paired); samples are resampled independently."""
    import numpy as np

    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = []
    for y, score_list in samples:
        prepared = [_prepare(y, s, threshold, metric) for s in score_list]
        stratified = metric == "roc_auc"
        batch = max(1, min(n_boot, BATCH_CELLS // max(y.size, 1)))
        parts: list[list[np.ndarray]] = [[] for _ in prepared]
        done = 0
        while done < n_boot:
            size = min(batch, n_boot - done)
            w = _resample_weights(rng, y, size, stratified)
            for i, p in enumerate(prepared):
                parts[i].append(_weighted_metric(metric, y, p, w))
            done += size
        out.append([np.concatenate(p) for p in parts])
    return out


def block_bootstrap_metric(
    metric: str, labels: np.ndarray, score_list: Sequence[np.ndarray], blocks: np.ndarray, *, n_boot: int, seed: int, threshold: float = 0.5
) -> list[np.ndarray]:
    """The metric of every score array on ``n_boot`` resamples of whole blocks: ``blocks[i]`` is row
    ``i``'s block (e.g. its day); a resample draws as many blocks as there are, with replacement, and
    weighs each row by how often its block was drawn. Score arrays share their resamples (paired)."""
    import numpy as np

    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    y = as_targets(metric, labels)
    ids, block_of_row = np.unique(np.asarray(blocks), return_inverse=True)
    rng = np.random.default_rng(seed)
    prepared = [_prepare(y, as_scores(s, y.size), threshold, metric) for s in score_list]
    batch = max(1, min(n_boot, BATCH_CELLS // max(y.size, 1)))
    parts: list[list[np.ndarray]] = [[] for _ in prepared]
    done = 0
    while done < n_boot:
        size = min(batch, n_boot - done)
        drawn = rng.integers(0, ids.size, size=(size, ids.size))
        counts = np.zeros((size, ids.size))
        np.add.at(counts, (np.arange(size)[:, None], drawn), 1.0)
        w = counts[:, block_of_row]
        for i, p in enumerate(prepared):
            parts[i].append(_weighted_metric(metric, y, p, w))
        done += size
    return [np.concatenate(p) for p in parts]


def point_metric(metric: str, labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> float:
    """The metric on the rows as they are (``accuracy`` and ``f1`` classify at ``score >= threshold``)."""
    import numpy as np

    y = as_targets(metric, labels)
    s = as_scores(scores, y.size)
    if metric == "roc_auc":
        return roc_auc(y, s)
    return float(_weighted_metric(metric, y, _prepare(y, s, threshold, metric), np.ones((1, y.size)))[0])
