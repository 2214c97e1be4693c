"""Fire-drill models: fine offline, bad in production.

``fragile_pipeline`` is the spec's default pipeline with one difference: its encoder knows exactly
the spec's categories and raises on any other value, instead of mapping unknowns to -1. Every
offline gate passes (the holdout and the probe set only hold the spec's categories), but live
traffic with a category only production has (a new route, a new carrier) makes it fail. As a
canary it must be rolled back by the early window, with the champion answering throughout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.spec import Spec


def fragile_pipeline(spec: Spec, params: dict[str, Any]) -> Any:
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    cats = [f for f in spec.features if f.type == "categorical"]
    nums = [f.name for f in spec.features if f.type != "categorical"]
    encoder = OrdinalEncoder(categories=[list(f.categories or []) for f in cats], handle_unknown="error", dtype=np.float64)
    pre = ColumnTransformer([("cat", encoder, [f.name for f in cats]), ("num", "passthrough", nums)], verbose_feature_names_out=False)
    clf = HistGradientBoostingClassifier(
        categorical_features=list(range(len(cats))), random_state=spec.training.random_state, early_stopping=False, **params
    )
    return Pipeline([("pre", pre), ("clf", clf)])
