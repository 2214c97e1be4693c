"""The day-block bootstrap behind the backtest's intervals (``domain.resampling.block_bootstrap_metric``)
and the loop-versus-policy intervals built on it (``steps.backtest.report.versus_loop``)."""

from __future__ import annotations

import numpy as np
import pytest

from include.mlops.domain.resampling import block_bootstrap_metric, bootstrap_metric, point_metric, roc_auc
from include.mlops.steps.backtest.report import versus_loop

pytestmark = pytest.mark.unit


def test_paired_and_deterministic():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 600)
    s = y + rng.normal(size=600)
    days = np.repeat(np.arange(20), 30)
    a, b = block_bootstrap_metric("roc_auc", y, [s, s.copy()], days, n_boot=200, seed=7)
    assert np.array_equal(a, b)  # the same draws for every score array
    (again,) = block_bootstrap_metric("roc_auc", y, [s], days, n_boot=200, seed=7)
    assert np.array_equal(a, again)
    assert abs(float(np.mean(a)) - roc_auc(y, s)) < 0.01


def test_one_row_per_block_is_a_row_bootstrap_and_shared_day_errors_widen_the_interval():
    """With correlated rows (every day's errors share an offset), resampling days spreads the MAE
    more than resampling rows; with one row per block the two agree."""
    rng = np.random.default_rng(2)
    n_days, per_day = 40, 50
    day_offset = np.repeat(rng.normal(scale=3.0, size=n_days), per_day)
    y = rng.normal(size=n_days * per_day)
    pred = y + day_offset + rng.normal(scale=0.5, size=y.size)
    days = np.repeat(np.arange(n_days), per_day)
    (by_day,) = block_bootstrap_metric("mae", y, [pred], days, n_boot=400, seed=0)
    (by_row,) = bootstrap_metric("mae", [(y, [pred])], n_boot=400, seed=0, threshold=0.5)[0]
    (single,) = block_bootstrap_metric("mae", y, [pred], np.arange(y.size), n_boot=400, seed=0)
    assert np.std(by_day) > 3 * np.std(by_row)
    assert 0.7 < np.std(single) / np.std(by_row) < 1.3
    assert abs(float(np.mean(by_day)) - point_metric("mae", y, pred)) < 0.2


def test_versus_loop_intervals():
    rng = np.random.default_rng(3)
    n = 4000
    y = rng.integers(0, 2, n)
    loop = y + rng.normal(size=n)
    scores = {
        "loop": loop,
        "same": loop.copy(),
        "better": y * 3 + rng.normal(size=n),
        "worse": y * 0.3 + rng.normal(size=n),
    }
    spans = [("m1", 0, 2000), ("m2", 2000, 4000)]
    days = np.repeat(np.arange(40), 100)
    out = versus_loop(y, scores, spans, 0, days)
    assert set(out) == {"same", "better", "worse"}
    assert out["same"]["ci95"] == [0.0, 0.0] and out["same"]["loop_at_least_as_good"] == 1.0
    assert out["better"]["ci95"][1] < 0 and out["better"]["loop_at_least_as_good"] == 0.0
    assert out["worse"]["ci95"][0] > 0 and out["worse"]["loop_at_least_as_good"] == 1.0
