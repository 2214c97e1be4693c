"""The learned batch profile (domain.profiles): summaries, bands, verdicts, on small synthetic batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.mlops.domain import profiles
from include.mlops.domain.profiles import id_shape, judge_batch, learn_batch_profile, summarize_batch

pytestmark = pytest.mark.unit


def batch(spec, day: int, rows: int = 400, seed: int | None = None, **overrides) -> pd.DataFrame:
    """A plausible label batch of the flights spec for day ``day`` of January 2013."""
    rng = np.random.default_rng(seed if seed is not None else day)
    data = {
        "flight_id": [f"201301{day:02d}-UA{i:04d}-EWR-{600 + i % 1200:04d}" for i in range(rows)],
        "sched_dep": pd.Timestamp(f"2013-01-{day:02d}") + pd.to_timedelta(rng.integers(0, 86_000, rows), unit="s"),
        "carrier": rng.choice(["UA", "AA", "B6", "DL"], rows),
        "origin": rng.choice(["EWR", "JFK", "LGA"], rows),
        "dest": rng.choice(["ATL", "BOS", "ORD", "LAX", "MIA"], rows),
        "distance": rng.uniform(200, 2500, rows),
        "sched_hour": rng.integers(5, 23, rows),
        "weekday": np.full(rows, day % 7),
        "month": np.ones(rows, dtype=int),
    }
    for name, (lo, hi) in {"temp": (20, 50), "dewp": (5, 30), "humid": (40, 90), "wind_dir": (0, 360), "wind_speed": (0, 20)}.items():
        data[name] = rng.uniform(lo, hi, rows)
    data.update(wind_gust=np.nan, precip=np.where(rng.random(rows) < 0.9, 0.0, 0.05), pressure=rng.uniform(1000, 1030, rows), visib=10.0)
    data["arr_delay"] = np.where(rng.random(rows) < 0.2, 45.0, -5.0)
    df = pd.DataFrame(data)
    for k, v in overrides.items():
        df[k] = v(df) if callable(v) else v
    return df


@pytest.fixture(scope="module")
def history(spec):
    return [summarize_batch(batch(spec, d), spec, 0.95) for d in range(20, 2, -1)]  # most recent first


def codes(findings):
    return sorted({f[0] for f in findings})


def test_id_shape_keeps_the_format_not_the_value():
    assert id_shape("20130101-UA1545-EWR-0515") == "99999999-AA9999-AAA-9999"
    assert id_shape("20130101-9E3856-JFK-0600") == "99999999-9A9999-AAA-9999"
    assert id_shape("fl_0000abcd") == "aa_9999aaaa"
    assert id_shape("x" * 70).endswith("+") and id_shape("é") == "?"


def test_before_min_batches_the_profile_is_not_yet_learned(spec, history):
    summary = summarize_batch(batch(spec, 21), spec, 0.0)
    findings, details = judge_batch(summary, history[: spec.batch.profile.min_batches - 1], spec)
    assert findings == []
    assert details == {"status": "profile not yet learned", "batches": 13, "needed": 14}


def test_a_normal_batch_passes(spec, history):
    findings, details = judge_batch(summarize_batch(batch(spec, 21), spec, 0.97), history, spec)
    assert findings == [] and details["status"] == "judged" and details["batches"] == len(history)


@pytest.mark.parametrize(
    ("overrides", "join", "code", "column"),
    [
        ({"flight_id": lambda df: [f"FL-{i}" for i in range(len(df))]}, 0.95, "id_format_changed", "flight_id"),
        ({}, 0.02, "join_rate_collapsed", "flight_id"),
        ({"arr_delay": 90.0}, 0.95, "label_rate_abnormal", "late"),
        ({"pressure": lambda df: df["pressure"] / 1000}, 0.95, "feature_scale_shift", "pressure"),
        ({"distance": lambda df: df["distance"] * 1000}, 0.95, "feature_scale_shift", "distance"),
        ({"dest": lambda df: [f"D{i}" for i in range(len(df))]}, 0.95, "category_set_blown_up", "dest"),
    ],
)
def test_each_abnormal_statistic_is_named(spec, history, overrides, join, code, column):
    findings, _ = judge_batch(summarize_batch(batch(spec, 21, **overrides), spec, join), history, spec)
    found = {f[0]: f for f in findings}
    assert code in found, findings
    assert found[code][2] == column and column in found[code][1] and found[code][3]["statistic"]


def test_new_values_of_a_categorical_are_named_even_when_the_count_stays(spec, history):
    swap = {"ATL": "XA1", "BOS": "XB2", "ORD": "XC3", "LAX": "XD4", "MIA": "XE5"}
    findings, _ = judge_batch(summarize_batch(batch(spec, 21, dest=lambda df: df["dest"].map(swap)), spec, 0.95), history, spec)
    assert codes(findings) == ["unseen_categories"]


def test_the_join_rate_is_not_judged_before_predictions_are_logged(spec):
    history = [summarize_batch(batch(spec, d), spec, 0.0) for d in range(20, 2, -1)]
    findings, _ = judge_batch(summarize_batch(batch(spec, 21), spec, 0.0), history, spec)
    assert findings == []
    # and a join appearing (the first model started serving) is not abnormal either
    findings, _ = judge_batch(summarize_batch(batch(spec, 21), spec, 1.0), history, spec)
    assert findings == []


def test_bands_are_never_narrower_than_the_floor(spec):
    """A statistic constant over the history (MAD 0) still allows the floor's move."""
    history = [summarize_batch(batch(spec, d, rows=400, seed=1), spec, 1.0) for d in range(20, 2, -1)]
    learned = learn_batch_profile(history, spec)
    band = learned["numeric"]["visib"]
    assert band["sd"] == 0 and band["hi"] - band["median"] == pytest.approx(profiles.MAGNITUDE_FLOOR)
    findings, _ = judge_batch(summarize_batch(batch(spec, 21, seed=1, visib=1.0), spec, 1.0), history, spec)
    assert findings == []  # 10 miles -> 1 mile of visibility (fog) is one order of magnitude: within the floor
    findings, _ = judge_batch(summarize_batch(batch(spec, 21, seed=1, visib=0.01), spec, 1.0), history, spec)
    assert codes(findings) == ["feature_scale_shift"]


def test_the_summary_is_plain_json(spec):
    import json

    summary = summarize_batch(batch(spec, 21), spec, None)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["numeric"]["wind_gust"]["magnitude"] is None  # all null: nothing to judge
