"""Signal statistics: DeLong and the paired bootstrap, realized decay, trends over windows, CBPE's
label-free estimate, and drift thresholds calibrated on the reference (small synthetic data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from include.mlops.domain import drift, drift_calibration, resampling
from include.mlops.domain import performance_estimation as pe
from include.mlops.domain import significance as sig
from include.mlops.domain.spec import Spec, parse_spec

pytestmark = pytest.mark.unit


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def two_models(n: int, seed: int, *, noise_a: float, noise_b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.binomial(1, 0.3, n)
    signal = rng.normal(size=n) + 1.0 * y
    return y, signal + rng.normal(scale=noise_a, size=n), signal + rng.normal(scale=noise_b, size=n)


# -- ROC AUC and DeLong ---------------------------------------------------------------------------
def test_roc_auc_matches_scikit_learn_with_ties():
    y, a, _ = two_models(2000, 1, noise_a=1.0, noise_b=1.0)
    a = np.round(a, 1)  # many ties
    assert resampling.roc_auc(y, a) == pytest.approx(roc_auc_score(y, a), abs=1e-12)


def slow_delong_variance(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """DeLong's variance of AUC(b) - AUC(a) straight from its definition (all pairs)."""
    pos, neg = y == 1, y == 0

    def comps(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (a10, a01), (b10, b01) = comps(a), comps(b)
    return np.var(b10 - a10, ddof=1) / pos.sum() + np.var(b01 - a01, ddof=1) / neg.sum()


def test_fast_delong_equals_the_definition():
    y, a, b = two_models(300, 2, noise_a=1.0, noise_b=0.5)
    a = np.round(a, 1)
    out = sig.delong_test(y, a, b)
    assert out.se == pytest.approx(np.sqrt(slow_delong_variance(y, a, b)), rel=1e-10)
    assert out.champion == pytest.approx(roc_auc_score(y, a))
    assert out.challenger == pytest.approx(roc_auc_score(y, b))
    assert out.difference == pytest.approx(out.challenger - out.champion)


def test_delong_agrees_with_the_paired_bootstrap():
    y, a, b = two_models(3000, 3, noise_a=1.2, noise_b=1.0)
    d = sig.delong_test(y, a, b)
    bt = sig.paired_bootstrap(y, a, b, n_boot=1000, seed=1)
    assert bt.difference == pytest.approx(d.difference)
    assert bt.se == pytest.approx(d.se, rel=0.15)
    assert bt.ci_low == pytest.approx(d.ci_low, abs=0.01)
    assert bt.ci_high == pytest.approx(d.ci_high, abs=0.01)
    assert abs(bt.p_value - d.p_value) < 0.1


def test_identical_models_are_not_different():
    y, a, _ = two_models(2000, 4, noise_a=1.0, noise_b=1.0)
    for out in (sig.delong_test(y, a, a.copy()), sig.paired_bootstrap(y, a, a.copy(), n_boot=300)):
        assert out.difference == 0.0
        assert out.p_value == pytest.approx(1.0)
        assert not out.significant
        assert out.reason == "no_gain"


def test_clearly_better_challenger_is_significant():
    y, a, b = two_models(3000, 5, noise_a=2.0, noise_b=0.3)
    for out in (sig.delong_test(y, a, b), sig.paired_bootstrap(y, a, b, n_boot=500)):
        assert out.difference > 0.1
        assert out.p_value < 0.01
        assert out.significant and out.reason == "significant_gain"


def test_minimum_gain_is_required():
    y, a, b = two_models(3000, 6, noise_a=1.1, noise_b=1.0)
    d = sig.delong_test(y, a, b)
    assert 0 < d.difference < 0.05
    strict = sig.delong_test(y, a, b, min_gain=0.05)
    assert not strict.significant
    assert strict.reason == "gain_below_minimum"
    assert strict.p_value_gain > d.p_value_gain


def test_a_tie_on_a_week_of_traffic_is_not_a_gain():
    """The issue's promotion at 0.6498 vs 0.6498: two equally good models never pass."""
    y, a, b = two_models(5000, 7, noise_a=1.5, noise_b=1.5)
    assert not sig.delong_test(y, a, b).significant
    assert not sig.paired_bootstrap(y, a, b, n_boot=500).significant


def test_bootstrap_is_seeded_and_handles_other_metrics():
    y, a, b = two_models(1500, 8, noise_a=1.5, noise_b=0.5)
    pa, pb = sigmoid(a - 1), sigmoid(b - 1)
    first = sig.paired_bootstrap(y, pa, pb, metric="f1", n_boot=300, seed=3)
    again = sig.paired_bootstrap(y, pa, pb, metric="f1", n_boot=300, seed=3)
    assert first == again
    assert first.challenger == pytest.approx(pe.realized_metrics(y, pb)["f1"])
    acc = sig.paired_bootstrap(y, pa, pb, metric="accuracy", n_boot=300)
    assert acc.champion == pytest.approx(np.mean((pa >= 0.5) == y))
    assert acc.significant


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="both classes"):
        sig.delong_test(np.ones(10), np.arange(10.0), np.arange(10.0))
    with pytest.raises(ValueError, match="0/1"):
        resampling.roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        resampling.roc_auc([0, 1, 1], [0.1, np.nan, 0.3])


