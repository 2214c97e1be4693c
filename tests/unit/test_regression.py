"""The second task kind (issue 18): a regression model through the loop's ML code. Metric
directions, regression metrics against scikit-learn, the regression spec, the regression pipeline
and its skops trust list, the gates' direction-aware comparisons, monitoring's decay and trend in
the MAE's direction, the paired bootstrap of an error metric, and a whole backtest of a regressor."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.mlops.domain import tasks
from include.mlops.domain.spec import SpecError, load_spec, parse_spec
from tests.unit.test_backtest import tiny_history, tiny_spec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REGRESSION_SPEC = ROOT / "include/specs/flights_arrival_delay.yaml"


def regression_spec(**sections: dict[str, Any]) -> Any:
    """The backtest's tiny spec as a regressor of ``raw_y`` (judged on MAE)."""
    raw = tiny_spec().model_dump(mode="json")
    raw["task"] = "regression"
    raw["target"] = {"name": "y", "source_column": "raw_y"}
    raw["training"] = {**raw["training"], "pipeline": "include.mlops.domain.pipelines:regression_pipeline"}
    raw["deployment"] = {**raw["deployment"], "primary_metric": "mae", "floors": {"mae": 5.0}}
    raw["promotion"] = {**raw["promotion"], "metric": "mae", "tolerance": 0.05}
    raw["monitoring"] = {**raw["monitoring"], "max_quality_drop": 0.3}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_spec(raw)


# -- domain.tasks ---------------------------------------------------------------------------------
def test_metric_directions():
    mae, auc = tasks.metric("regression", "mae"), tasks.metric("binary_classification", "roc_auc")
    assert not mae.higher_is_better and auc.higher_is_better
    assert mae.gain(20.0, 25.0) == 5.0 and mae.drop(25.0, 20.0) == 5.0  # a lower MAE is a gain, a higher one a drop
    assert auc.gain(0.70, 0.65) == pytest.approx(0.05) and auc.drop(0.65, 0.70) == pytest.approx(0.05)
    assert tasks.metric("regression", "r2").higher_is_better and not tasks.metric("regression", "rmse").higher_is_better
    assert tasks.trend_direction("regression", "mae") == "increasing"
    assert tasks.trend_direction("binary_classification", "roc_auc") == "decreasing"
    assert tasks.metric_of("rmse").mlflow_name == "root_mean_squared_error"
    assert tasks.DEFAULT_METRIC["regression"] == "mae"
    with pytest.raises(ValueError, match="not a regression metric"):
        tasks.metric("regression", "roc_auc")


def test_regression_metrics_match_scikit_learn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(1)
    y = rng.normal(5, 30, 500)
    s = y + rng.normal(0, 12, 500)
    m = tasks.evaluate("regression", y, s)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, s))
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, s)))
    assert m["r2"] == pytest.approx(r2_score(y, s))
    assert m["mean_target"] == pytest.approx(y.mean()) and m["mean_prediction"] == pytest.approx(s.mean())
    assert all(math.isnan(v) for v in tasks.evaluate("regression", np.zeros(0), np.zeros(0)).values())
    assert math.isnan(tasks.evaluate("regression", np.ones(5), np.ones(5))["r2"])  # constant outcomes: R2 undefined


def test_scores_labels_and_truth_by_task():
    from sklearn.linear_model import LinearRegression, LogisticRegression

    x = pd.DataFrame({"a": np.arange(20.0)})
    reg = LinearRegression().fit(x, 2 * x["a"] + 1)
    assert tasks.scores("regression", reg, x) == pytest.approx(2 * x["a"].to_numpy() + 1)
    clf = LogisticRegression().fit(x, (x["a"] > 9).astype(int))
    p = tasks.scores("binary_classification", clf, x)
    assert p.min() >= 0 and p.max() <= 1 and p[-1] > 0.5
    assert tasks.predictions("regression", np.array([1.5, -2.0])).tolist() == [1.5, -2.0]
    assert tasks.predictions("binary_classification", np.array([0.7, 0.2])).tolist() == [1, 0]
    assert tasks.labels("regression", pd.Series([1.5, 2.0])).dtype == float
    assert tasks.labels("binary_classification", pd.Series([True, False])).tolist() == [1, 0]
    assert tasks.truth_column("regression") == "outcome" and tasks.truth_column("binary_classification") == "label"


