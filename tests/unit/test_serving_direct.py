"""The direct input path: the same probabilities as the pipeline, bit for bit, or not used at all."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from include.mlops.adapters.registry import ServingConfig
from include.mlops.serving.direct import UNKNOWN, build, check_rows, compile_direct
from include.mlops.serving.models import ModelManager
from include.mlops.serving.schema import Row
from include.mlops.serving.scoring import FrameBuilder, Scorer
from tests.helpers import make_batch

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def data(spec):
    import pandas as pd

    df = pd.concat([make_batch(spec, date(2013, 3, d), n=120, seed=3) for d in range(1, 5)], ignore_index=True)
    X = df[spec.feature_names].copy()
    X.loc[X.index % 7 == 0, "temp"] = np.nan  # nullable numbers with gaps, as the weather has them
    return X, spec.target.derive(df[spec.target.source_column]).astype(int)


@pytest.fixture(scope="module")
def model(spec, data):
    from include.mlops.domain.pipelines import default_pipeline

    return default_pipeline(spec, {"max_iter": 20}).fit(*data)


def _none_for_nan(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


def rows_of(spec, X):
    return [Row(f"e{i}", None, tuple(_none_for_nan(v) for v in X.iloc[i].tolist())) for i in range(len(X))]


def test_the_default_pipeline_is_reproduced_exactly_on_rows_it_never_saw(spec, data, model):
    frames = FrameBuilder(spec)
    direct, why = compile_direct(model, spec, frames)
    assert direct is not None, why
    X, _ = data
    rows = rows_of(spec, X)
    # rows the check never used: every training row, plus unknown categories and nulls mixed in
    odd = [
        Row(r.entity_id, None, tuple(UNKNOWN + "x" if isinstance(v, str) and i % 3 == 0 else v for v in r.values))
        for i, r in enumerate(rows[:60])
    ]
    nulls = [
        Row(r.entity_id, None, tuple(None if f.nullable else v for f, v in zip(spec.features, r.values, strict=True))) for r in rows[:20]
    ]
    for batch in (rows, odd, nulls, rows[:1], odd[:1], nulls[:1]):
        expected = model.predict_proba(frames.frame(batch))
        assert np.array_equal(direct.predict_proba(batch), expected)
    assert {r.values[0] for r in odd} & {UNKNOWN + "x"}  # the unknown branch was exercised


def test_check_rows_cover_every_category_an_unknown_one_and_nulls(spec):
    probe = FrameBuilder(spec).probe_row(spec)
    rows = check_rows(spec, probe)
    for j, f in enumerate(spec.features):
        seen = {r[j] for r in rows}
        if f.type == "categorical":
            assert set(f.categories or []) | {UNKNOWN} <= seen
        if f.nullable:
            assert None in seen
        if f.type == "integer":
            assert all(isinstance(r[j], int) for r in rows if r[j] is not None)


def test_other_pipeline_shapes_keep_the_dataframe_path_and_say_why(spec, data):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    X, y = data
    cats = [f.name for f in spec.features if f.type == "categorical"]
    nums = [f.name for f in spec.features if f.type != "categorical"]
    Xf = X.fillna(0.0)
    frames = FrameBuilder(spec)

    def pipe(cat, num):
        pre = ColumnTransformer([("cat", cat, cats), ("num", num, nums)])
        return Pipeline([("pre", pre), ("clf", HistGradientBoostingClassifier(max_iter=5))]).fit(Xf, y)

    cases = {
        "not a scikit-learn Pipeline": HistGradientBoostingClassifier(max_iter=5).fit(Xf[nums], y),
        "OneHotEncoder": pipe(OneHotEncoder(handle_unknown="ignore", sparse_output=False), "passthrough"),
        "StandardScaler": pipe(OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), StandardScaler()),
        "raises on unknown categories": pipe(OrdinalEncoder(), "passthrough"),
    }
    for why, estimator in cases.items():
        direct, note = compile_direct(estimator, spec, frames)
        assert direct is None and why in note, (why, note)


def test_a_direct_path_that_differs_is_refused(spec, model, monkeypatch):
    import include.mlops.serving.direct as direct_mod

    real = direct_mod.build

    def off_by_one(estimator, names):
        built = real(estimator, names)
        enc = built._encoded[0]
        first = next(iter(enc.codes))
        enc.codes[first] = enc.codes[first] + 1  # one category encoded wrong
        return built

    monkeypatch.setattr(direct_mod, "build", off_by_one)
    direct, note = compile_direct(model, spec, FrameBuilder(spec))
    assert direct is None and "differ" in note


def test_the_scorer_answers_through_the_direct_path_with_the_pipelines_scores(spec, data, model):
    frames = FrameBuilder(spec)
    manager = ModelManager(
        "m", lambda: ServingConfig("1", None, None, 0.0), loader=lambda v: model, probe=lambda m: compile_direct(m, spec, frames)
    )
    state = manager.poll()
    assert state.champion is not None and state.champion.direct is not None
    assert manager.health()["input_path"] == {"1": "direct"}
    calls = []
    real = state.champion.direct.predict_proba
    state.champion.direct.predict_proba = lambda rows: calls.append(len(rows)) or real(rows)  # type: ignore[method-assign]
    rows = rows_of(spec, data[0].iloc[:9])

    class Job:
        def __init__(self, rows):
            self.rows, self.result, self.error = rows, None, None

    jobs = [Job(rows[:4]), Job(rows[4:])]
    Scorer(manager, frames, salt="m")(jobs)
    assert calls == [9]
    expected = model.predict_proba(frames.frame(rows))[:, 1].tolist()
    assert [o.score for j in jobs for o in j.result] == expected


def test_build_refuses_columns_outside_the_spec(spec, data, model):
    from include.mlops.serving.direct import Unsupported

    with pytest.raises(Unsupported, match="not features of the spec"):
        build(model, [n for n in spec.feature_names if n != "carrier"])


def test_a_pipeline_without_categorical_columns_and_an_unreadable_one_never_fail_the_load(spec, data, monkeypatch):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    import include.mlops.serving.direct as direct_mod

    X, y = data
    nums = [f.name for f in spec.features if f.type != "categorical"]
    frames = FrameBuilder(spec)
    # an empty selection stays unfitted in transformers_; only the pass-through columns count
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    pre = ColumnTransformer([("cat", encoder, []), ("num", "passthrough", nums)])
    numeric_only = Pipeline([("pre", pre), ("clf", HistGradientBoostingClassifier(max_iter=5))]).fit(X, y)
    direct, why = compile_direct(numeric_only, spec, frames)
    assert direct is not None, why

    def surprised(estimator, names, task="binary_classification"):
        raise KeyError("something build() did not foresee")

    monkeypatch.setattr(direct_mod, "build", surprised)
    direct, why = compile_direct(numeric_only, spec, frames)
    assert direct is None and "could not be read for direct input" in why and "KeyError" in why


def test_the_service_takes_requests_only_after_its_first_model_load(spec, model, tmp_path, monkeypatch):
    """A worker uvicorn restarts beside a live one must not answer 503 while its model loads:
    start-up (the lifespan) returns once the first registry read has loaded the champion."""
    import asyncio
    import time

    import include.mlops.serving.models as models_mod
    from include.mlops.serving.service import ServingService
    from include.mlops.settings import get_settings

    def slow_load(name, version):
        time.sleep(1.0)
        return model

    monkeypatch.setattr(models_mod, "load_sklearn", slow_load)
    settings = get_settings({"MLOPS_HOME": str(tmp_path), "MLOPS_SERVING_JOURNAL": "off", "MLOPS_SERVING_POLL_SECONDS": "60"})
    service = ServingService(settings, spec, config=lambda: ServingConfig("3", None, None, 0.0))

    async def started_state():
        await service.start()
        try:
            return service.manager.state, service.health()
        finally:
            await service.stop()

    state, health = asyncio.run(started_state())
    assert state.champion is not None and state.champion.version == "3"
    assert health["ready"] is True and health["input_path"] == {"3": "direct"}