# -- realized decay -------------------------------------------------------------------------------
def test_decay_is_judged_with_its_interval():
    y, a, b = two_models(3000, 9, noise_a=1.0, noise_b=3.0)
    good_auc = resampling.roc_auc(y, a)
    worse = sig.decay_test(y, b, good_auc, max_drop=0.02, n_boot=500)
    assert worse.drop > 0.1 and worse.decayed and worse.reason == "decayed"
    assert worse.ci_low < worse.value < worse.ci_high
    same = sig.decay_test(y, a, good_auc, max_drop=0.0, n_boot=500)
    assert not same.decayed
    # a small dip inside the noise of 3000 rows is not decay
    dip = sig.decay_test(y, a, good_auc + 0.005, n_boot=500)
    assert dip.drop == pytest.approx(0.005) and not dip.decayed and dip.reason == "not_significant"


def test_decay_against_a_labelled_baseline_is_wider():
    y, a, _ = two_models(4000, 10, noise_a=1.0, noise_b=1.0)
    y2, a2, _ = two_models(4000, 11, noise_a=1.0, noise_b=1.0)
    exact = sig.decay_test(y, a, resampling.roc_auc(y2, a2), n_boot=500)
    sampled = sig.decay_test(y, a, sig.Sample(y2, a2), n_boot=500)
    assert sampled.baseline == pytest.approx(exact.baseline)
    assert sampled.baseline_resampled
    assert sampled.drop_ci_high - sampled.drop_ci_low > 1.2 * (exact.drop_ci_high - exact.drop_ci_low)
    assert not sampled.decayed


# -- trends ---------------------------------------------------------------------------------------
def test_trend_flags_a_slow_decline_and_not_a_flat_noisy_series():
    rng = np.random.default_rng(12)
    declining = 0.70 - 0.004 * np.arange(10) + rng.normal(scale=0.004, size=10)
    out = sig.trend_test(declining)
    assert out.significant and out.reason == "trend"
    assert out.sen_slope < 0 and out.ols_ci_high < 0
    # no single step is large: a one-window rule with a 0.02 tolerance would not see it
    assert np.max(-np.diff(declining)) < 0.02
    flat_flags = [sig.trend_test(0.70 + rng.normal(scale=0.01, size=10)).significant for _ in range(200)]
    assert np.mean(flat_flags) <= 0.10
    assert not sig.trend_test(0.70 + 0.004 * np.arange(10)).significant  # rising is not decline


def test_trend_options():
    values = [0.71, 0.70, np.nan, 0.69, 0.68, 0.67, 0.66]
    out = sig.trend_test(values)
    assert out.windows == 6 and out.significant
    assert not sig.trend_test(values, min_slope=0.05).significant
    assert sig.trend_test(values, min_slope=0.05).reason == "slope_below_minimum"
    assert sig.trend_test([0.7, 0.6, 0.5]).reason == "too_few_windows"
    assert sig.trend_test(list(range(20)), direction="increasing", last=6).windows == 6