# -- the spec -------------------------------------------------------------------------------------
def test_the_regression_spec_parses():
    spec = load_spec(REGRESSION_SPEC)
    flights = load_spec(ROOT / "include/specs/flights.yaml")
    assert spec.task == "regression" and spec.name == "flights_arrival_delay"
    assert spec.target.op is None and spec.target.source_column == "arr_delay" and spec.target.name != "arr_delay"
    assert spec.feature_names == flights.feature_names and spec.entity_id == flights.entity_id
    assert spec.time_column == flights.time_column and spec.batch == flights.batch
    assert spec.deployment.primary_metric == "mae" and "mae" in spec.deployment.floors and spec.promotion.metric == "mae"
    assert spec.training.pipeline.endswith(":regression_pipeline")
    assert spec.target.derive(pd.Series([-3.0, 42.0])).tolist() == [-3.0, 42.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": {"name": "y", "source_column": "raw_y", "op": ">", "value": 0}}, "drop 'op' and 'value'"),
        ({"deployment": {"primary_metric": "roc_auc", "floors": {"mae": 5.0}}}, "not a regression metric"),
        ({"deployment": {"primary_metric": "mae", "floors": {"roc_auc": 0.6}}}, "not a regression metric"),
        ({"promotion": {"metric": "mae", "test": "delong"}}, "delong"),
    ],
)
def test_a_regression_spec_refuses_classifier_pieces(change, message):
    raw = regression_spec().model_dump(mode="json")
    raw.update({k: {**raw[k], **v} if k != "target" else v for k, v in change.items()})
    with pytest.raises(SpecError, match=message):
        parse_spec(raw)


def test_the_paired_bootstrap_fits_every_regression_metric_and_a_classifier_needs_its_rule():
    for m in ("mae", "rmse", "r2"):
        assert regression_spec(promotion={"metric": m, "test": "bootstrap"}).promotion.test == "bootstrap"
    raw = tiny_spec().model_dump(mode="json")
    raw["target"] = {"name": "y", "source_column": "raw_y"}
    with pytest.raises(SpecError, match="needs the rule"):
        parse_spec(raw)


# -- the pipeline ---------------------------------------------------------------------------------
def test_the_regression_pipeline_fits_and_round_trips_through_skops_with_the_spec_trust_list(tmp_path):
    import skops.io

    from include.mlops.domain.pipelines import build_pipeline, trusted_types
    from include.mlops.domain.profiles import probe_frame

    spec = load_spec(REGRESSION_SPEC)
    x = probe_frame(spec, 400)[spec.feature_names]
    y = np.random.default_rng(0).normal(0, 30, len(x)) + (x["carrier"] == "EV") * 20
    pipe = build_pipeline(spec).fit(x, y)
    assert type(pipe[-1]).__name__ == "HistGradientBoostingRegressor" and not hasattr(pipe, "predict_proba")
    path = tmp_path / "m.skops"
    skops.io.dump(pipe, path)
    untrusted = skops.io.get_untrusted_types(file=path)
    assert set(untrusted) <= set(trusted_types(spec)), untrusted
    loaded = skops.io.load(path, trusted=trusted_types(spec))
    assert np.array_equal(loaded.predict(x), pipe.predict(x))


