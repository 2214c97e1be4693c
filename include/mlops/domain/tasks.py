"""What differs between the kinds of model the loop runs (the spec's ``task``).

One place answers, for a ``binary_classification`` or a ``regression`` model: what a model's
*score* of a row is (a probability of the positive class, or the predicted value), what its
*prediction* is, which holdout and production metrics it has, and which way each metric is better.
Everything else in the loop (gates, monitoring, promotion, the backtest, serving) asks here
instead of assuming a classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # numpy is imported where it is used: the spec (parsed with the DAG files) reads METRICS
    import numpy as np

Task = Literal["binary_classification", "regression"]
TASKS: tuple[Task, ...] = ("binary_classification", "regression")


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    #: the same metric's name in MLflow's builtin evaluator (``mlflow.models.evaluate``)
    mlflow_name: str

    def gain(self, new: float, old: float) -> float:
        """How much better ``new`` is than ``old`` (positive: better), whichever way the metric goes."""
        return new - old if self.higher_is_better else old - new

    def drop(self, live: float, reference: float) -> float:
        """How much worse ``live`` is than ``reference`` (positive: worse)."""
        return -self.gain(live, reference)


CLASSIFICATION_METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("roc_auc", True, "roc_auc"),
        Metric("precision_recall_auc", True, "precision_recall_auc"),
        Metric("log_loss", False, "log_loss"),
        Metric("brier_score", False, "brier_score"),
        Metric("accuracy_score", True, "accuracy_score"),
        Metric("f1_score", True, "f1_score"),
    )
}
REGRESSION_METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("mae", False, "mean_absolute_error"),
        Metric("rmse", False, "root_mean_squared_error"),
        Metric("r2", True, "r2_score"),
    )
}
METRICS: dict[Task, dict[str, Metric]] = {"binary_classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}
#: the metric a spec of each task compares versions on unless it names another
DEFAULT_METRIC: dict[Task, str] = {"binary_classification": "roc_auc", "regression": "mae"}


def metric(task: Task, name: str) -> Metric:
    """The metric ``name`` of ``task``; a clear error names the ones that exist."""
    try:
        return METRICS[task][name]
    except KeyError:
        raise ValueError(f"{name!r} is not a {task} metric; use one of {', '.join(METRICS[task])}") from None


def scores(task: Task, model: Any, x: Any) -> np.ndarray:
    """The model's score of each row: P(positive) for a classifier, the predicted value for a regressor."""
    import numpy as np

    if task == "regression":
        return np.asarray(model.predict(x), dtype=float).reshape(-1)
    return np.asarray(model.predict_proba(x), dtype=float)[:, 1]


def predictions(task: Task, score: np.ndarray) -> np.ndarray:
    """What the API answers as the prediction: the class at 0.5, or the value itself."""
    import numpy as np

    if task == "regression":
        return np.asarray(score, dtype=float)
    return (np.asarray(score) >= 0.5).astype(int)


def classification_metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Classifier metrics of scores ``s`` against 0/1 labels ``y`` (NaN where undefined)."""
    import numpy as np
    from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, f1_score, log_loss, roc_auc_score

    y = np.asarray(y).astype(int)
    s = np.asarray(s, dtype=float)
    pred = (s >= 0.5).astype(int)
    both = len(set(y.tolist())) == 2
    empty = len(y) == 0
    return {
        "roc_auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "precision_recall_auc": float(average_precision_score(y, s)) if both else float("nan"),
        "log_loss": float("nan") if empty else float(log_loss(y, np.clip(s, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier_score": float("nan") if empty else float(brier_score_loss(y, s)),
        "accuracy_score": float("nan") if empty else float(accuracy_score(y, pred)),
        "f1_score": float("nan") if empty else float(f1_score(y, pred, zero_division=0)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "predicted_positive_rate": float(pred.mean()) if len(pred) else float("nan"),
    }


def regression_metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Regression metrics of predictions ``s`` against outcomes ``y`` (NaN where undefined)."""
    import numpy as np

    y = np.asarray(y, dtype=float)
    s = np.asarray(s, dtype=float)
    if len(y) == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "r2": float("nan"), "mean_target": float("nan"), "mean_prediction": float("nan")}
    err = s - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": float(1.0 - float((err**2).sum()) / ss_tot) if ss_tot > 0 else float("nan"),
        "mean_target": float(y.mean()),
        "mean_prediction": float(s.mean()),
    }


METRIC_SETS: dict[Task, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
    "binary_classification": classification_metrics,
    "regression": regression_metrics,
}


def evaluate(task: Task, y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Every metric of ``task`` for scores ``s`` against labels ``y``."""
    return METRIC_SETS[task](y, s)


def labels(task: Task | str, values: Any) -> np.ndarray:
    """Target values as the task's metrics take them: 0/1 ints for a classifier, floats for a regressor."""
    import numpy as np

    if task == "regression":
        return np.asarray(values, dtype=float).reshape(-1)
    return np.asarray(values).astype(int).reshape(-1)


def truth_column(task: Task | str) -> Literal["label", "outcome"]:
    """Which ground-truth column of the ops store holds a task's label: the derived 0/1 ``label`` for
    a classifier; the raw ``outcome`` (the regression target itself, a float) for a regressor."""
    return "outcome" if task == "regression" else "label"


def trend_direction(task: Task | str, name: str) -> Literal["decreasing", "increasing"]:
    """The direction of a worsening trend of metric ``name``: falling for AUC/R2, rising for MAE."""
    return "decreasing" if metric(task, name).higher_is_better else "increasing"  # type: ignore[arg-type]


def metric_of(name: str) -> Metric:
    """The metric ``name`` of whichever task has it (names do not repeat across tasks)."""
    for task_metrics in METRICS.values():
        if name in task_metrics:
            return task_metrics[name]
    raise ValueError(f"unknown metric {name!r}; use one of {', '.join(n for m in METRICS.values() for n in m)}")
