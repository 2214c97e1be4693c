"""The offline gates' pure comparisons (shared by the ``evaluation`` gate and the backtest) decide
exactly as MLflow's ``validate_evaluation_results`` with the thresholds the gate used to build."""

from __future__ import annotations

import itertools

import pytest

from include.mlops.steps.gates import beats_champion, floor_failures

pytestmark = pytest.mark.unit


def mlflow_passes(metric: str, candidate: float, champion: float | None, *, threshold: float | None, min_gain: float) -> bool:
    from mlflow.models import EvaluationResult, MetricThreshold
    from mlflow.models.evaluation.validation import ModelValidationFailedException, validate_evaluation_results

    from include.mlops.domain.spec import LOWER_IS_BETTER

    greater = metric not in LOWER_IS_BETTER
    if threshold is not None:
        rule = MetricThreshold(threshold=threshold, greater_is_better=greater)
    else:
        rule = MetricThreshold(min_absolute_change=min_gain, greater_is_better=greater)
    base = EvaluationResult(metrics={metric: champion}, artifacts={}) if threshold is None else None
    try:
        validate_evaluation_results({metric: rule}, EvaluationResult(metrics={metric: candidate}, artifacts={}), base)
    except ModelValidationFailedException:
        return False
    return True


@pytest.mark.parametrize("metric", ["roc_auc", "log_loss"])
def test_beats_champion_is_mlflows_rule(metric):
    values = [0.60, 0.64, 0.65, 0.66, 0.70]
    for cand, champ, gain in itertools.product(values, values, [0.0, 0.01, 0.05]):
        if gain > 0:
            expected = mlflow_passes(metric, cand, champ, threshold=None, min_gain=gain)
        else:  # the gate's zero-gain rule: the champion's value is the threshold
            expected = mlflow_passes(metric, cand, champ, threshold=champ, min_gain=0.0)
        assert beats_champion(metric, cand, champ, gain) is expected, (metric, cand, champ, gain)


def test_a_tie_passes_without_a_minimum_gain_and_fails_with_one():
    assert beats_champion("roc_auc", 0.6498, 0.6498, 0.0)
    assert not beats_champion("roc_auc", 0.6498, 0.6498, 0.001)


def test_floor_failures_names_each_metric_on_the_wrong_side():
    missing, failed = floor_failures({"roc_auc": 0.58, "log_loss": 0.6}, {"roc_auc": 0.57, "log_loss": 0.61})
    assert missing == [] and len(failed) == 2 and failed[0].startswith("roc_auc 0.5700 < floor 0.58")
    assert floor_failures({"roc_auc": 0.58}, {"roc_auc": 0.58}) == ([], [])
    assert floor_failures({"roc_auc": 0.58}, {"roc_auc": float("nan")}) == (["roc_auc"], [])
    for value, floor in itertools.product([0.5, 0.58, 0.6], [0.55, 0.58]):
        assert (not floor_failures({"roc_auc": floor}, {"roc_auc": value})[1]) is mlflow_passes(
            "roc_auc", value, None, threshold=floor, min_gain=0.0
        )


def test_a_champion_has_seen_the_holdout_days_up_to_its_last_day_of_data():
    from datetime import date, timedelta

    from include.mlops.steps.gates_refit import champion_seen_rows, data_end

    window = {"train_start": "2013-01-01", "train_end": "2013-01-31", "holdout_start": "2013-02-01", "holdout_end": "2013-02-07"}
    assert data_end(window, refit=False) == date(2013, 1, 31)
    assert data_end(window, refit=True) == date(2013, 2, 7)
    for unreadable in ({}, {"train_end": "31/01/2013"}, None, ["2013-01-31"]):  # no window, a hand-edited tag
        assert data_end(unreadable, refit=False) is None
    days = [date(2013, 2, 5) + timedelta(days=i) for i in range(5)]  # a candidate's holdout, Feb 5-9
    assert champion_seen_rows(days, date(2013, 2, 7)).tolist() == [True, True, True, False, False]
    assert not champion_seen_rows(days, date(2013, 1, 31)).any()  # a champion retrained before: nothing seen
    assert champion_seen_rows(days, None) is None and champion_seen_rows(None, date(2013, 2, 7)) is None


def test_a_holdout_the_champion_has_trained_on_passes_only_a_candidate_at_least_as_new():
    from datetime import date

    from include.mlops.steps.gates_refit import saw_holdout

    end = date(2013, 2, 7)
    assert saw_holdout("3", 1000, 1500, min_rows=1000, candidate_end=end, champion_end=end) is None  # enough unseen rows: compare
    passed, code, msg = saw_holdout("3", 0, 1500, min_rows=1000, candidate_end=end, champion_end=end)  # retrained on its window
    assert (passed, code) == (True, "champion_trained_on_holdout") and "v3 trained on 1500 of the 1500" in msg
    passed, code, msg = saw_holdout("3", 10, 1500, min_rows=1000, candidate_end=date(2013, 1, 31), champion_end=end)
    assert (passed, code) == (False, "candidate_older_than_champion") and "2013-01-31" in msg
    assert saw_holdout("3", 10, 1500, min_rows=1000, candidate_end=None, champion_end=end)[:2] == (True, "champion_trained_on_holdout")
