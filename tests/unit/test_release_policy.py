"""The opt-in policies of issue 16 where they meet the spec: the spec's fields and their checks, and
the paired test a promotion and a bake period run on the two versions' scores of the same rows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from include.mlops.domain.spec import SpecError, parse_spec
from include.mlops.steps.paired import PairedScores, compare

pytestmark = pytest.mark.unit

FLIGHTS = Path(__file__).resolve().parents[2] / "include/specs/flights.yaml"


def spec(**sections):
    raw = yaml.safe_load(FLIGHTS.read_text())
    for name, fields in sections.items():
        raw[name] = {**raw.get(name, {}), **fields}
    return parse_spec(raw)


def test_defaults_keep_todays_behaviour():
    """The spec model's defaults (a spec that leaves the sections out) keep the policies off; the
    flights spec turns some on (see its comments and docs/backtest.md)."""
    raw = yaml.safe_load(FLIGHTS.read_text())
    for section in ("promotion", "early_window", "retraining", "monitoring"):
        raw.pop(section, None)
    s = parse_spec(raw)
    assert (s.promotion.test, s.promotion.bake_days, s.promotion.min_gain) == ("none", 0.0, 0.0)
    assert (s.early_window.on_inconclusive, s.early_window.max_error_rate_increase) == ("keep", None)
    assert (s.retraining.retrain_on_drift, s.retraining.decay_evidence, s.retraining.max_model_age_days) == (True, "point", None)
    assert (s.monitoring.trend_windows, s.monitoring.drift_calibration.enabled) == (0, False)


@pytest.mark.parametrize(
    ("sections", "words"),
    [
        ({"promotion": {"test": "delong", "metric": "log_loss"}}, "test 'delong' compares ROC AUCs"),
        ({"promotion": {"test": "bootstrap", "metric": "brier_score"}}, "test 'bootstrap' supports"),
        ({"promotion": {"bake_days": 7}}, "bake_days > 0 needs a test"),
        ({"promotion": {"alpha": 1.5}}, "promotion.alpha"),
        ({"early_window": {"on_inconclusive": "ignore"}}, "early_window.on_inconclusive"),
        ({"retraining": {"max_model_age_days": 0}}, "retraining.max_model_age_days"),
    ],
)
def test_bad_policy_fields_are_refused(sections, words):
    with pytest.raises(SpecError, match=words):
        spec(**sections)


def test_valid_opt_in_policy_loads():
    s = spec(promotion={"test": "bootstrap", "metric": "f1_score", "bake_days": 7, "min_gain": 0.01})
    assert s.promotion.bake_days == 7 and s.promotion.test == "bootstrap"


def paired(gain: float, n: int = 3000, seed: int = 1) -> PairedScores:
    """Two models' scores of the same rows: the challenger's carries ``gain`` more signal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    noise = rng.normal(size=n)
    return PairedScores(y, {"1": 0.5 * y + noise, "2": (0.5 + gain) * y + noise})


def rt(**promotion):
    return SimpleNamespace(spec=spec(promotion=promotion))


@pytest.mark.parametrize(
    ("test", "metric", "gain", "min_gain", "significant", "reason"),
    [
        ("delong", "roc_auc", 0.4, 0.0, True, "significant_gain"),
        ("delong", "roc_auc", 0.0, 0.0, False, "no_gain"),  # the same scores: a tie
        ("delong", "roc_auc", 0.4, 0.5, False, "gain_below_minimum"),
        ("bootstrap", "roc_auc", 0.4, 0.0, True, "significant_gain"),
        ("bootstrap", "accuracy_score", 0.0, 0.0, False, "no_gain"),
    ],
)
def test_compare_runs_the_spec_test_on_paired_scores(test, metric, gain, min_gain, significant, reason):
    c = compare(rt(test=test, metric=metric), paired(gain), "1", "2", min_gain=min_gain)
    assert c is not None
    assert (c.significant, c.reason) == (significant, reason), c
    assert c.method == ("delong" if test == "delong" else "paired_bootstrap") and c.rows == 3000


def test_compare_is_off_or_not_computable():
    assert compare(rt(), paired(0.4), "1", "2", min_gain=0.0) is None  # test: none
    one_class = PairedScores(np.ones(50, dtype=int), {"1": np.linspace(0, 1, 50), "2": np.linspace(0, 1, 50)})
    assert compare(rt(test="delong"), one_class, "1", "2", min_gain=0.0) is None
    empty = PairedScores(np.zeros(0, dtype=int), {"1": np.zeros(0), "2": np.zeros(0)})
    assert compare(rt(test="delong"), empty, "1", "2", min_gain=0.0) is None
