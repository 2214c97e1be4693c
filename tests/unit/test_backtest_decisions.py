"""The opt-in decision rules as the backtest replays them (the same functions the DAGs call): a
promotion only on a significant paired gain, the bake period that rolls a worse champion back, the
freshness trigger, and monitoring's trend test for slow decay."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.mlops.domain.spec import SpecError, parse_spec
from include.mlops.steps.backtest import run_backtest
from include.mlops.steps.backtest.history import DAY, History, day_start
from include.mlops.steps.backtest.loop import Loop
from include.mlops.steps.backtest.models import Trainer
from include.mlops.steps.backtest.release import judge_bake
from include.mlops.steps.backtest.state import Bake
from include.mlops.steps.monitoring import event_extra
from include.mlops.steps.monitoring.checks import Summary, judge_trend
from tests.unit.test_backtest import tiny_history, tiny_spec

pytestmark = pytest.mark.unit


def with_sections(**sections: dict[str, Any]):
    spec = tiny_spec()
    return spec.model_copy(update={k: getattr(spec, k).model_copy(update=v) for k, v in sections.items()})


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return tiny_history()


def test_with_a_promotion_test_every_promotion_is_a_significant_gain(raw):
    spec = with_sections(promotion={"test": "delong", "alpha": 0.05})
    out = run_backtest(spec, raw)
    promotions = [d for d in out["loop"]["decisions"] if d["kind"] == "promotion"]
    assert promotions, "the synthetic drift must bring a candidate to a promotion decision"
    for d in promotions:
        assert d["reason_code"] in ("significant_gain", "gain_not_significant"), d
        test = d["details"]["test"]
        assert test["method"] == "delong" and test["significant"] == (d["outcome"] == "promote")
        assert d["details"]["labelled_rows"] >= spec.promotion.min_labelled_rows


def test_a_promotion_with_a_bake_period_ends_it_with_a_verdict(raw):
    spec = with_sections(promotion={"bake_days": 7})
    out = run_backtest(spec, raw)
    kinds = [(d["kind"], d["outcome"]) for d in out["loop"]["decisions"] if d["kind"] in ("promotion", "bake")]
    promoted = [i for i, k in enumerate(kinds) if k == ("promotion", "promote")]
    assert promoted, "the synthetic drift must promote a candidate"
    for i in promoted[:-1]:  # every bake but perhaps the last (the history may end first) got its verdict
        assert kinds[i + 1][0] == "bake" and kinds[i + 1][1] in ("end", "rollback"), kinds


class Inverted:
    """A pipeline answering the opposite of ``pipe``: a promoted model far worse than its predecessor."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        p = self.pipe.predict_proba(x)
        return p[:, ::-1]


def test_a_promoted_version_worse_than_the_previous_champion_is_rolled_back_after_its_bake(raw):
    spec = with_sections(promotion={"bake_days": 7, "test": "bootstrap"})
    h = History.of(spec, raw)
    trainer = Trainer(h)
    start = date(2021, 2, 1)
    first = trainer.fit(trainer.plan(h.labelled_days(day_start(start))))
    loop = Loop(h, trainer, first, start)
    n = len(h.frame)
    bad = replace(first, pipe=Inverted(first.pipe), scores=np.full(n, np.nan), scored=np.zeros(n, dtype=bool))
    worse = loop.st.register(bad)
    loop.st.champion = worse
    loop.st.bake = Bake(worse, "1", start, h.span(start, start)[0])
    day = start
    while loop.st.bake is not None and day <= h.last:
        loop.serve(day)
        judge_bake(loop, day, day_start(day) + DAY)
        day += DAY
    bake = [d for d in loop.st.decisions if d["kind"] == "bake"]
    assert [(d["outcome"], d["reason_code"]) for d in bake] == [("rollback", "worse_than_previous_champion")]
    assert loop.st.champion == "1" and loop.st.counts["bake_rollbacks"] == 1
    assert (loop.st.ledger[-1].action, loop.st.ledger[-1].from_version, loop.st.ledger[-1].to_version) == ("rolled_back", worse, "1")
    # the previous champion scored every row of the bake in shadow, and the verdict waited for a week of labels
    assert (loop.st.shadow[h.span(start, start + timedelta(days=6))[0] : h.span(start, start + timedelta(days=6))[1]] == 1).all()
    assert bake[0]["details"]["covered_hours"] >= 7 * 24


def test_an_old_champion_triggers_a_retrain_when_the_spec_sets_a_freshness_limit(raw):
    # drift is not a trigger and decay cannot be (a drop of 1.0 AUC): only age can retrain
    spec = with_sections(retraining={"max_model_age_days": 14, "retrain_on_drift": False}, monitoring={"max_quality_drop": 1.0})
    out = run_backtest(spec, raw)
    counts = out["loop"]["counts"]
    assert counts.get("retrains_model_stale", 0) >= 1
    assert counts["retrains"] == counts["retrains_model_stale"]
    stale = [d for d in out["loop"]["decisions"] if d["kind"] == "governance" and d["key"].startswith("model_stale:")]
    assert stale and stale[0]["outcome"] == "accepted"


