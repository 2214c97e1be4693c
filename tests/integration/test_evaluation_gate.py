"""The evaluation gate's two ``mlflow.models.evaluate`` calls: the candidate's logs MLflow's plots,
the champion's re-evaluation only its metrics, and both compute the same metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from include.mlops.steps.gates import _evaluate

pytestmark = pytest.mark.integration


def test_metrics_only_evaluation_has_the_same_metrics_and_no_plots(tmp_path):
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # not an experiment id an earlier test left active; artifacts under tmp_path, not ./mlruns
        mlflow.create_experiment("evaluation gate", artifact_location=(tmp_path / "artifacts").as_uri())
        mlflow.set_experiment("evaluation gate")
        rng = np.random.default_rng(0)
        x = pd.DataFrame({"a": rng.random(2000), "b": rng.random(2000)})
        y = (x["a"] + rng.random(2000) > 1).astype(int)
        with mlflow.start_run():
            uri = mlflow.sklearn.log_model(LogisticRegression().fit(x, y), name="m", input_example=x.head(2)).model_uri
        data = x.assign(label=y)
        runs = {}
        for plots in (True, False):
            with mlflow.start_run() as run:
                runs[plots] = (_evaluate(uri, data, "label", plots=plots), run.info.run_id)
        client = mlflow.MlflowClient()
        artifacts = {plots: {a.path for a in client.list_artifacts(run_id)} for plots, (_, run_id) in runs.items()}
        assert {"roc_curve_plot.png", "confusion_matrix.png"} <= artifacts[True]
        assert not {a for a in artifacts[False] if a.endswith(".png")}, artifacts[False]
        full, lean = runs[True][0].metrics, runs[False][0].metrics
        assert full["roc_auc"] > 0.7 and lean["roc_auc"] == full["roc_auc"]
        assert {k: lean[k] for k in full} == full
    finally:
        mlflow.set_tracking_uri(None)


def test_a_regressor_is_evaluated_by_mlflow_regressor_evaluator_with_the_spec_metric_names(tmp_path):
    """MLflow's regressor metrics (``mean_absolute_error``...) are the spec's (``mae``...) through
    ``Metric.mlflow_name``, and equal scikit-learn's on the same rows."""
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import mean_absolute_error, r2_score

    from include.mlops.domain.spec import load_spec
    from include.mlops.steps.gates import spec_metrics

    spec = load_spec(Path(__file__).resolve().parents[2] / "include/specs/flights_arrival_delay.yaml")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.create_experiment("regression gate", artifact_location=(tmp_path / "artifacts").as_uri())
        mlflow.set_experiment("regression gate")
        rng = np.random.default_rng(0)
        x = pd.DataFrame({"a": rng.random(1000), "b": rng.random(1000)})
        y = 30 * x["a"] - 10 * x["b"] + rng.normal(0, 5, 1000)
        model = LinearRegression().fit(x, y)
        with mlflow.start_run():
            uri = mlflow.sklearn.log_model(model, name="m", input_example=x.head(2)).model_uri
        with mlflow.start_run():
            result = _evaluate(mlflow.pyfunc.load_model(uri), x.assign(delay_minutes=y), "delay_minutes", task="regression")
        got = spec_metrics(spec, result.metrics, ["mae", "rmse", "r2"])
        pred = model.predict(x)
        assert got["mae"] == pytest.approx(mean_absolute_error(y, pred)) and got["r2"] == pytest.approx(r2_score(y, pred))
        assert got["rmse"] > got["mae"] > 0
    finally:
        mlflow.set_tracking_uri(None)
