"""Pure decision functions of training and deployment, table-driven."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from include.mlops.domain.policy import GATES
from include.mlops.domain.profiles import probe_frame
from include.mlops.domain.tasks import classification_metrics
from include.mlops.steps.deploy import Candidate, Plan, deploy_planned, plan, record_rejection
from include.mlops.steps.training_window import TrainingRefused, plan_window

pytestmark = pytest.mark.unit


def results(failed=()):
    return [{"gate": g, "passed": g not in failed, "reason_code": "x", "message": "m"} for g in GATES]


def cand(champion="1"):
    return Candidate("m", "2", "run", champion, None)


@pytest.mark.parametrize(
    ("candidate", "res", "strategy", "approval", "expected"),
    [
        (cand(), results(), None, None, ("deploy", "canary", False, [])),  # the spec's strategy
        (cand(), results(), "shadow", None, ("deploy", "shadow", False, [])),  # param overrides
        (cand(), results(), "direct", True, ("deploy", "direct", True, [])),  # approval asked
        (cand(champion=None), results(), "shadow", None, ("deploy", "direct", False, [])),  # first model: champion
        (cand(), results(["floors"]), None, None, ("refuse", None, False, ["floors"])),
        (cand(), results(["loads", "probe"]), "direct", True, ("refuse", None, False, ["loads", "probe"])),
        (cand(), results()[:3], None, None, ("refuse", None, False, ["beats_champion (did not run)", "probe (did not run)"])),
        (Candidate("m", "3", "run", "1", "2"), results(), None, None, ("refuse", None, False, ["challenger_busy"])),
        (Candidate("m", "2", "run", "1", "2"), results(), None, None, ("deploy", "canary", False, [])),  # a re-run for the same version
    ],
    ids=[
        "spec-strategy",
        "param-shadow",
        "approval",
        "first-model",
        "one-gate-failed",
        "two-failed",
        "gates-missing",
        "challenger-busy",
        "rerun",
    ],
)
def test_plan(spec, candidate, res, strategy, approval, expected):
    p = plan(spec, candidate, res, strategy, approval)
    assert (p.action, p.strategy, p.require_approval, p.failed) == expected


def test_a_plan_travels_as_a_dict(spec):
    """The DAG computes the plan once and hands it on through XCom as a dict."""
    p = plan(spec, cand(), results(["probe"]), None, None)
    assert Plan(**p.to_dict()) == p


@pytest.mark.parametrize("planned", [Plan("refuse", None, False, ["floors"], "x"), Plan("deploy", None, False, [])])
def test_only_a_deployment_plan_is_deployed(planned):
    with pytest.raises(ValueError, match="not a deployment plan"):
        deploy_planned(cand().to_dict(), planned.to_dict(), None, dag_id="d", run_id="r")


@pytest.mark.parametrize(
    "answer",
    [None, {}, {"chosen_options": ["Approve"]}, {"chosen_options": None, "responded_by_user": {"name": "ann"}}],
    ids=["no-answer", "empty", "approved", "no-choice"],
)
def test_only_a_rejection_is_recorded(answer):
    assert record_rejection(cand().to_dict(), answer, dag_id="d", run_id="r") is None


def days(start, n):
    return [start + timedelta(days=i) for i in range(n)]


def test_window_default_is_last_holdout_days_after_window_days(spec):
    w = plan_window(spec, days(date(2013, 1, 1), 90))  # the pool covers Jan 1 .. Mar 31
    assert (w.holdout_start, w.holdout_end) == (date(2013, 3, 25), date(2013, 3, 31))
    assert (w.train_start, w.train_end) == (date(2013, 1, 28), date(2013, 3, 24))  # the spec's 56 days
    assert (w.train_end - w.train_start).days + 1 == spec.training.window_days


def test_window_explicit_january(spec):
    w = plan_window(spec, days(date(2013, 1, 1), 45), train_start=date(2013, 1, 1), train_end=date(2013, 1, 31))
    assert (w.holdout_start, w.holdout_end) == (date(2013, 2, 1), date(2013, 2, 7))


@pytest.mark.parametrize(
    ("available", "kwargs", "code"),
    [
        ([], {}, "empty_pool"),
        (days(date(2013, 1, 1), 31), {"train_start": date(2013, 1, 1), "train_end": date(2013, 1, 31)}, "holdout_missing"),
        (
            days(date(2013, 3, 1), 10),
            {"train_start": date(2013, 1, 1), "train_end": date(2013, 1, 31), "holdout_days": 40},
            "window_missing",
        ),
        (days(date(2013, 1, 1), 40), {"train_start": date(2013, 1, 20), "train_end": date(2013, 1, 10)}, "bad_window"),
    ],
)
def test_window_refusals(spec, available, kwargs, code):
    with pytest.raises(TrainingRefused) as exc:
        plan_window(spec, available, **kwargs)
    assert exc.value.code == code and exc.value.message


def test_metrics_are_named_like_mlflow_and_sane():
    y = np.array([0, 0, 1, 1, 0, 1])
    m = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.7, 0.4, 0.9]))
    assert m["roc_auc"] == 1.0 and m["accuracy_score"] == 1.0 and 0 < m["log_loss"] < 1
    flat = classification_metrics(np.zeros(4, dtype=int), np.full(4, 0.3))
    assert np.isnan(flat["roc_auc"])  # one class: undefined, not a crash


def test_probe_set_is_fixed_and_inside_the_spec(spec):
    a, b = probe_frame(spec), probe_frame(spec)
    assert a.equals(b) and len(a) == spec.deployment.probe_rows
    for f in spec.features:
        col = a[f.name]
        if f.type == "categorical":
            assert set(col) <= set(f.categories)
        else:
            assert col.dropna().between(f.min, f.max).all()
            assert f.nullable or col.notna().all()
