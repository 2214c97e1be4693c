"""Calibrated drift wired into monitoring: the calibration built when a version is trained
(``steps.training_reference``), stored beside its drift statistics and read back with its
reference (``steps.monitoring.reference``), and ``check_drift`` judging each calibrated feature
against its own threshold; a version without one keeps the fixed rule."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from include.mlops.domain import drift
from include.mlops.domain.drift_calibration import DriftCalibration
from include.mlops.domain.spec import Spec, parse_spec
from include.mlops.steps.monitoring.checks import Summary, check_drift
from include.mlops.steps.monitoring.reference import CALIBRATION_FILE, Reference, read_calibration
from include.mlops.steps.training_reference import calibrated_columns, reference_statistics

pytestmark = pytest.mark.unit

CATS = ["a", "b", "c"]


def make_spec(enabled: bool, **monitoring: object) -> Spec:
    return parse_spec(
        {
            "name": "calibrated_monitoring",
            "source": {"kind": "files", "path": "/nonexistent"},
            "entity_id": "id",
            "time_column": "ts",
            "target": {"name": "y", "source_column": "raw_y", "op": ">", "value": 0},
            "features": [
                {"name": "x", "type": "numeric"},
                {"name": "wander", "type": "numeric"},
                {"name": "c", "type": "categorical", "categories": CATS},
                {"name": "month", "type": "integer"},
            ],
            "monitoring": {"drift_calibration": {"enabled": enabled, "k": 3.0, "chunk_days": 7}, "drift_exclude": ["month"], **monitoring},
        }
    )


def weeks(n_weeks: int, per_week: int = 1500, seed: int = 0, wander_shift: float = 0.0) -> pd.DataFrame:
    """Weekly chunks; ``wander`` moves its mean from week to week (weather-like), ``x`` does not."""
    rng = np.random.default_rng(seed)
    frames = []
    for w in range(n_weeks):
        t0 = datetime(2021, 1, 4) + timedelta(days=7 * w)
        frames.append(
            pd.DataFrame(
                {
                    "id": [f"{w}-{i}" for i in range(per_week)],
                    "ts": [t0 + timedelta(minutes=int(m)) for m in np.sort(rng.integers(0, 7 * 24 * 60, per_week))],
                    "x": rng.normal(size=per_week),
                    "wander": rng.normal(loc=rng.normal(scale=0.5) + wander_shift, size=per_week),
                    "c": rng.choice(CATS, size=per_week),
                    "month": 1 + w // 4,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def window(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    ok = df[["x", "wander", "c", "month"]].copy()
    ok["score"] = np.random.default_rng(seed).uniform(size=len(ok))
    return ok


def reference(spec: Spec, train: pd.DataFrame, holdout_scores: np.ndarray) -> Reference:
    stats, calibration = reference_statistics(spec, train, holdout_scores)
    return Reference("1", "run", stats, train.head(0), pd.DataFrame({"score": holdout_scores}), {"roc_auc": 0.7}, calibration)


def test_calibration_is_off_by_default_and_the_fixed_rule_stays():
    spec = make_spec(False)
    train = weeks(8)
    ref = reference(spec, train, np.random.default_rng(1).uniform(size=2000))
    assert ref.calibration is None
    s = Summary("m", "1", "champion", "a", "b", rows=1500)
    ok = window(weeks(1, seed=9), 2)
    check_drift(s, spec, ok, ref)
    fixed = drift.column_drift(ok, ref.stats, spec, {"score": {"threshold": spec.monitoring.score_drift_threshold}})
    expected = sorted(r.column for r in fixed if r.drifted and r.column in ("x", "wander", "c"))
    assert sorted(s.drift["drifted"]) == expected and s.drift["thresholds"] == "fixed"


def test_calibrated_features_exclude_drift_exclude_and_overridden_ones():
    spec = make_spec(True, drift_overrides={"c": {"method": "psi", "threshold": 0.2}})
    assert calibrated_columns(spec) == ["x", "wander"]
    ref = reference(spec, weeks(8), np.random.default_rng(1).uniform(size=2000))
    assert ref.calibration is not None and sorted(ref.calibration.features) == ["wander", "x"]
    s = Summary("m", "1", "champion", "a", "b", rows=1500)
    check_drift(s, spec, window(weeks(1, seed=9), 2), ref)
    assert s.drift["columns"]["c"]["method"] == "psi" and s.drift["columns"]["c"]["threshold"] == 0.2


def test_ordinary_weeks_drift_under_the_fixed_rule_but_not_calibrated_and_a_real_shift_does():
    spec_on, spec_off = make_spec(True), make_spec(False)
    train = weeks(8, seed=4)
    scores = np.random.default_rng(1).uniform(size=2000)
    on, off = reference(spec_on, train, scores), reference(spec_off, train, scores)
    fixed, calibrated = [], []
    for seed in range(20, 30):  # ordinary weeks: the wandering feature moves as it always has
        ordinary = window(weeks(1, seed=seed), 3)
        s_on, s_off = Summary("m", "1", "champion", "a", "b", 1500), Summary("m", "1", "champion", "a", "b", 1500)
        check_drift(s_on, spec_on, ordinary, on)
        check_drift(s_off, spec_off, ordinary, off)
        fixed.append(set(s_off.drift["drifted"]))
        calibrated.append(set(s_on.drift["drifted"]))
    assert sum("wander" in d for d in fixed) >= 5
    assert sum(bool(d) for d in calibrated) <= 2
    assert s_on.drift["thresholds"] == "calibrated" and s_on.drift["columns"]["x"]["note"].startswith("calibrated threshold")
    shifted = ordinary.copy()
    shifted["x"] = shifted["x"] + 1.0
    s = Summary("m", "1", "champion", "a", "b", 1500)
    check_drift(s, spec_on, shifted, on)
    assert "x" in s.drift["drifted"]


def test_too_few_chunks_keeps_the_fixed_thresholds():
    spec = make_spec(True)
    stats, calibration = reference_statistics(spec, weeks(2), np.random.default_rng(1).uniform(size=500))
    assert calibration is None and stats["rows"] == 3000


def test_the_stored_calibration_reads_back(tmp_path):
    spec = make_spec(True)
    _, calibration = reference_statistics(spec, weeks(6), np.random.default_rng(1).uniform(size=500))
    assert calibration is not None
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict()))
    assert read_calibration(tmp_path / CALIBRATION_FILE) == DriftCalibration.from_dict(calibration.to_dict())
    assert read_calibration(tmp_path / "absent.json") is None


def wandering_scores(train: pd.DataFrame, seed: int, shift: float = 0.0) -> np.ndarray:
    """A model's scores that follow the wandering feature (as a flights model's follow the weather)."""
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-(0.8 * train["wander"].to_numpy() + shift + rng.normal(scale=0.3, size=len(train)))))


def test_the_score_is_calibrated_on_the_versions_own_training_scores():
    spec_on, spec_off = make_spec(True), make_spec(True, drift_calibration={"enabled": True, "score": False})
    train = weeks(8, seed=4)
    holdout = weeks(1, seed=5)
    hold_scores = wandering_scores(holdout, 6)
    stats, calibration = reference_statistics(spec_on, train, hold_scores, wandering_scores(train, 7))
    assert calibration is not None and "score" in calibration.features
    ref_on = Reference("1", "run", stats, train.head(0), pd.DataFrame({"score": hold_scores}), {"roc_auc": 0.7}, calibration)
    # without the training scores, or with the score's calibration off, the score keeps the fixed threshold
    assert "score" not in reference_statistics(spec_on, train, hold_scores)[1].features  # type: ignore[union-attr]
    assert "score" not in reference_statistics(spec_off, train, hold_scores, wandering_scores(train, 7))[1].features  # type: ignore[union-attr]
    ref_off = reference(spec_off, train, hold_scores)
    fixed, calibrated = 0, 0
    for seed in range(40, 50):  # ordinary weeks: the scores move with the wandering feature, as in training
        week = weeks(1, seed=seed)
        ok = week[["x", "wander", "c", "month"]].assign(score=wandering_scores(week, seed + 100))
        s_on, s_off = Summary("m", "1", "champion", "a", "b", 1500), Summary("m", "1", "champion", "a", "b", 1500)
        check_drift(s_on, spec_on, ok, ref_on)
        check_drift(s_off, spec_off, ok, ref_off)
        fixed += "prediction_drift" in s_off.reason_codes
        calibrated += "prediction_drift" in s_on.reason_codes
    assert fixed >= 5 and calibrated <= 2, (fixed, calibrated)
    # a model whose output really moved (every score pushed up) still drifts against its calibration
    week = weeks(1, seed=60)
    moved = week[["x", "wander", "c", "month"]].assign(score=wandering_scores(week, 160, shift=2.0))
    s = Summary("m", "1", "champion", "a", "b", 1500)
    check_drift(s, spec_on, moved, ref_on)
    assert "prediction_drift" in s.reason_codes and s.outcome == "drift"