# -- gates ----------------------------------------------------------------------------------------
def test_a_floor_of_an_error_metric_is_a_ceiling():
    from include.mlops.steps.gates import beats_champion, floor_failures

    assert floor_failures({"mae": 30.0}, {"mae": 25.0}) == ([], [])
    missing, failed = floor_failures({"mae": 30.0}, {"mae": 31.5})
    assert not missing and failed == ["mae 31.5000 > ceiling 30.0"]
    assert floor_failures({"r2": 0.05}, {"r2": 0.02})[1] == ["r2 0.0200 < floor 0.05"]
    assert floor_failures({"mae": 30.0}, {"mae": float("nan")})[0] == ["mae"]
    assert beats_champion("mae", 24.0, 25.0, 0.5) and not beats_champion("mae", 24.8, 25.0, 0.5)
    assert not beats_champion("mae", 25.1, 25.0, 0.0) and beats_champion("mae", 25.0, 25.0, 0.0)
    assert beats_champion("roc_auc", 0.70, 0.69, 0.005)  # the classifier's direction is unchanged


def test_spec_metrics_read_mlflow_regressor_names():
    from include.mlops.steps.gates import spec_metrics

    spec = load_spec(REGRESSION_SPEC)
    got = spec_metrics(spec, {"mean_absolute_error": 24.6, "root_mean_squared_error": 41.7, "r2_score": 0.05}, ["mae", "rmse", "r2"])
    assert got == {"mae": 24.6, "rmse": 41.7, "r2": 0.05}


# -- monitoring -----------------------------------------------------------------------------------
def summary(metric: str = "mae", live: float = 0.0, holdout: float = 0.0) -> Any:
    from include.mlops.steps.monitoring.checks import Summary

    s = Summary("m", "1", "champion", "2021-01-01", "2021-01-08", rows=500)
    s.quality = {"metric": metric, "live": live, "holdout": holdout, "labelled_rows": 400}
    return s


def test_decay_of_an_error_metric_is_a_rise():
    from include.mlops.steps.monitoring.checks import judge_decay

    mon = load_spec(REGRESSION_SPEC).monitoring  # max_quality_drop in minutes of MAE
    worse = summary(live=25.0 + mon.max_quality_drop + 0.5, holdout=25.0)
    judge_decay(worse, mon)
    assert worse.outcome == "decay" and worse.reason_codes == ["quality_decay"]
    better = summary(live=25.0 - mon.max_quality_drop - 5, holdout=25.0)  # far *lower* MAE: an improvement
    judge_decay(better, mon)
    assert better.outcome == "healthy" and not better.reason_codes
    small = summary(live=25.0 + mon.max_quality_drop - 0.5, holdout=25.0)
    judge_decay(small, mon)
    assert small.outcome == "healthy"
    auc = summary("roc_auc", live=0.60, holdout=0.70)  # the classifier's rule is unchanged
    judge_decay(auc, tiny_spec().monitoring)
    assert auc.outcome == "decay"


def test_the_trend_of_an_error_metric_is_a_rising_one():
    from include.mlops.steps.monitoring.checks import judge_trend

    mon = regression_spec(monitoring={"trend_windows": 6}).monitoring
    rising = summary(live=31.0, holdout=25.0)
    judge_trend(rising, [24.0, 25.5, 26.0, 27.5, 29.0], mon)
    assert rising.outcome == "decay" and "quality_trend" in rising.reason_codes and "rising" in rising.reasons[0]
    assert rising.quality["trend_test"]["direction"] == "increasing"
    falling = summary(live=19.0, holdout=25.0)  # MAE falling: the model gets better, no decay
    judge_trend(falling, [29.0, 27.5, 26.0, 25.5, 24.0], mon)
    assert falling.outcome == "healthy"


