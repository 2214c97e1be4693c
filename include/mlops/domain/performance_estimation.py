"""Label-free performance estimate of a binary classifier: confidence-based (NannyML's CBPE).

Labels arrive a day (or weeks) after the predictions; the loop should not wait for them to notice a
model getting worse. If the model's scores are *calibrated* probabilities (``P(y = 1 | score) =
calibrated(score)``) on the reference and that relation still holds in the window (covariate shift,
no concept shift), each row's label is a Bernoulli draw with a known probability, and every
confusion-matrix count has a known expectation. CBPE estimates a metric from those expectations:

* **calibration** (:func:`fit_cbpe`): on labelled reference rows (the holdout: never the training
  rows, whose scores are overfit), an isotonic regression maps scores to probabilities. As NannyML
  does, ``calibration="auto"`` calibrates only when it helps: 10 stratified shuffle splits (90/10),
  isotonic fitted on each 90 %, the expected calibration error (ECE, 10 equal-count bins) of the
  pooled 10 % parts compared before and after. The fitted map is kept as its breakpoints (JSON-able;
  applying it is ``np.interp``, as scikit-learn's ``IsotonicRegression.predict`` with clipping).
* **ROC AUC** (:func:`estimate_roc_auc`): with ``p`` the calibrated probabilities and rows ordered by
  the model's own scores, the expected number of (positive, negative) pairs that the model orders
  right is ``sum_{i above j} p_i (1 - p_j)`` (ties count half), and the expected number of pairs is
  ``sum_{i != j} p_i (1 - p_j)``; their ratio is the estimate. NannyML integrates the ROC curve of the
  expected true/false positive counts, which is the same ratio but with each row also paired with
  itself (a difference of order 1/n: below 1e-4 on a window of a few thousand rows).
* **accuracy and F1** at the classification ``threshold``: expected TP = sum of ``p`` over rows
  predicted positive, FP = sum of ``1 - p`` over them, FN = sum of ``p`` over rows predicted
  negative; accuracy = (TP + TN) / n, F1 = 2 TP / (2 TP + FP + FN).

Uncertainty (``sampling_error``): how much the metric of a sample of this many rows varies, the
quantity NannyML reports as "sampling error":

* ROC AUC: DeLong's variance ``var(V10) / m + var(V01) / n`` with the placement variances measured on
  the reference and the window's expected class counts ``m = sum p``, ``n = sum (1 - p)``. (NannyML
  keeps the positives' term only, ``std(V10) / sqrt(m)``: a slightly smaller band.)
* accuracy: binomial, ``sqrt(a (1 - a) / rows)``;
* F1: delta method on the share ``q = TP / (TP + FP + FN)`` of relevant rows: ``F1 = 2q / (1 + q)``,
  ``se = 2 / (1 + q)^2 * sqrt(q (1 - q) / (TP + FP + FN))``.

``lower``/``upper`` are ``value -+ z * sampling_error`` at the requested ``level``. A metric is
``degraded`` when its drop from the reference value is beyond ``k`` standard errors of the difference
(``sqrt(se_window^2 + se_reference^2)``) and more than ``min_drop``: ``drop - k * se > min_drop``
(``k = 3``, NannyML's default band).

What CBPE cannot see: a change of ``P(y | x)`` itself (concept shift: the weather delays more flights
than in January at the same scores). The estimate then stays confidently wrong until labels arrive;
realized quality (:mod:`include.mlops.domain.significance`) remains the judge once they do.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from include.mlops.domain.resampling import placements

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

CBPE_FORMAT = "mlops.cbpe.reference/1"
MetricName = Literal["roc_auc", "accuracy", "f1"]
METRIC_NAMES: tuple[MetricName, ...] = ("roc_auc", "accuracy", "f1")
Calibration = Literal["auto", "isotonic", "none"]

ArrayLike = Any


# -- the calibration map --------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreCalibrator:
    """A monotone piecewise-linear map from scores to probabilities (identity when empty)."""

    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    @property
    def identity(self) -> bool:
        return not self.x

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        import numpy as np

        s = np.asarray(scores, dtype=np.float64)
        if self.identity:
            return np.clip(s, 0.0, 1.0)
        return np.interp(s, np.asarray(self.x), np.asarray(self.y))


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> ScoreCalibrator:
    """Isotonic regression of labels on scores (increasing, clipped outside the seen range)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", increasing=True, y_min=0.0, y_max=1.0)
    iso.fit(scores, labels)
    return ScoreCalibrator(x=[float(v) for v in iso.X_thresholds_], y=[float(v) for v in iso.y_thresholds_])


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """Mean |mean label - mean probability| over ``bins`` equal-count bins of the sorted probabilities,
    weighted by bin size (NannyML's ECE)."""
    import numpy as np

    n = probabilities.size
    bins = min(bins, n // 2)
    if bins < 2:
        raise ValueError(f"{n} rows are too few to measure calibration")
    order = np.argsort(probabilities, kind="stable")
    p, y = probabilities[order], labels[order]
    edges = np.arange(0, n + 1, n // bins)
    edges[-1] = n
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        total += (hi - lo) / n * abs(float(p[lo:hi].mean()) - float(y[lo:hi].mean()))
    return total


def calibration_gain(scores: np.ndarray, labels: np.ndarray, *, splits: int = 10, seed: int = 42) -> tuple[float, float]:
    """ECE of the raw scores and of isotonic-calibrated ones, on held-out 10 % parts of ``splits``
    stratified shuffle splits (pooled)."""
    import numpy as np
    from sklearn.model_selection import StratifiedShuffleSplit

    sss = StratifiedShuffleSplit(n_splits=splits, test_size=0.1, random_state=seed)
    ys, raw, cal = [], [], []
    for train, test in sss.split(scores.reshape(-1, 1), labels):
        calibrator = fit_isotonic(scores[train], labels[train])
        ys.append(labels[test])
        raw.append(scores[test])
        cal.append(calibrator(scores[test]))
    y = np.concatenate(ys)
    return expected_calibration_error(y, np.concatenate(raw)), expected_calibration_error(y, np.concatenate(cal))


# -- estimators of one metric ---------------------------------------------------------------------
def estimate_roc_auc(probabilities: np.ndarray, scores: np.ndarray) -> float | None:
    """Expected-pairs ROC AUC: rows ranked by ``scores``, labels expected from ``probabilities``."""
    import numpy as np

    p = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    s, p = np.asarray(scores, dtype=np.float64)[order], p[order]
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    pos_g = np.add.reduceat(p, starts)
    neg_g = np.add.reduceat(1.0 - p, starts)
    below = np.cumsum(neg_g) - neg_g
    self_pairs = float((p * (1.0 - p)).sum())
    num = float((pos_g * (below + 0.5 * neg_g)).sum()) - 0.5 * self_pairs
    den = float(pos_g.sum() * neg_g.sum()) - self_pairs
    return num / den if den > 0 else None


def _expected_counts(probabilities: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float, float]:
    p = probabilities
    tp = float(p[predicted].sum())
    fp = float((1.0 - p[predicted]).sum())
    fn = float(p[~predicted].sum())
    tn = float((1.0 - p[~predicted]).sum())
    return tp, fp, fn, tn


def estimate_accuracy(probabilities: np.ndarray, predicted: np.ndarray) -> float | None:
    tp, fp, fn, tn = _expected_counts(probabilities, predicted)
    n = tp + fp + fn + tn
    return (tp + tn) / n if n > 0 else None


def estimate_f1(probabilities: np.ndarray, predicted: np.ndarray) -> float | None:
    tp, fp, fn, _ = _expected_counts(probabilities, predicted)
    den = 2 * tp + fp + fn
    return 2 * tp / den if den > 0 else None


def _f1_se(tp: float, fp: float, fn: float) -> float | None:
    relevant = tp + fp + fn
    if relevant <= 0:
        return None
    q = tp / relevant
    return 2.0 / (1.0 + q) ** 2 * math.sqrt(q * (1.0 - q) / relevant)


def realized_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> dict[str, float | None]:
    """ROC AUC, accuracy and F1 (at ``score >= threshold``) on labelled rows."""
    import numpy as np

    y = np.asarray(labels).astype(np.float64)
    s = np.asarray(scores, dtype=np.float64)
    both = bool(y.size) and 0 < y.sum() < y.size
    auc = float(placements(y, s)[0].mean()) if both else None
    pred = s >= threshold
    yb = y.astype(bool)
    tp, fp, fn = int((pred & yb).sum()), int((pred & ~yb).sum()), int((~pred & yb).sum())
    return {
        "roc_auc": auc,
        "accuracy": float((pred == yb).mean()) if y.size else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None,
    }


# -- the fitted reference -------------------------------------------------------------------------
@dataclass(frozen=True)
class CBPEReference:
    """What CBPE keeps from the labelled reference (JSON-able through :meth:`to_dict`)."""

    calibrator: ScoreCalibrator
    #: Whether the isotonic map is applied (``False``: scores are taken as probabilities).
    calibrated: bool
    calibration: str
    #: Held-out ECE before / after isotonic calibration (``None`` when not measured).
    ece_raw: float | None
    ece_calibrated: float | None
    threshold: float
    rows: int
    positive_rate: float
    #: Realized metrics on the reference (the raw scores and labels).
    realized: dict[str, float | None]
    #: Their sampling errors on the reference's own size.
    realized_se: dict[str, float | None]
    #: Variances of DeLong's placements on the reference (positives, negatives).
    auc_var_pos: float
    auc_var_neg: float
    #: CBPE's own estimate on the reference scores: far from ``realized`` means the calibrated
    #: probabilities do not describe the labels (e.g. ``P(y | score)`` not monotone, which an
    #: isotonic map cannot follow) and window estimates inherit that bias.
    estimated_on_reference: dict[str, float | None] = field(default_factory=dict)
    format: str = CBPE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CBPEReference:
        if data.get("format") != CBPE_FORMAT:
            raise ValueError(f"unknown CBPE reference format {data.get('format')!r} (expected {CBPE_FORMAT!r})")
        fields = dict(data)
        fields["calibrator"] = ScoreCalibrator(**data["calibrator"])
        return cls(**fields)

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        import numpy as np

        s = np.asarray(scores, dtype=np.float64)
        return self.calibrator(s) if self.calibrated else np.clip(s, 0.0, 1.0)


def _clean(scores: ArrayLike, labels: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray | None, int]:
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    keep = np.isfinite(s)
    y = None
    if labels is not None:
        y = np.asarray(labels, dtype=np.float64)
        if y.shape != s.shape:
            raise ValueError("labels and scores must have the same length")
        keep &= np.isfinite(y)
        y = y[keep]
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("labels must be 0/1")
    dropped = int((~keep).sum())
    if dropped:
        log.warning("CBPE: %d rows without a finite score%s left out", dropped, " or label" if labels is not None else "")
    return s[keep], y, dropped


def fit_cbpe(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    threshold: float = 0.5,
    calibration: Calibration = "auto",
    seed: int = 42,
) -> CBPEReference:
    """Fit CBPE on labelled reference scores (the holdout's predictions and outcomes).

    ``calibration``: ``auto`` (isotonic when it lowers the held-out ECE, NannyML's rule), ``isotonic``
    (always) or ``none`` (scores are already probabilities).
    """
    import numpy as np

    if calibration not in ("auto", "isotonic", "none"):
        raise ValueError(f"calibration must be auto, isotonic or none, got {calibration!r}")
    s, y, _ = _clean(scores, labels)
    assert y is not None
    if s.size < 20 or y.sum() < 2 or y.sum() > y.size - 2:
        raise ValueError(f"CBPE needs a labelled reference with both classes ({s.size} rows, {int(y.sum())} positives)")
    ece_raw = ece_cal = None
    use = calibration == "isotonic"
    if calibration == "auto":
        ece_raw, ece_cal = calibration_gain(s, y, seed=seed)
        use = ece_cal < ece_raw
    calibrator = fit_isotonic(s, y) if use else ScoreCalibrator()
    v10, v01 = placements(y, s)
    realized = realized_metrics(y, s, threshold)
    p = calibrator(s) if use else np.clip(s, 0.0, 1.0)
    ref = CBPEReference(
        calibrator=calibrator,
        calibrated=use,
        calibration=calibration,
        ece_raw=ece_raw,
        ece_calibrated=ece_cal,
        threshold=threshold,
        rows=int(s.size),
        positive_rate=float(y.mean()),
        realized=realized,
        realized_se={},
        auc_var_pos=float(v10.var(ddof=1)),
        auc_var_neg=float(v01.var(ddof=1)),
    )
    # the reference's own sampling errors, from its labels (the expected counts are the real ones)
    se = _sampling_errors(ref, p_true=y, predicted=s >= threshold, values=realized)
    predicted = s >= threshold
    own = {"roc_auc": estimate_roc_auc(p, s), "accuracy": estimate_accuracy(p, predicted), "f1": estimate_f1(p, predicted)}
    ref = replace(ref, realized_se=se, estimated_on_reference=own)
    log.info(
        "CBPE fitted on %d rows (positive rate %.3f, ROC AUC %.4f, estimated on itself %.4f): calibration %s (ECE %s -> %s)",
        ref.rows,
        ref.positive_rate,
        realized["roc_auc"] or float("nan"),
        own["roc_auc"] or float("nan"),
        "isotonic" if use else "none",
        f"{ece_raw:.4f}" if ece_raw is not None else "-",
        f"{ece_cal:.4f}" if ece_cal is not None else "-",
    )
    return ref


def _sampling_errors(
    ref: CBPEReference, *, p_true: np.ndarray, predicted: np.ndarray, values: Mapping[str, float | None]
) -> dict[str, float | None]:
    """Sampling errors of the three metrics for a sample with these (expected) labels."""
    m = float(p_true.sum())
    n = float(p_true.size) - m
    auc_se = math.sqrt(ref.auc_var_pos / m + ref.auc_var_neg / n) if m > 0 and n > 0 else None
    acc = values.get("accuracy")
    acc_se = math.sqrt(acc * (1 - acc) / p_true.size) if acc is not None and p_true.size else None
    tp, fp, fn, _ = _expected_counts(p_true, predicted)
    return {"roc_auc": auc_se, "accuracy": acc_se, "f1": _f1_se(tp, fp, fn)}


# -- estimating a window --------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricEstimate:
    """One estimated metric of a window, against the reference."""

    metric: str
    value: float | None
    sampling_error: float | None
    lower: float | None
    upper: float | None
    reference: float | None
    #: ``value - reference``.
    change: float | None
    #: ``change`` in standard errors of the difference (window and reference errors combined).
    z: float | None
    degraded: bool


@dataclass(frozen=True)
class PerformanceEstimate:
    """CBPE's estimate of a window without labels."""

    rows: int
    #: Mean calibrated probability: the positive rate CBPE expects.
    expected_positive_rate: float | None
    level: float
    k: float
    min_drop: float
    metrics: dict[str, MetricEstimate]

    @property
    def degraded(self) -> list[str]:
        return [m for m, e in self.metrics.items() if e.degraded]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_performance(
    reference: CBPEReference,
    scores: ArrayLike,
    *,
    level: float = 0.95,
    k: float = 3.0,
    min_drop: float = 0.0,
) -> PerformanceEstimate:
    """CBPE estimate of ROC AUC, accuracy and F1 of a window from its scores alone.

    ``level``: the band ``value -+ z * sampling_error``. ``k`` / ``min_drop``: a metric is
    ``degraded`` when ``reference - value - k * se_diff > min_drop``.
    """
    import numpy as np
    from scipy.stats import norm

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    s, _, _ = _clean(scores)
    empty: dict[str, MetricEstimate] = {
        m: MetricEstimate(m, None, None, None, None, reference.realized.get(m), None, None, False) for m in METRIC_NAMES
    }
    if s.size == 0:
        return PerformanceEstimate(0, None, level, k, min_drop, empty)
    p = reference.probabilities(s)
    predicted = s >= reference.threshold
    values: dict[str, float | None] = {
        "roc_auc": estimate_roc_auc(p, s),
        "accuracy": estimate_accuracy(p, predicted),
        "f1": estimate_f1(p, predicted),
    }
    errors = _sampling_errors(reference, p_true=p, predicted=predicted, values=values)
    q = float(norm.ppf(0.5 + level / 2))
    metrics: dict[str, MetricEstimate] = {}
    for name in METRIC_NAMES:
        value, se, ref_value = values[name], errors[name], reference.realized.get(name)
        ref_se = reference.realized_se.get(name)
        change = z = None
        degraded = False
        if value is not None and ref_value is not None:
            change = value - ref_value
            se_diff = math.sqrt((se or 0.0) ** 2 + (ref_se or 0.0) ** 2)
            z = change / se_diff if se_diff > 0 else None
            degraded = -change - k * se_diff > min_drop
        metrics[name] = MetricEstimate(
            metric=name,
            value=value,
            sampling_error=se,
            lower=None if value is None or se is None else max(0.0, value - q * se),
            upper=None if value is None or se is None else min(1.0, value + q * se),
            reference=ref_value,
            change=change,
            z=z,
            degraded=degraded,
        )
    out = PerformanceEstimate(
        rows=int(s.size),
        expected_positive_rate=float(np.mean(p)),
        level=level,
        k=k,
        min_drop=min_drop,
        metrics=metrics,
    )
    auc = metrics["roc_auc"]
    log.info(
        "CBPE on %d rows: ROC AUC %s (+-%s) vs reference %s%s",
        out.rows,
        f"{auc.value:.4f}" if auc.value is not None else "-",
        f"{auc.sampling_error:.4f}" if auc.sampling_error is not None else "-",
        f"{auc.reference:.4f}" if auc.reference is not None else "-",
        f"; degraded: {', '.join(out.degraded)}" if out.degraded else "",
    )
    return out