def summary(live: float | None) -> Summary:
    s = Summary("m", "3", "champion", "2021-02-01T00:00:00", "2021-02-08T00:00:00", rows=500)
    s.quality = {"metric": "roc_auc", "live": live, "holdout": 0.8, "labelled_rows": 400}
    return s


def test_a_steady_fall_over_windows_is_slow_decay_and_reaches_the_retrain_event():
    mon = parse_spec({**tiny_spec().model_dump(mode="json"), "monitoring": {"trend_windows": 6}}).monitoring
    s = summary(0.70)
    judge_trend(s, [0.78, 0.77, 0.755, 0.74, 0.72], mon)
    assert s.outcome == "decay" and "quality_trend" in s.reason_codes and s.quality["trend_test"]["significant"]
    extra = event_extra({"current": {"champion": "3"}, "summaries": [s.to_dict()]}, "performance_degraded")
    assert extra is not None and extra["reason_codes"] == ["quality_trend"] and extra["trend_test"]["windows"] == 6


def test_no_trend_verdict_on_noise_too_few_windows_or_when_off():
    on = parse_spec({**tiny_spec().model_dump(mode="json"), "monitoring": {"trend_windows": 6}}).monitoring
    noisy = summary(0.76)
    judge_trend(noisy, [0.75, 0.77, 0.74, 0.78, 0.75], on)
    assert noisy.outcome == "healthy" and noisy.quality["trend_test"]["reason"] == "no_trend"
    short = summary(0.70)
    judge_trend(short, [0.78, math.nan, 0.74], on)  # a window without a verdict does not count
    assert short.outcome == "healthy" and short.quality["trend_test"]["reason"] == "too_few_windows"
    json.dumps(short.quality, allow_nan=False)  # stored as JSON on PostgreSQL: no infinite bounds
    off = summary(0.70)
    judge_trend(off, [0.78, 0.77, 0.755, 0.74, 0.72], tiny_spec().monitoring)
    assert off.outcome == "healthy" and "trend_test" not in off.quality


def test_a_trend_needs_at_least_five_windows():
    with pytest.raises(SpecError, match="trend_windows"):
        parse_spec({**tiny_spec().model_dump(mode="json"), "monitoring": {"trend_windows": 3}})


def test_make_backtest_overrides_spec_fields_and_refuses_unknown_ones():
    from tooling.backtest import with_overrides

    spec = with_overrides(tiny_spec(), ["retraining.max_model_age_days=14", "promotion.test=delong", "deployment.strategy=direct"])
    assert (spec.retraining.max_model_age_days, spec.promotion.test, spec.deployment.strategy) == (14, "delong", "direct")
    with pytest.raises(SystemExit, match="no field 'nope'"):
        with_overrides(tiny_spec(), ["retraining.nope=1"])
    with pytest.raises(SpecError, match="promotion.test"):
        with_overrides(tiny_spec(), ["promotion.test=sometimes"])


def test_with_validate_then_refit_every_version_served_is_refitted_on_its_holdout(raw):
    """``training.refit_with_holdout``: the gates judge the validation fit (its holdout metrics), the
    versions the loop registers and serves are the same pipeline fitted on window + holdout."""
    spec = with_sections(training={"refit_with_holdout": True})
    h = History.of(spec, raw)
    trainer = Trainer(h)
    start = date(2021, 2, 1)
    first = trainer.fit(trainer.plan(h.labelled_days(day_start(start))))
    loop = Loop(h, trainer, first, start)
    state = loop.run()
    served = {v for v in np.unique(state.served) if v}
    assert len(served) >= 2, "the synthetic drift must bring a refitted candidate to serve"
    for v in served:
        version = state.versions[str(v)]
        validated = trainer.fits[version.window]
        assert version is trainer.refits[version.window] and version.pipe is not validated.pipe
        w = version.window
        assert (
            version.train_rows
            == validated.train_rows + validated.holdout_rows
            == h.span(w.train_start, w.holdout_end)[1] - h.span(w.train_start, w.holdout_end)[0]
        )
        assert version.metrics == validated.metrics and version.reference is validated.reference  # judged as validated
    # the loop's first model knows the week the frozen one held back: they answer differently
    lo, hi = h.span(start, start)
    assert not np.allclose(loop.served_scores[lo:hi], trainer.scores(first, lo, hi))
    deployed = [d for d in state.decisions if d["kind"] == "deployment" and d["outcome"] == "deploy"]
    assert deployed and all(state.versions[d["version"]] is trainer.refits[state.versions[d["version"]].window] for d in deployed)
