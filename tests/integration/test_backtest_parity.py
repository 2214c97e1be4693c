"""The backtest judges a window with monitoring's own code: a version trained by
``train_candidate`` (real MLflow, a temporary ops store and lake) and monitored by
``run_monitoring`` on a day of logged traffic gets the same drift verdict, share and per-feature
statistics as the backtest's replay of the same window; and a few weeks of flights run through
``make backtest``'s entry point (its window bounds the time; `make bench-backtest` measures it)."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest

from include.mlops.adapters.registry import CHAMPION, mlflow_client, set_alias
from include.mlops.steps.backtest.history import History
from include.mlops.steps.backtest.loop import Loop
from include.mlops.steps.backtest.models import Trainer
from include.mlops.steps.monitoring import run_monitoring
from include.mlops.steps.training import train_candidate
from include.mlops.steps.training_window import Window
from tests.integration.conftest import fill_pool
from tests.integration.loop_helpers import log_traffic

pytestmark = pytest.mark.integration

DAY = date(2013, 2, 10)


@pytest.mark.parametrize("calibrated", [True, False], ids=["calibrated", "fixed"])
def test_a_window_judged_by_the_backtest_and_by_monitoring_gets_the_same_drift_verdict(
    calibrated, ml_runtime, mlflow_env, model_name, spec_variant, flights
):
    from include.mlops.runtime import load_runtime

    spec_variant("parity", monitoring={"min_rows": 100, "min_labelled_rows": 200, "drift_calibration": {"enabled": calibrated}})
    rt = load_runtime()
    fill_pool(rt, flights, date(2013, 1, 1), date(2013, 2, 7))
    out = train_candidate(rt, train_start=date(2013, 1, 1), train_end=date(2013, 1, 31), run_id="parity-train")
    client = mlflow_client(mlflow_env["url"])
    set_alias(rt.store, client, model_name, CHAMPION, out["version"], strategy="direct", reason="first", actor="test", op_key="p1")
    log_traffic(rt, flights, model_name, [(out["version"], CHAMPION)], day=DAY, labels=True)
    start = datetime.combine(DAY, datetime.min.time())
    end = datetime(2013, 2, 11)
    (live,) = [
        s for s in run_monitoring(rt, window_start=start.isoformat(), window_end=end.isoformat())["summaries"] if s["role"] == CHAMPION
    ]

    h = History.of(rt.spec, flights, start=date(2013, 1, 1), end=DAY)
    trainer = Trainer(h)
    fitted = trainer.fit(Window(date(2013, 1, 1), date(2013, 1, 31), date(2013, 2, 1), date(2013, 2, 7)))
    assert fitted.metrics["roc_auc"] == pytest.approx(out["metrics"]["roc_auc"], abs=1e-6)  # the same model
    assert (fitted.reference.calibration is not None) is calibrated
    loop = Loop(h, trainer, fitted, DAY)
    loop.serve(DAY)
    replayed = loop.judge("1", CHAMPION, (DAY, DAY), end).to_dict()

    assert replayed["rows"] == live["rows"] > 500
    assert replayed["drift"]["thresholds"] == live["drift"]["thresholds"] == ("calibrated" if calibrated else "fixed")
    for key in ("dataset_drift", "drifted", "undefined"):
        assert replayed["drift"][key] == live["drift"][key], key
    assert replayed["drift"]["share"] == pytest.approx(live["drift"]["share"], abs=1e-12)
    for column, verdict in live["drift"]["columns"].items():
        mine = replayed["drift"]["columns"][column]
        assert (mine["method"], mine["drifted"]) == (verdict["method"], verdict["drifted"]), column
        for key in ("score", "threshold"):  # None when no test ran (e.g. a column null in the window)
            if verdict[key] is None:
                assert mine[key] is None, (column, key)
            else:
                assert mine[key] == pytest.approx(verdict[key], rel=1e-9, abs=1e-12), (column, key)
    assert replayed["prediction"]["drifted"] == live["prediction"]["drifted"]
    assert replayed["prediction"]["score_drift"] == pytest.approx(live["prediction"]["score_drift"], rel=1e-6)
    drift_codes = {"dataset_drift", "feature_drift", "prediction_drift"}
    assert drift_codes & set(replayed["reason_codes"]) == drift_codes & set(live["reason_codes"])


def test_a_few_weeks_of_flights_through_make_backtests_entry_point(tmp_path, flights_cache):
    from tooling.backtest import main

    # Run time is measured by `make bench-backtest` (benchmarks/), not asserted here: the window is what bounds it.
    assert main(["--start", "2013-01-01", "--end", "2013-03-17", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "backtest.json").read_text())
    assert list(result["auc"]["loop"]["months"]) == ["2013-02", "2013-03"]
    assert result["loop"]["counts"]["windows"] == 6 and result["retrains"]["weekly"] == 6
    assert 0.55 < result["auc"]["loop"]["mean"] < 0.8 and 0.55 < result["auc"]["weekly"]["mean"] < 0.8
    assert (tmp_path / "backtest.png").stat().st_size > 10_000 and "scheduled, every 7 days" in (tmp_path / "backtest.txt").read_text()
    # every model the loop served was fitted (and refitted) in this run, and the count says so
    # the spec validates, then refits: the first model and every deployed candidate are fitted twice
    counts = result["loop"]["counts"]
    assert result["settings"]["refit_with_holdout"] is True
    assert result["timing"]["fits"] >= 2 + counts["retrains"] + counts["deployments"]