def test_realized_quality_of_a_regressor_and_no_cbpe():
    from include.mlops.steps.monitoring.checks import NO_CBPE, Summary, check_estimated_quality, quality_of
    from include.mlops.steps.monitoring.reference import Reference

    spec = regression_spec()
    rng = np.random.default_rng(2)
    y = rng.normal(0, 3, 300)
    df = pd.DataFrame({"score": y + rng.normal(0, 1, 300), "label": y})
    q = quality_of(df, spec, {"mae": 0.7})
    assert q["status"] == "measured" and q["metric"] == "mae" and q["holdout"] == 0.7
    assert q["live"] == pytest.approx(np.abs(df["score"] - df["label"]).mean())
    assert {"rmse", "r2"} <= set(q["live_metrics"])
    s = Summary("m", "1", "champion", "a", "b", rows=300)
    holdout = pd.DataFrame({"y": y, "score": df["score"]})
    check_estimated_quality(s, spec, df, Reference("1", "r", {}, df.head(0), holdout, {"mae": 0.7}))
    assert s.quality["estimated"] == {"status": "not_applicable", "reason": NO_CBPE}
    assert "regression" in NO_CBPE


def test_prediction_drift_of_a_regressor_reports_mean_predictions_not_rates():
    from include.mlops.steps.monitoring.checks import Summary, judge_prediction_drift
    from include.mlops.steps.monitoring.reference import Reference

    ok = pd.DataFrame({"score": [10.0, 20.0, 30.0]})
    ref = Reference("1", "r", {}, ok.head(0), pd.DataFrame({"score": [5.0, 15.0]}), {})
    s = Summary("m", "1", "champion", "a", "b", rows=3)
    judge_prediction_drift(s, None, ok, ref, task="regression")
    assert s.prediction["mean_score"] == 20.0 and s.prediction["holdout_mean_score"] == 10.0
    assert "positive_rate" not in s.prediction


# -- paired tests and decay tests on an error metric ----------------------------------------------
def test_paired_bootstrap_of_mae_finds_the_better_regressor():
    from include.mlops.domain.significance import Sample, decay_test, paired_bootstrap

    rng = np.random.default_rng(4)
    y = rng.normal(5, 30, 1500)
    champion, challenger = y + rng.normal(0, 14, 1500), y + rng.normal(0, 11, 1500)
    better = paired_bootstrap(y, champion, challenger, metric="mae", seed=1)
    assert better.significant and better.reason == "significant_gain"
    assert better.difference == pytest.approx(better.champion - better.challenger) and better.difference > 0
    assert better.ci_low > 0
    worse = paired_bootstrap(y, challenger, champion, metric="mae", seed=1)
    assert not worse.significant and worse.reason == "no_gain" and worse.difference < 0
    same = paired_bootstrap(y, champion, champion + rng.normal(0, 0.01, 1500), metric="rmse", seed=1)
    assert not same.significant
    r2 = paired_bootstrap(y, champion, challenger, metric="r2", seed=1)
    assert r2.significant and r2.difference > 0
    # decay: a window whose MAE rose beyond max_drop against the holdout rows
    decayed = decay_test(y, champion, Sample(y, challenger), metric="mae", max_drop=0.5, seed=2)
    assert decayed.decayed and decayed.drop == pytest.approx(decayed.value - decayed.baseline)
    fine = decay_test(y, challenger, Sample(y, champion), metric="mae", max_drop=0.0, seed=2)
    assert not fine.decayed and fine.reason == "within_tolerance"


def test_resampled_regression_metrics_equal_the_point_metrics_with_unit_weights():
    from sklearn.metrics import mean_absolute_error, r2_score

    from include.mlops.domain.resampling import point_metric

    rng = np.random.default_rng(5)
    y, s = rng.normal(size=200), rng.normal(size=200)
    assert point_metric("mae", y, s) == pytest.approx(mean_absolute_error(y, s))
    assert point_metric("r2", y, s) == pytest.approx(r2_score(y, s))