# -- CBPE -----------------------------------------------------------------------------------------
def calibrated_sample(n: int, seed: int, shift: float = 0.0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores that are the true probabilities; ``shift`` and ``spread`` move the inputs (covariate shift)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=shift, scale=spread, size=n)
    p = sigmoid(1.8 * x - 1.2)
    return rng.binomial(1, p), p


def test_isotonic_map_reproduces_scikit_learn():
    y, p = calibrated_sample(3000, 13)
    s = p**2
    cal = pe.fit_isotonic(s, y.astype(float))
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
    probe = np.linspace(-0.1, 1.1, 500)
    np.testing.assert_allclose(cal(probe), iso.predict(probe), atol=1e-12)


def test_expected_pairs_auc_on_a_tiny_case():
    p = np.array([0.9, 0.2, 0.6, 0.6, 0.1])
    s = np.array([5.0, 1.0, 3.0, 3.0, 0.0])
    num = den = 0.0
    for i in range(5):
        for j in range(5):
            if i != j:
                den += p[i] * (1 - p[j])
                num += p[i] * (1 - p[j]) * ((s[i] > s[j]) + 0.5 * (s[i] == s[j]))
    assert pe.estimate_roc_auc(p, s) == pytest.approx(num / den)


def test_cbpe_estimates_the_realized_auc_on_calibrated_scores():
    y_ref, p_ref = calibrated_sample(5000, 14)
    ref = pe.fit_cbpe(p_ref, y_ref, calibration="none")
    y, p = calibrated_sample(5000, 15)
    est = pe.estimate_performance(ref, p)
    realized = pe.realized_metrics(y, p)
    for m in ("roc_auc", "accuracy", "f1"):
        e = est.metrics[m]
        assert e.value is not None and e.sampling_error is not None and realized[m] is not None
        assert abs(e.value - realized[m]) < 3 * e.sampling_error, m
        assert e.lower is not None and e.upper is not None and e.lower < e.value < e.upper
        assert not e.degraded
    assert est.expected_positive_rate == pytest.approx(y.mean(), abs=0.02)
    assert est.metrics["roc_auc"].sampling_error == pytest.approx(0.0075, abs=0.003)


def test_cbpe_follows_covariate_shift():
    y_ref, p_ref = calibrated_sample(5000, 16)
    ref = pe.fit_cbpe(p_ref, y_ref, calibration="none")
    y, p = calibrated_sample(5000, 17, shift=0.5, spread=0.5)
    est = pe.estimate_performance(ref, p)
    realized = pe.realized_metrics(y, p)
    auc = est.metrics["roc_auc"]
    assert realized["roc_auc"] is not None and ref.realized["roc_auc"] is not None and auc.value is not None
    # the shift moves the realized AUC well away from the reference; the estimate moves with it
    assert abs(realized["roc_auc"] - ref.realized["roc_auc"]) > 0.03
    assert auc.sampling_error is not None and abs(auc.value - realized["roc_auc"]) < 3 * auc.sampling_error
    assert auc.degraded == (auc.value < ref.realized["roc_auc"])


def test_cbpe_calibrates_uncalibrated_scores():
    y_ref, p_ref = calibrated_sample(5000, 18)
    ref = pe.fit_cbpe(p_ref**3, y_ref)  # auto: squashed scores need calibration
    assert ref.calibrated and ref.ece_calibrated is not None and ref.ece_raw is not None
    assert ref.ece_calibrated < ref.ece_raw
    y, p = calibrated_sample(5000, 19, shift=0.5)
    est = pe.estimate_performance(ref, p**3)
    realized = pe.realized_metrics(y, p**3)
    for m in ("roc_auc", "accuracy", "f1"):
        e = est.metrics[m]
        assert e.value is not None and e.sampling_error is not None and realized[m] is not None
        assert abs(e.value - realized[m]) < 3 * e.sampling_error, m
    # already calibrated scores: a small held-out ECE either way (auto may still pick isotonic, as NannyML's rule does)
    plain = pe.fit_cbpe(p_ref, y_ref)
    assert plain.ece_raw is not None and plain.ece_raw < 0.03 < ref.ece_raw


