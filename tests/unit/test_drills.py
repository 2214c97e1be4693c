"""The fragile drill model: the same scores as the default pipeline on the spec's categories (so
it passes every offline gate), and an error on a category only production has."""

from __future__ import annotations

import pickle
from datetime import date

import numpy as np
import pytest

from include.mlops.domain.pipelines import default_pipeline
from tests.helpers import make_batch
from tooling.drills import fragile_pipeline


def test_fragile_scores_like_the_default_pipeline_and_fails_on_an_unknown_category(spec):
    df = make_batch(spec, date(2013, 1, 5), n=600, seed=3)
    x, y = df[spec.feature_names], spec.target.derive(df[spec.target.source_column])
    params = {"max_iter": 20}
    default = default_pipeline(spec, params).fit(x, y)
    fragile = pickle.loads(pickle.dumps(fragile_pipeline(spec, params).fit(x, y)))  # as MLflow stores it
    np.testing.assert_array_equal(default.predict_proba(x), fragile.predict_proba(x))

    live = x.copy()
    live.loc[live.index[0], "dest"] = "ZZZ"
    default.predict_proba(live)  # the default maps the unknown to -1 and answers
    with pytest.raises(ValueError, match=r"dest: unknown value\(s\) \['ZZZ'\]"):
        fragile.predict_proba(live)
    missing = x.copy()
    missing.loc[missing.index[0], "dest"] = None
    fragile.predict_proba(missing)  # a missing value is not an unknown category


def test_fragile_round_trips_through_mlflow_with_skops_and_its_own_trusted_types(spec, tmp_path):
    import mlflow.sklearn

    from include.mlops.domain.pipelines import trusted_types

    df = make_batch(spec, date(2013, 1, 6), n=300, seed=4)
    x, y = df[spec.feature_names], spec.target.derive(df[spec.target.source_column])
    fitted = fragile_pipeline(spec, {"max_iter": 10}).fit(x, y)
    fragile_spec = spec.model_copy(update={"training": spec.training.model_copy(update={"pipeline": "tooling.drills:fragile_pipeline"})})
    assert "tooling.drills.refuse_unknown_categories" in trusted_types(fragile_spec)
    assert "tooling.drills.refuse_unknown_categories" not in trusted_types(spec)
    mlflow.sklearn.save_model(fitted, str(tmp_path / "m"), skops_trusted_types=trusted_types(fragile_spec))
    loaded = mlflow.sklearn.load_model(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.predict_proba(x), fitted.predict_proba(x))
