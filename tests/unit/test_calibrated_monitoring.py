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
