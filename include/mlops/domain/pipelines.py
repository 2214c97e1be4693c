"""Model pipelines. A spec names its pipeline factory as ``module:function`` (``training.pipeline``);
the factory gets the spec and the spec's ``training.params`` and returns an unfitted scikit-learn
estimator that takes a DataFrame with the spec's feature columns: a classifier with ``predict_proba``
for a ``binary_classification`` spec, a regressor with ``predict`` for a ``regression`` spec
(:func:`default_pipeline`, :func:`regression_pipeline`).

A training run may name another factory than the spec's (the ``train_candidate`` DAG's ``pipeline``
param, or a ``retrain_requested`` event's extra): whoever can trigger a DAG could then make a task
import and call any ``module:function``. So such a choice must be the spec's own pipeline or on the
deployment's allow-list (``MLOPS_TRAINING_PIPELINES``); :func:`with_pipeline` refuses anything else.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.domain.spec import Spec


def _encoded(spec: Spec, estimator_class: Any, params: dict[str, Any]) -> Any:
    """Ordinal-encoded categoricals (unknown and missing -> -1), then ``estimator_class`` (a
    histogram gradient boosting model) told which encoded columns are categorical."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    cats = [f.name for f in spec.features if f.type == "categorical"]
    nums = [f.name for f in spec.features if f.type != "categorical"]
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1, dtype=np.float64)
    pre = ColumnTransformer([("cat", encoder, cats), ("num", "passthrough", nums)], verbose_feature_names_out=False)
    est = estimator_class(
        categorical_features=list(range(len(cats))),
        random_state=spec.training.random_state,
        early_stopping=False,
        **params,
    )
    return Pipeline([("pre", pre), ("clf", est)])


def default_pipeline(spec: Spec, params: dict[str, Any]) -> Any:
    """Ordinal-encoded categoricals (unknown and missing -> -1) + histogram gradient boosting.

    HistGradientBoosting treats the encoded columns as categorical and handles missing numeric
    values natively, so the weather gaps need no imputation.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    return _encoded(spec, HistGradientBoostingClassifier, params)


def regression_pipeline(spec: Spec, params: dict[str, Any]) -> Any:
    """The same encoding + ``HistGradientBoostingRegressor`` (for a ``regression`` spec; ``params``
    are its own, e.g. ``loss: absolute_error`` for a model judged on MAE). The step keeps the name
    ``clf`` so both pipelines have the same shape."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return _encoded(spec, HistGradientBoostingRegressor, params)


#: What a pipeline name looks like: ``package.module:function`` (the spec's own pattern).
PIPELINE_NAME = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class PipelineNotAllowed(ValueError):
    """A run named a pipeline factory that is neither the spec's nor on the allow-list."""

    def __init__(self, name: str, allowed: Sequence[str]) -> None:
        self.name, self.allowed = name, list(allowed)
        super().__init__(
            f"pipeline {name[:200]!r} is not allowed: a run may name only {', '.join(self.allowed)} "
            "(the spec's training.pipeline, and MLOPS_TRAINING_PIPELINES)"
        )


def allowed_pipelines(spec: Spec, allow_list: Sequence[str]) -> list[str]:
    """The factories a run may name: the spec's own pipeline, then the deployment's allow-list."""
    return list(dict.fromkeys([spec.training.pipeline, *allow_list]))


def with_pipeline(spec: Spec, name: str, allow_list: Sequence[str]) -> Spec:
    """``spec`` training with the factory ``name`` instead of its own, which must be allowed (an
    exact ``module:function`` of :func:`allowed_pipelines`): else :class:`PipelineNotAllowed`,
    before anything is imported."""
    allowed = allowed_pipelines(spec, allow_list)
    if name not in allowed or not PIPELINE_NAME.fullmatch(name):
        raise PipelineNotAllowed(name, allowed)
    return spec.model_copy(update={"training": spec.training.model_copy(update={"pipeline": name})})


def _factory(spec: Spec) -> Any:
    module_name, _, func_name = spec.training.pipeline.partition(":")
    try:
        return getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"training.pipeline {spec.training.pipeline!r} cannot be imported: {exc}") from None


def build_pipeline(spec: Spec) -> Any:
    """Import the spec's pipeline factory and build an unfitted estimator."""
    return _factory(spec)(spec, dict(spec.training.params))


def trusted_types(spec: Spec) -> list[str]:
    """The types skops may load for this pipeline: the spec's list plus any the factory names
    itself (``factory.skops_trusted_types``, e.g. a function of the project's own)."""
    own = list(getattr(_factory(spec), "skops_trusted_types", []))
    return list(dict.fromkeys([*spec.training.skops_trusted_types, *own]))