def test_cbpe_flags_an_estimated_drop_and_round_trips_as_json():
    y_ref, p_ref = calibrated_sample(5000, 20)
    ref = pe.fit_cbpe(p_ref**2, y_ref, calibration="isotonic")
    restored = pe.CBPEReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert restored == ref
    # a window whose scores barely separate anything: the model sees only the middle of the range
    rng = np.random.default_rng(21)
    x = rng.normal(scale=0.15, size=4000)
    est = pe.estimate_performance(restored, sigmoid(1.8 * x - 1.2) ** 2)
    assert est.metrics["roc_auc"].degraded and "roc_auc" in est.degraded
    assert est.metrics["roc_auc"].z is not None and est.metrics["roc_auc"].z < -3
    empty = pe.estimate_performance(ref, np.array([]))
    assert empty.rows == 0 and empty.metrics["roc_auc"].value is None


# -- calibrated drift thresholds ------------------------------------------------------------------
CATS = ["a", "b", "c", "d"]


def make_spec() -> Spec:
    return parse_spec(
        {
            "name": "calibration_test",
            "source": {"kind": "files", "path": "/nonexistent"},
            "entity_id": "id",
            "time_column": "ts",
            "target": {"name": "y", "source_column": "raw_y", "op": ">", "value": 0},
            "features": [
                {"name": "x", "type": "numeric"},
                {"name": "w", "type": "numeric"},
                {"name": "c", "type": "categorical", "categories": CATS},
            ],
        }
    )


