"""Fire-drill models: fine offline, bad in production.

``fragile_pipeline`` is the project's pipeline for the spec's task (``default_pipeline`` for a
classifier, ``regression_pipeline`` for a regression model) behind one extra step: a guard that raises on
any categorical value the spec does not list, where the default pipeline maps unknowns to -1.
Trained on the same window as the champion it is the same model (same scores, so every offline
gate passes: the holdout and the probe set only hold the spec's categories), but live traffic
with a category only production has (a new route, a new carrier) makes it fail. As a canary it
must be rolled back by the early window, with the champion answering throughout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.domain.spec import Spec


def refuse_unknown_categories(frame: Any, categories: dict[str, list[str]]) -> Any:
    """Pass ``frame`` through unchanged, or raise on a value outside the spec's categories."""
    for column, allowed in categories.items():
        values = frame[column]
        unknown = values[values.notna() & ~values.isin(allowed)]
        if len(unknown):
            raise ValueError(f"{column}: unknown value(s) {sorted(map(str, set(unknown)))[:5]} (the model only knows the spec's)")
    return frame


def fragile_pipeline(spec: Spec, params: dict[str, Any]) -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from include.mlops.domain.pipelines import default_pipeline, regression_pipeline

    known = {f.name: list(f.categories or []) for f in spec.features if f.type == "categorical"}
    guard = FunctionTransformer(refuse_unknown_categories, kw_args={"categories": known}, validate=False)
    base = (regression_pipeline if spec.task == "regression" else default_pipeline)(spec, params)
    return Pipeline([("guard", guard), *base.steps])


#: The guard is a function of the project's own: skops loads it only because the factory says so.
fragile_pipeline.skops_trusted_types = [f"{__name__}.refuse_unknown_categories"]  # type: ignore[attr-defined]