# -- the whole backtest of a regressor ------------------------------------------------------------
def test_a_regressor_runs_through_the_backtest():
    from include.mlops.steps.backtest import run_backtest
    from include.mlops.steps.backtest.report import table

    spec = regression_spec(promotion={"test": "bootstrap"}, monitoring={"trend_windows": 5})
    out = run_backtest(spec, tiny_history())
    assert out["metric"] == "mae"
    means = {p: v["mean"] for p, v in out["auc"].items()}
    assert all(isinstance(v, float) and 0 < v < 5 for v in means.values()), means
    assert means["oracle"] <= means["frozen"] + 1e-9  # the best weekly model each month: never a worse MAE
    versions = out["loop"]["versions"]
    assert all("holdout_mae" in v for v in versions.values())
    kinds = {(d["kind"], d["outcome"]) for d in out["loop"]["decisions"]}
    assert ("training", "registered") in kinds and any(k == "monitor" for k, _ in kinds)
    promotions = [d for d in out["loop"]["decisions"] if d["kind"] == "promotion" and "test" in d.get("details", {})]
    assert promotions, "the drifting workload must bring a candidate to a promotion decision"
    for d in promotions:
        test = d["details"]["test"]
        assert test["metric"] == "mae" and test["method"] == "paired_bootstrap"
        assert test["difference"] == pytest.approx(test["champion"] - test["challenger"])  # a lower MAE is the gain
        assert (d["outcome"] == "promote") == test["significant"]
    monitored = [d for d in out["loop"]["decisions"] if d["kind"] == "monitor" and d["outcome"] != "insufficient_data"]
    assert monitored and all(d["estimated"] is None for d in monitored)  # no CBPE figure for a regressor
    text = table(out)
    assert "the loop" in text and "nan" not in text and "monthly mae (lower is better)" in text


# -- the ops store's truth of a regressor: the outcome, not the rounded label ---------------------
def land_regression(rt: Any, raw: pd.DataFrame) -> None:
    """Every day of ``raw`` accepted as ingest writes a regressor's: the pool's target is the float
    outcome, the ground truth keeps the outcome (and a rounded label)."""
    from include.mlops.adapters.store import Decision

    spec = rt.spec
    t = pd.to_datetime(raw[spec.time_column])
    for day, df in raw.groupby(t.dt.date):
        bid = rt.store.create_batch(rt.model_name, f"outcomes_{day}.csv", f"sha-{day}", None, None)
        out = df[spec.batch_columns].copy()
        out[spec.target.name] = spec.target.derive(out[spec.target.source_column]).astype("float64")
        path = rt.lake.pool_partition(str(day)) / f"batch-{bid:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        out.to_parquet(path, index=False)
        truth = [
            {"entity_id": str(e), "event_time": ts.to_pydatetime(), "label": int(round(o)), "outcome": float(o)}
            for e, ts, o in zip(df[spec.entity_id], pd.to_datetime(df[spec.time_column]), df[spec.target.source_column], strict=True)
        ]
        rt.store.accept_batch(bid, rt.model_name, day, str(path), truth, Decision(rt.model_name, "ingest", "accepted", "batch_valid"))


def test_realized_quality_and_the_value_table_of_a_regressor_read_the_outcomes(tmp_path, monkeypatch):
    from datetime import timedelta

    from include.mlops.domain.pipelines import build_pipeline
    from include.mlops.steps.backtest.history import History
    from include.mlops.steps.monitoring.export import labelled
    from include.mlops.steps.value import compute_value, served_rows
    from tests.unit.test_value import champion, loader, make_runtime, serve, traffic

    spec = regression_spec()
    raw = tiny_history(days=84, per_day=60)
    h = History.of(spec, raw)
    assert h.labels.dtype == float and not np.allclose(h.labels, np.round(h.labels))
    lo, hi = h.span(h.first, h.first + timedelta(days=27))
    model = build_pipeline(spec).fit(h.frame.iloc[lo:hi][spec.feature_names], h.labels[lo:hi])
    rt = make_runtime(tmp_path / "home", spec, monkeypatch)
    land_regression(rt, raw)
    champion(rt, "1", 1)
    rows = traffic(raw, spec)
    predicted = model.predict(rows[spec.feature_names])
    serve(rt, rows, predicted, "1")

    served = served_rows(rt)
    assert served["_y"].dtype == float and np.allclose(np.sort(served["_y"]), np.sort(rows["raw_y"].to_numpy()))
    end = pd.Timestamp(rows[spec.time_column].max()).to_pydatetime()
    window = labelled(rt, "1", end)
    assert len(window) > 100 and not np.allclose(window["label"], np.round(window["label"]))  # the outcome, not the label
    value = compute_value(rt, load=loader({"1": model}))
    assert value.metric == "mae" and value.note is None
    for m in value.months:
        assert m.served == pytest.approx(m.first_champion) and 0 < m.served < 5  # the same model served every row
    assert "mae (lower is better)" in value.table()


