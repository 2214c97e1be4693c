"""What monitoring will judge a version against, computed once when it is trained: the drift
statistics of its training inputs and holdout scores, and (when the spec turns it on) per-feature
drift thresholds calibrated on the training window itself (:mod:`include.mlops.domain.drift_calibration`).

Pure (frames in, JSON-able objects out): ``train_candidate`` logs them with the version, the
backtest (:mod:`include.mlops.steps.backtest`) builds every version's reference with the same call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.domain.drift_calibration import DriftCalibration
    from include.mlops.domain.spec import Spec

log = logging.getLogger(__name__)


def calibrated_columns(spec: Spec) -> list[str]:
    """The features whose thresholds are calibrated: not excluded from drift, no test of their own
    in ``drift_overrides`` (the spec's explicit test and threshold win)."""
    mon = spec.monitoring
    return [f for f in spec.feature_names if f not in mon.drift_exclude and f not in mon.drift_overrides]


def calibrates_score(spec: Spec) -> bool:
    """Whether a version's score threshold is calibrated (``drift_calibration.score``, and no
    explicit ``score`` test in ``drift_overrides``)."""
    cal = spec.monitoring.drift_calibration
    return cal.enabled and cal.score and "score" not in spec.monitoring.drift_overrides


def calibrate_reference(
    spec: Spec, train: pd.DataFrame, stats: dict[str, Any], train_scores: np.ndarray | pd.Series | None = None
) -> DriftCalibration | None:
    """Drift thresholds calibrated on the training window ``train`` (with the spec's time column),
    chunked by ``monitoring.drift_calibration.chunk_days``; None when calibration is off or the
    window has too few chunks (the version then keeps the fixed thresholds).

    With ``train_scores`` (the version's own scores of ``train``) and ``calibrates_score``, the score
    is calibrated too: each training chunk's scores against the rest of the training window's
    scores, both from the same model on the data it was fitted on, give the week-to-week spread of
    the score's statistic; a monitoring window (out of sample) is then judged against the holdout's
    scores (out of sample too) with that threshold."""
    from include.mlops.domain.drift_calibration import ThresholdRule, calibrate

    cfg = spec.monitoring.drift_calibration
    if not cfg.enabled:
        return None
    columns = calibrated_columns(spec)
    if train_scores is not None and calibrates_score(spec):
        train = train.assign(score=train_scores)
        columns = [*columns, "score"]
    try:
        return calibrate(
            train,
            spec,
            stats=stats,
            period=f"{cfg.chunk_days}D",
            rule=ThresholdRule(kind="std", k=cfg.k),
            columns=columns,
            min_chunks=cfg.min_chunks,
        )
    except ValueError as exc:
        log.warning("drift calibration skipped, the version keeps the fixed thresholds: %s", exc)
        return None


def reference_statistics(
    spec: Spec,
    train: pd.DataFrame,
    holdout_scores: np.ndarray | pd.Series,
    train_scores: np.ndarray | pd.Series | None = None,
) -> tuple[dict[str, Any], DriftCalibration | None]:
    """``drift.reference_stats`` of the training inputs with the holdout scores, and the drift
    calibration of the training window (or None); ``train_scores`` (the model's scores of ``train``)
    calibrate the score's threshold as well."""
    from include.mlops.domain.drift import reference_stats

    stats = reference_stats(train[spec.feature_names], spec, score=holdout_scores)
    return stats, calibrate_reference(spec, train, stats, train_scores)
