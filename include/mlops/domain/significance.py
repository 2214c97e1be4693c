"""Is a difference real? Paired model comparisons, decay with a confidence interval, and trends.

The loop promoted on ties (``roc_auc 0.6498 vs champion 0.6498``) and on gains of 0.002-0.008 that a
week of traffic cannot tell from noise; it judged decay from one window's point estimate. The
statistics here answer the three questions the decisions need, on labelled rows only:

* :func:`delong_test` and :func:`paired_bootstrap`: does the challenger beat the champion *on the same
  rows* by at least ``min_gain``? Pairing matters: both models score the same rows, so most of the
  sampling noise is shared and cancels in the difference (an unpaired comparison of two AUCs with
  their own intervals is far less sensitive). DeLong (1988) is the asymptotic test for correlated
  ROC AUCs, computed in O(n log n) with midranks (Sun & Xu 2014); the paired bootstrap resamples rows
  (positives and negatives separately, so every resample has both classes) and works for any metric.
  The verdict is one-sided: ``significant`` when the hypothesis "gain <= min_gain" is rejected at
  ``alpha``, i.e. the one-sided ``1 - alpha`` lower bound of the gain is above ``min_gain``.
* :func:`decay_test`: is a window's realized metric below a baseline (the holdout value, or another
  labelled sample) by more than ``max_drop``, beyond its bootstrap uncertainty?
* :func:`trend_test`: is the metric declining over the last windows (one-sided Mann-Kendall, with
  Sen's slope and an OLS slope with its confidence interval)? Catches slow degradation that no single
  window shows.

Every function takes plain arrays (labels 0/1 and scores; for a regressor's ``mae``, ``rmse`` or ``r2``
real-valued outcomes and predicted values) and returns a frozen dataclass with the numbers
and a reason code; bootstraps are seeded and vectorised (all resamples of a batch in one numpy pass).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from include.mlops.domain.resampling import (
    LOWER_IS_BETTER,
    ArrayLike,
    as_labels,
    as_scores,
    as_targets,
    bootstrap_metric,
    placements,
    point_metric,
)

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

Metric = Literal["roc_auc", "accuracy", "f1", "mae", "rmse", "r2"]
DEFAULT_BOOT = 2000


# -- paired comparison ----------------------------------------------------------------------------
Reason = Literal["significant_gain", "not_significant", "gain_below_minimum", "no_gain"]


@dataclass(frozen=True)
class PairedComparison:
    """Champion vs challenger on the same labelled rows. ``difference`` is the challenger's gain:
    ``challenger - champion``, or ``champion - challenger`` for an error metric (MAE, RMSE), so a
    positive difference is always better."""

    method: str
    metric: str
    rows: int
    positives: int
    champion: float
    challenger: float
    difference: float
    #: Standard error of the difference.
    se: float
    #: Two-sided ``level`` confidence interval of the difference.
    ci_low: float
    ci_high: float
    level: float
    #: Two-sided p-value of "no difference".
    p_value: float
    min_gain: float
    #: One-sided p-value of "gain <= min_gain": the challenger is significantly better when < alpha.
    p_value_gain: float
    alpha: float
    significant: bool
    reason: Reason
    n_boot: int | None = None
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reason(significant: bool, difference: float, min_gain: float) -> Reason:
    if significant:
        return "significant_gain"
    if difference <= 0:
        return "no_gain"
    if difference <= min_gain:
        return "gain_below_minimum"
    return "not_significant"


def _check_levels(alpha: float, level: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The two-sided ``level`` percentile interval of bootstrap values."""
    import numpy as np

    lo, hi = np.quantile(values, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def _p_at_most(values: np.ndarray, bound: float) -> float:
    """Bootstrap p-value of "the statistic <= bound": the share of resamples at or below it, with the
    +1 correction (never exactly 0)."""
    return (1 + int((values <= bound).sum())) / (1 + values.size)


def _log_comparison(out: PairedComparison) -> None:
    log.info(
        "%s (%s): challenger %.4f vs champion %.4f, diff %+.4f (se %.4f), p(gain <= %g) %.3g: %s",
        *(out.method, out.metric, out.challenger, out.champion, out.difference, out.se, out.min_gain, out.p_value_gain, out.reason),
    )


def delong_test(
    labels: ArrayLike,
    champion_scores: ArrayLike,
    challenger_scores: ArrayLike,
    *,
    alpha: float = 0.05,
    min_gain: float = 0.0,
    level: float = 0.95,
) -> PairedComparison:
    """DeLong's test of two correlated ROC AUCs on the same rows (fast midrank version).

    The variance of the difference is ``(S10 / m + S01 / n)`` contracted with ``(-1, 1)``, where
    ``S10``/``S01`` are the covariance matrices of the two models' placements over the ``m``
    positives and ``n`` negatives.
    """
    from scipy.stats import norm

    _check_levels(alpha, level)
    y = as_labels(labels)
    a = as_scores(champion_scores, y.size, "champion_scores")
    b = as_scores(challenger_scores, y.size, "challenger_scores")
    v10a, v01a = placements(y, a)
    v10b, v01b = placements(y, b)
    m, n = v10a.size, v01a.size
    auc_a, auc_b = float(v10a.mean()), float(v10b.mean())
    d10, d01 = v10b - v10a, v01b - v01a
    var = (float(d10.var(ddof=1)) if m > 1 else 0.0) / m + (float(d01.var(ddof=1)) if n > 1 else 0.0) / n
    se = math.sqrt(max(var, 0.0))
    diff = auc_b - auc_a
    q = float(norm.ppf(0.5 + level / 2))
    if se > 0:
        p_two = float(2 * norm.sf(abs(diff) / se))
        p_gain = float(norm.sf((diff - min_gain) / se))
    else:  # identical rankings: the difference is exactly known
        p_two = 1.0 if diff == 0 else 0.0
        p_gain = 0.0 if diff > min_gain else 1.0
    significant = p_gain < alpha
    return _comparison(
        method="delong",
        metric="roc_auc",
        rows=int(y.size),
        positives=int(m),
        champion=auc_a,
        challenger=auc_b,
        difference=diff,
        se=se,
        ci_low=diff - q * se,
        ci_high=diff + q * se,
        level=level,
        p_value=p_two,
        min_gain=min_gain,
        p_value_gain=p_gain,
        alpha=alpha,
        significant=significant,
        reason=_reason(significant, diff, min_gain),
    )


def paired_bootstrap(
    labels: ArrayLike,
    champion_scores: ArrayLike,
    challenger_scores: ArrayLike,
    *,
    metric: Metric = "roc_auc",
    alpha: float = 0.05,
    min_gain: float = 0.0,
    level: float = 0.95,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    threshold: float = 0.5,
) -> PairedComparison:
    """Paired bootstrap of ``metric(challenger) - metric(champion)`` over the same resampled rows.

    ROC AUC resamples positives and negatives separately (as DeLong conditions on the class counts);
    accuracy, F1 and the regression metrics (``mae``, ``rmse``, ``r2``: ``labels`` are then the real
    outcomes) resample rows. For an error metric the gain is ``champion - challenger``. p-values are
    percentile-bootstrap ones with the +1 correction
    (never exactly 0): two-sided for "no difference", one-sided for "gain <= min_gain".
    """
    import numpy as np

    _check_levels(alpha, level)
    y = as_targets(metric, labels)
    a = as_scores(champion_scores, y.size, "champion_scores")
    b = as_scores(challenger_scores, y.size, "challenger_scores")
    if metric == "roc_auc" and (y.sum() == 0 or y.sum() == y.size):
        raise ValueError("ROC AUC needs both classes among the labels")
    point_a, point_b = point_metric(metric, y, a, threshold), point_metric(metric, y, b, threshold)
    ((boot_a, boot_b),) = bootstrap_metric(metric, [(y, [a, b])], n_boot=n_boot, seed=seed, threshold=threshold)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    d = sign * (boot_b - boot_a)
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError(f"{metric} is undefined on every resample")
    diff = sign * (point_b - point_a)
    lo, hi = _interval(d, level)
    p_two = min(1.0, 2 * min(_p_at_most(d, 0.0), _p_at_most(-d, 0.0)))
    p_gain = _p_at_most(d, min_gain)
    significant = p_gain < alpha
    return _comparison(
        method="paired_bootstrap",
        metric=metric,
        rows=int(y.size),
        positives=int(y.sum()) if metric not in ("mae", "rmse", "r2") else 0,
        champion=point_a,
        challenger=point_b,
        difference=diff,
        se=float(d.std(ddof=1)),
        ci_low=lo,
        ci_high=hi,
        level=level,
        p_value=float(p_two),
        min_gain=min_gain,
        p_value_gain=float(p_gain),
        alpha=alpha,
        significant=significant,
        reason=_reason(significant, diff, min_gain),
        n_boot=n_boot,
        seed=seed,
    )


def _comparison(**fields: Any) -> PairedComparison:
    out = PairedComparison(**fields)
    _log_comparison(out)
    return out


# -- realized decay -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """Labelled scores: a baseline given as rows rather than as one number."""

    labels: ArrayLike
    scores: ArrayLike


@dataclass(frozen=True)
class DecayVerdict:
    """One window's realized metric against a baseline (``drop = baseline - value``; for an error
    metric, MAE or RMSE, ``value - baseline``: a positive drop is always worse)."""

    metric: str
    rows: int
    value: float
    #: Two-sided ``level`` bootstrap interval of the window's metric.
    ci_low: float
    ci_high: float
    level: float
    baseline: float
    #: Whether the baseline was resampled too (given as rows) or taken as exact.
    baseline_resampled: bool
    drop: float
    #: Two-sided ``level`` interval of the drop.
    drop_ci_low: float
    drop_ci_high: float
    max_drop: float
    #: One-sided p-value of "drop <= max_drop".
    p_value: float
    alpha: float
    decayed: bool
    reason: Literal["decayed", "within_tolerance", "not_significant"]
    n_boot: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decay_test(
    labels: ArrayLike,
    scores: ArrayLike,
    baseline: float | Sample,
    *,
    metric: Metric = "roc_auc",
    max_drop: float = 0.0,
    alpha: float = 0.05,
    level: float = 0.95,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    threshold: float = 0.5,
) -> DecayVerdict:
    """Has the window's ``metric`` dropped below ``baseline`` by more than ``max_drop``, for real?
    (For an error metric, ``mae`` or ``rmse``: risen above it; ``max_drop`` is in the metric's unit.)

    ``baseline``: a number taken as exact (e.g. the holdout's ROC AUC), or a :class:`Sample` of
    labelled scores resampled independently of the window (e.g. the holdout rows themselves), which
    also carries the baseline's own uncertainty. ``decayed`` when "drop <= max_drop" is rejected at
    ``alpha`` (one-sided), i.e. the one-sided lower bound of the drop is above ``max_drop``.
    """
    import numpy as np

    _check_levels(alpha, level)
    y = as_targets(metric, labels)
    s = as_scores(scores, y.size)
    value = point_metric(metric, y, s, threshold)
    samples: list[tuple[np.ndarray, Sequence[np.ndarray]]] = [(y, [s])]
    if isinstance(baseline, Sample):
        by = as_targets(metric, baseline.labels)
        bs = as_scores(baseline.scores, by.size, "baseline scores")
        base_value = point_metric(metric, by, bs, threshold)
        samples.append((by, [bs]))
    else:
        base_value = float(baseline)
    boots = bootstrap_metric(metric, samples, n_boot=n_boot, seed=seed, threshold=threshold)
    boot_value = boots[0][0]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    d = sign * ((boots[1][0] if len(boots) > 1 else base_value) - boot_value)
    ok = np.isfinite(d)
    d, boot_value = d[ok], boot_value[ok]
    if d.size == 0:
        raise ValueError(f"{metric} is undefined on every resample")
    p = _p_at_most(d, max_drop)
    drop = sign * (base_value - value)
    reason: Literal["decayed", "within_tolerance", "not_significant"]
    reason = "decayed" if p < alpha else ("within_tolerance" if drop <= max_drop else "not_significant")
    log.info("decay of %s: %.4f vs baseline %.4f, drop %+.4f (max %.4f, p %.3g): %s", metric, value, base_value, drop, max_drop, p, reason)
    (lo, hi), (dlo, dhi) = _interval(boot_value, level), _interval(d, level)
    return DecayVerdict(
        *(metric, int(y.size), value, lo, hi, level, base_value, isinstance(baseline, Sample), drop, dlo, dhi, max_drop),
        *(float(p), alpha, reason == "decayed", reason, n_boot, seed),
    )


# -- trend over windows ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TrendVerdict:
    """A one-sided trend test over the last windows' metric values."""

    windows: int
    direction: Literal["decreasing", "increasing"]
    #: Mann-Kendall S, Kendall's tau (tau-a) and the tie-corrected normal statistic.
    s: int
    tau: float
    z: float
    #: One-sided p-value of "no trend" against ``direction``.
    p_value: float
    #: Sen's slope (median of pairwise slopes) per unit of position (per window by default).
    sen_slope: float
    #: Least-squares slope and its two-sided ``level`` interval (t distribution, n - 2 df).
    ols_slope: float
    ols_ci_low: float
    ols_ci_high: float
    level: float
    min_slope: float
    alpha: float
    significant: bool
    reason: Literal["trend", "no_trend", "slope_below_minimum", "too_few_windows"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Mann-Kendall needs at least this many windows (with fewer, even a perfect monotone run has p > 0.05).
MIN_TREND_WINDOWS = 5


def trend_test(
    values: ArrayLike,
    *,
    positions: ArrayLike | None = None,
    direction: Literal["decreasing", "increasing"] = "decreasing",
    last: int | None = None,
    alpha: float = 0.05,
    min_slope: float = 0.0,
    level: float = 0.95,
) -> TrendVerdict:
    """One-sided Mann-Kendall test over the ``last`` windows' values (NaN = no verdict, skipped).

    ``positions``: the windows' times (e.g. week numbers), default 0, 1, 2, ...: gaps left by skipped
    windows are kept. ``significant`` when Mann-Kendall rejects "no trend" at ``alpha`` *and* Sen's
    slope points in ``direction`` by more than ``min_slope`` per unit of position. Mann-Kendall is
    rank-based (robust to one odd window) and uses the normal approximation with the tie correction
    and a continuity correction; it assumes independent windows (no autocorrelation correction).
    """
    import numpy as np
    from scipy.stats import norm, t

    _check_levels(alpha, level)
    if direction not in ("decreasing", "increasing"):
        raise ValueError(f"direction must be 'decreasing' or 'increasing', got {direction!r}")
    v = np.asarray(values, dtype=np.float64)
    x = np.arange(v.size, dtype=np.float64) if positions is None else np.asarray(positions, dtype=np.float64)
    if x.shape != v.shape:
        raise ValueError("positions must have one value per window")
    if last is not None:
        v, x = v[-last:], x[-last:]
    ok = np.isfinite(v)
    v, x = v[ok], x[ok]
    n = int(v.size)
    if n < MIN_TREND_WINDOWS:
        return TrendVerdict(
            n, direction, 0, 0.0, 0.0, 1.0, 0.0, 0.0, -math.inf, math.inf, level, min_slope, alpha, False, "too_few_windows"
        )
    i, j = np.triu_indices(n, k=1)
    dv, dx = v[j] - v[i], x[j] - x[i]
    s = int(np.sign(dv).sum())
    _, ties = np.unique(v, return_counts=True)
    var = (n * (n - 1) * (2 * n + 5) - float((ties * (ties - 1) * (2 * ties + 5)).sum())) / 18.0
    z = 0.0 if s == 0 or var <= 0 else (s - math.copysign(1, s)) / math.sqrt(var)
    p = float(norm.cdf(z)) if direction == "decreasing" else float(norm.sf(z))
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = dv[dx != 0] / dx[dx != 0]
    sen = float(np.median(slopes)) if slopes.size else 0.0
    xc = x - x.mean()
    sxx = float((xc**2).sum())
    ols = float((xc * (v - v.mean())).sum() / sxx) if sxx > 0 else 0.0
    resid = v - v.mean() - ols * xc
    se = math.sqrt(float((resid**2).sum()) / (n - 2) / sxx) if sxx > 0 else math.inf
    q = float(t.ppf(0.5 + level / 2, n - 2))
    steep = (-sen if direction == "decreasing" else sen) > min_slope
    significant = p < alpha and steep
    reason: Literal["trend", "no_trend", "slope_below_minimum", "too_few_windows"]
    reason = "trend" if significant else ("slope_below_minimum" if p < alpha else "no_trend")
    log.info("trend over %d windows: S %d, z %.2f, p %.3g, Sen slope %.4g: %s", n, s, z, p, sen, reason)
    return TrendVerdict(
        windows=n,
        direction=direction,
        s=s,
        tau=s / (n * (n - 1) / 2),
        z=z,
        p_value=p,
        sen_slope=sen,
        ols_slope=ols,
        ols_ci_low=ols - q * se,
        ols_ci_high=ols + q * se,
        level=level,
        min_slope=min_slope,
        alpha=alpha,
        significant=significant,
        reason=reason,
    )