def test_promotion_evidence_of_a_regressor_pairs_both_versions_on_the_outcomes(tmp_path, monkeypatch):
    """``steps.paired`` on a regressor: both versions score the same labelled requests, the realized
    metric is MAE (lower is better) and the paired bootstrap's gain is the MAE reduction."""
    from datetime import datetime, timedelta

    from include.mlops.adapters import model_artifacts
    from include.mlops.domain.pipelines import build_pipeline
    from include.mlops.steps.backtest.history import History
    from include.mlops.steps.paired import compare, paired_scores, realized_quality
    from tests.unit.test_value import make_runtime, serve, traffic

    spec = regression_spec(promotion={"test": "bootstrap"})
    raw = tiny_history(days=84, per_day=60)
    h = History.of(spec, raw)
    old_lo, old_hi = h.span(h.first, h.first + timedelta(days=20))
    new_lo, new_hi = h.span(h.first + timedelta(days=50), h.first + timedelta(days=70))
    models = {
        "1": build_pipeline(spec).fit(h.frame.iloc[old_lo:old_hi][spec.feature_names], h.labels[old_lo:old_hi]),
        "2": build_pipeline(spec).fit(h.frame.iloc[new_lo:new_hi][spec.feature_names], h.labels[new_lo:new_hi]),
    }
    monkeypatch.setattr(model_artifacts, "load_model_version", lambda store, spec, name, version, **kw: models[version])
    rt = make_runtime(tmp_path / "home", spec, monkeypatch)
    land_regression(rt, raw)
    rows = traffic(raw, spec, first_day=71)  # after both training windows: the drifted relation favours v2
    serve(rt, rows, models["1"].predict(rows[spec.feature_names]), "1")
    paired = paired_scores(rt, datetime(2000, 1, 1), ("1", "2"))
    assert paired.rows == len(rows) and paired.labels.dtype == float
    realized = realized_quality(rt, datetime(2000, 1, 1), "1", "2", paired)
    assert realized is not None and realized.metric == "mae" and not realized.greater_is_better
    assert realized.challenger < realized.champion  # the newer model has the lower MAE on the drifted rows
    test = compare(rt, paired, "1", "2", min_gain=0.0)
    assert test is not None and test.metric == "mae" and test.method == "paired_bootstrap"
    assert test.difference == pytest.approx(realized.champion - realized.challenger) and test.significant


def test_a_regression_spec_that_names_no_metric_is_judged_on_mae():
    """The metric defaults follow the task: without primary_metric, floors and promotion.metric a
    regression spec loads, judged on MAE with no floor (a classifier's defaults stay roc_auc)."""
    raw = regression_spec().model_dump(mode="json")
    raw.pop("promotion")
    for key in ("primary_metric", "floors"):
        raw["deployment"].pop(key)
    spec = parse_spec(raw)
    assert (spec.deployment.primary_metric, spec.deployment.floors, spec.promotion.metric) == ("mae", {}, "mae")
    raw["deployment"]["primary_metric"] = "roc_auc"  # named, so not replaced: a clear error instead
    with pytest.raises(SpecError, match="not a regression metric"):
        parse_spec(raw)