def weekly(n_weeks: int, rows: int, seed: int, *, x_mean: float = 0.0, week_sd: float = 0.3) -> pd.DataFrame:
    """Weeks of traffic: ``x`` stationary, ``w`` with a mean that wanders from week to week (like the
    weather), ``c`` a stationary category."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_weeks):
        frames.append(
            pd.DataFrame(
                {
                    "ts": pd.Timestamp("2013-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 7, rows)) + 7 * k, unit="D"),
                    "x": rng.normal(x_mean, 1.0, rows),
                    "w": rng.normal(rng.normal(0.0, week_sd), 1.0, rows),
                    "c": rng.choice(np.asarray(CATS, dtype=object), rows, p=[0.4, 0.3, 0.2, 0.1]),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_calibrated_thresholds_keep_a_stationary_series_quiet_and_flag_a_shift():
    spec = make_spec()
    reference = weekly(8, 1500, seed=22)
    stats = drift.reference_stats(reference, spec)
    cal = drift_calibration.calibrate(reference, spec, stats=stats, period="7D")
    assert len(cal.chunk_rows) == 8 and set(cal.features) == {"x", "w", "c"}
    assert {t.method for t in cal.features.values()} == {"wasserstein", "jensenshannon"}
    # the wandering feature gets a wider threshold than the stationary one
    assert cal.features["w"].threshold > 2 * cal.features["x"].threshold

    windows = weekly(30, 1500, seed=23)
    quiet = default_quiet = 0
    for k in range(30):
        window = windows.iloc[k * 1500 : (k + 1) * 1500]
        judged = drift_calibration.calibrated_drift(window, stats, spec, cal, workers=1)
        quiet += not any(j.drifted for j in judged)
        default_quiet += not any(j.default_drifted for j in judged)
    assert quiet >= 27  # >= 90 % of stationary windows raise nothing
    assert default_quiet < quiet

    shifted = weekly(1, 1500, seed=24, x_mean=0.3)
    judged = {j.column: j for j in drift_calibration.calibrated_drift(shifted, stats, spec, cal, workers=1)}
    assert judged["x"].drifted
    assert judged["x"].z_score is not None and judged["x"].z_score > 3
    assert judged["x"].exceedance == pytest.approx(1 / 9)
    assert not judged["c"].drifted


def test_small_reference_uses_p_values_and_size_chunks():
    spec = make_spec()
    reference = weekly(1, 800, seed=25, week_sd=0.0)
    cal = drift_calibration.calibrate(reference, spec, chunk_size=100)
    assert cal.features["x"].method == "ks" and cal.features["x"].score_kind == "p_value"
    assert cal.features["c"].method == "chisquare"
    stats = drift.reference_stats(reference, spec)
    far = weekly(1, 100, seed=26, x_mean=1.0)
    judged = {j.column: j for j in drift_calibration.calibrated_drift(far, stats, spec, cal, workers=1)}
    assert judged["x"].drifted
    as_drift = judged["x"].as_column_drift()
    assert as_drift.drifted and as_drift.score is not None and as_drift.threshold is not None
    assert as_drift.score < as_drift.threshold  # back on the p-value scale
    ds = drift_calibration.calibrated_dataset_drift(list(judged.values()), share=0.3)
    assert ds.drifted_names == ["x"] and ds.drifted


def test_calibration_options_and_round_trip():
    spec = make_spec()
    reference = weekly(8, 1000, seed=27)
    stats = drift.reference_stats(reference, spec)
    base = drift_calibration.calibrate(reference, spec, stats=stats, period="7D")
    whole = drift_calibration.calibrate(reference, spec, stats=stats, period="7D", leave_chunk_out=False)
    # a chunk compared with the whole reference (itself included) sits closer than with the rest of it
    assert whole.features["x"].reference_mean < base.features["x"].reference_mean
    fixed = drift_calibration.calibrate(reference, spec, stats=stats, period="7D", fixed_thresholds={"x": 0.5})
    assert fixed.features["x"].threshold == 0.5 and fixed.features["x"].overridden
    floored = drift_calibration.calibrate(
        reference, spec, stats=stats, period="7D", rule=drift_calibration.ThresholdRule(floor_at_default=True)
    )
    assert all(t.threshold >= 0.1 for t in floored.features.values())
    q = drift_calibration.calibrate(
        reference, spec, stats=stats, chunk_size=500, rule=drift_calibration.ThresholdRule(kind="quantile", quantile=1.0)
    )
    assert q.features["x"].threshold == pytest.approx(max(q.features["x"].chunk_statistics))
    restored = drift_calibration.DriftCalibration.from_dict(json.loads(json.dumps(base.to_dict())))
    assert restored == base
    with pytest.raises(ValueError, match="usable reference chunks"):
        drift_calibration.calibrate(reference, spec, stats=stats, period="30D")
    with pytest.raises(ValueError, match="exactly one"):
        drift_calibration.calibrate(reference, spec, stats=stats)
    with pytest.raises(ValueError, match="not calibrated"):
        drift_calibration.calibrate(reference, spec, stats=stats, period="7D", fixed_thresholds={"nope": 1.0})


def test_constant_reference_feature_drifts_on_any_new_value_and_missing_columns_stay_drifted():
    spec = make_spec()
    reference = weekly(6, 1000, seed=28)
    reference["c"] = "a"
    stats = drift.reference_stats(reference, spec)
    cal = drift_calibration.calibrate(reference, spec, stats=stats, period="7D")
    assert cal.features["c"].threshold == 0.0
    window = weekly(1, 1000, seed=29)
    same = window.assign(c="a")
    judged = {j.column: j for j in drift_calibration.calibrated_drift(same, stats, spec, cal, workers=1)}
    assert not judged["c"].drifted
    judged = {j.column: j for j in drift_calibration.calibrated_drift(window, stats, spec, cal, workers=1)}
    assert judged["c"].drifted and judged["c"].z_score == float("inf")
    judged = {j.column: j for j in drift_calibration.calibrated_drift(window.drop(columns=["x"]), stats, spec, cal, workers=1)}
    assert judged["x"].drifted and judged["x"].status == "missing_column" and judged["x"].threshold is None
