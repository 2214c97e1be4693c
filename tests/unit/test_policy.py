"""Gate names, early-window, promotion, rollback and retraining policies: every branch, table-driven."""

from __future__ import annotations

import pytest

from include.mlops.domain.policy import (
    EVALUATION_GATES,
    GATE_TASKS,
    GATES,
    FinalRequest,
    LedgerRow,
    Realized,
    WindowPolicy,
    WindowSignals,
    decide_early_window,
    decide_final_request,
    decide_promotion,
    final_request,
    gates_of_task,
    rollback_target,
)

pytestmark = pytest.mark.unit

POLICY = WindowPolicy(
    min_requests=100,
    max_error_rate=0.02,
    max_p95_latency_ms=200.0,
    max_latency_ratio=3.0,
    max_rejected_share=0.05,
    max_score_psi_vs_holdout=0.25,
    max_score_psi_vs_champion=None,
    max_rss_mb=2048.0,
    max_cpu_cores=1.8,
)
GOOD = dict(requests=500, errors=0, p95_latency_ms=20.0, champion_requests=2000, champion_p95_latency_ms=18.0, rejected_share=0.0,
            score_shift_vs_holdout=0.05, score_shift_vs_champion=0.4, rss_mb=600.0, cpu_cores=0.5, model_p95_ms=4.0,
            champion_model_p95_ms=3.5)  # fmt: skip


def sig(**over):
    return WindowSignals(**{**GOOD, **over})


@pytest.mark.parametrize(
    ("signals", "waited_out", "outcome", "code", "words"),
    [
        (sig(), False, "passed", "early_window_passed", "500 requests"),
        (sig(errors=11), False, "rollback", "hard_breach", "error rate 2.20%"),
        (sig(requests=20, errors=5), False, "rollback", "hard_breach", "5 of 20 rows failed"),  # errors need no minimum sample
        (sig(errors=10), False, "passed", "early_window_passed", ""),  # exactly at the limit passes
        (sig(p95_latency_ms=250.0), False, "rollback", "hard_breach", "p95 latency 250.0 ms > 200.0 ms"),
        (sig(model_p95_ms=60.0, champion_model_p95_ms=15.0), False, "rollback", "hard_breach", "4.00x the champion's"),
        (sig(p95_latency_ms=60.0, champion_p95_latency_ms=15.0), False, "passed", "early_window_passed", ""),  # request latency: no ratio
        (sig(rejected_share=0.2), False, "rollback", "hard_breach", "schema validation 20.00%"),
        (sig(score_shift_vs_holdout=0.6), False, "rollback", "hard_breach", "PSI 0.600"),
        (sig(rss_mb=4096.0), False, "rollback", "hard_breach", "memory 4096 MB"),
        (sig(cpu_cores=1.95), False, "rollback", "hard_breach", "CPU 1.95 cores"),
        (sig(requests=40), False, "wait", "collecting", "40/100"),
        (sig(requests=40), True, "inconclusive", "too_few_requests", "only 40 requests"),
        (sig(requests=0, errors=0), True, "inconclusive", "too_few_requests", "only 0 requests"),
        (
            sig(
                p95_latency_ms=None,
                champion_p95_latency_ms=None,
                rejected_share=None,
                score_shift_vs_holdout=None,
                cpu_cores=None,
                rss_mb=None,
            ),
            False,
            "passed",
            "early_window_passed",
            "",
        ),  # fmt: skip
    ],
    ids=[
        "good",
        "errors",
        "errors-small-sample",
        "error-at-limit",
        "latency",
        "latency-ratio",
        "request-latency-is-no-ratio",
        "rejected",
        "score-shift",
        "memory",
        "cpu",
        "collecting",
        "too-few-after-window",
        "no-traffic",
        "nothing-measured",
    ],  # fmt: skip
)
def test_early_window(signals, waited_out, outcome, code, words):
    v = decide_early_window(signals, POLICY, waited_out=waited_out)
    assert (v.outcome, v.reason_code) == (outcome, code)
    assert words in " ".join(v.reasons)


def test_missing_signals_are_listed_not_guessed():
    v = decide_early_window(sig(rejected_share=None, cpu_cores=None), POLICY, waited_out=False)
    assert v.outcome == "passed" and set(v.details["not_measured"]) == {"rejected_share", "cpu_cores"}


def test_score_shift_vs_champion_is_reported_unless_a_limit_is_set():
    assert decide_early_window(sig(), POLICY, waited_out=False).details["score_psi_vs_champion"] == 0.4
    strict = WindowPolicy(**{**POLICY.__dict__, "max_score_psi_vs_champion": 0.3})
    assert decide_early_window(sig(), strict, waited_out=False).outcome == "rollback"


def real(rows=1000, champ=0.65, chal=0.66, metric="roc_auc", gib=True):
    return Realized(rows, metric, champ, chal, gib)


@pytest.mark.parametrize(
    ("champion", "challenger", "version", "realized", "outcome", "code"),
    [
        ("1", "2", None, real(), "promote", "wins_on_production_labels"),
        ("1", "2", None, real(chal=0.65), "promote", "wins_on_production_labels"),  # a tie is not a loss
        ("1", "2", None, real(chal=0.62), "refused", "loses_on_production_labels"),
        ("1", "2", None, real(rows=50, chal=0.1), "promote", "promoted_without_labels"),  # too few labels to judge
        ("1", "2", None, None, "promote", "promoted_without_labels"),
        ("1", "2", "2", real(), "promote", "wins_on_production_labels"),
        ("1", None, None, None, "refused", "nothing_to_promote"),
        ("2", None, "2", None, "noop", "already_champion"),  # promoting twice changes nothing
        ("1", "2", "3", None, "refused", "not_the_challenger"),
        ("1", None, "3", None, "refused", "not_the_challenger"),
        ("1", "2", None, real(metric="log_loss", champ=0.45, chal=0.50, gib=False), "refused", "loses_on_production_labels"),
        ("1", "2", None, real(metric="log_loss", champ=0.50, chal=0.45, gib=False), "promote", "wins_on_production_labels"),
    ],
)
def test_promotion(champion, challenger, version, realized, outcome, code):
    v = decide_promotion(champion, challenger, version, realized, min_rows=200, tolerance=0.005)
    assert (v.outcome, v.reason_code) == (outcome, code), v


def test_promotion_tolerance():
    assert decide_promotion("1", "2", None, real(chal=0.646), min_rows=200, tolerance=0.005).outcome == "promote"
    assert decide_promotion("1", "2", None, real(chal=0.644), min_rows=200, tolerance=0.005).outcome == "refused"


H = [
    LedgerRow("champion", "set", None, "1"),
    LedgerRow("champion", "set", "1", "3"),  # v2 was refused and never served
]


@pytest.mark.parametrize(
    ("history", "current", "requested", "outcome", "to"),
    [
        (H, "3", None, "rollback", "1"),  # the version that served before, not 3 - 1
        ([*H, LedgerRow("champion", "rolled_back", "3", "1")], "1", None, "noop", None),  # a repeated rollback changes nothing
        ([LedgerRow("champion", "set", None, "1")], "1", None, "refused", None),  # nothing before the first model
        ([], None, None, "refused", None),
        (H, "3", "1", "rollback", "1"),
        (H, "3", "2", "refused", None),  # never served
        (H, "3", "3", "noop", None),
    ],
    ids=["previous", "repeat", "first-model", "no-champion", "requested", "requested-never-served", "requested-current"],
)
def test_rollback_target(history, current, requested, outcome, to):
    v = rollback_target(history, current, requested)
    assert v.outcome == outcome
    assert v.details.get("to") == to


from datetime import datetime, timedelta  # noqa: E402

from include.mlops.domain.policy import RetrainPolicy, RetrainState, RetrainTrigger, decide_retrain  # noqa: E402

GOV = RetrainPolicy(cooldown=timedelta(days=14), max_retrains=3, period=timedelta(days=90), min_new_rows=5000, dedupe=timedelta(hours=24))
T0 = datetime(2013, 6, 1)


def trig(days=0.0, key="drift_detected:v1"):
    return RetrainTrigger(key.split(":")[0], key, T0 + timedelta(days=days))


def state(requests=(), in_flight=False, new_rows=20000, pool_invalid=False, trained=None):
    return RetrainState([(T0 + timedelta(days=d), k) for d, k in requests], in_flight, new_rows, pool_invalid, trained)


@pytest.mark.parametrize(
    ("t", "s", "outcome", "code"),
    [
        (trig(), state(), "accepted", "retrain_requested"),
        (trig(), state(pool_invalid=True), "refused", "training_pool_invalid"),
        (trig(), state(in_flight=True), "refused", "retrain_in_progress"),
        (trig(0.5), state([(0.0, "drift_detected:v1")]), "refused", "duplicate_trigger"),  # two drift events in the same hour/day
        (trig(0.5, "performance_degraded:v1"), state([(0.0, "drift_detected:v1")]), "refused", "cooldown"),  # other cause, still cooling
        (trig(20), state([(0.0, "drift_detected:v1")]), "accepted", "retrain_requested"),  # after the cooldown
        (trig(13.9), state([(0.0, "x")]), "refused", "cooldown"),
        (trig(80), state([(10.0, "a"), (30.0, "b"), (50.0, "c")]), "refused", "retrain_budget_exhausted"),
        (trig(105), state([(10.0, "a"), (30.0, "b"), (50.0, "c")]), "accepted", "retrain_requested"),  # the oldest left the period
        (trig(), state(new_rows=4999), "refused", "not_enough_new_rows"),
        (trig(), state(new_rows=5000), "accepted", "retrain_requested"),
    ],
    ids=[
        "accept",
        "pool-invalid",
        "in-flight",
        "duplicate",
        "cooldown-other-cause",
        "after-cooldown",
        "cooldown-edge",
        "budget",
        "budget-rolls",
        "few-rows",
        "rows-at-limit",
    ],  # fmt: skip
)
def test_retrain_governance(t, s, outcome, code):
    v = decide_retrain(t, s, GOV)
    assert (v.outcome, v.reason_code) == (outcome, code), v
    assert v.reasons


def test_every_gate_is_run_by_exactly_one_gate_task():
    assert GATE_TASKS == ("loads", "signature", "evaluation", "probe")
    judged = [g for task in GATE_TASKS for g in gates_of_task(task)]
    assert sorted(judged) == sorted(GATES) and len(judged) == len(set(judged))
    assert gates_of_task("evaluation") == EVALUATION_GATES and gates_of_task("probe") == ("probe",)


PARAMS = {"action": "rollback", "version": None, "reason": "bad canary"}


@pytest.mark.parametrize(
    ("params", "events", "expected"),
    [
        (PARAMS, [], FinalRequest("rollback", None, "bad canary")),
        ({**PARAMS, "version": 3}, [], FinalRequest("rollback", "3", "bad canary")),  # an integer param is a version too
        ({"action": None, "version": None, "reason": ""}, [], FinalRequest("promote", None, "manual")),  # empty params: defaults
        (PARAMS, [{"version": "4"}], FinalRequest("promote", "4", "early window passed", triggered=True)),  # events override
        (PARAMS, [{"version": "4"}, {"version": "5"}], FinalRequest("promote", "5", "early window passed", triggered=True)),
        ({**PARAMS, "version": "2"}, [{}], FinalRequest("promote", "2", "early window passed", triggered=True)),  # no version in it
    ],
    ids=["by-hand", "int-version", "defaults", "event", "last-event-wins", "event-without-version"],
)
def test_final_request(params, events, expected):
    assert final_request(params, events) == expected


@pytest.mark.parametrize(
    ("triggered", "auto_promote", "outcome", "code"),
    [
        (True, True, "proceed", "auto_promote"),
        (True, False, "noop", "auto_promote_off"),  # the early window passed, a person promotes
        (False, False, "proceed", "requested"),  # by hand, auto_promote does not matter
        (False, True, "proceed", "requested"),
    ],
    ids=["auto", "auto-off", "by-hand-auto-off", "by-hand"],
)
def test_decide_final_request(triggered, auto_promote, outcome, code):
    v = decide_final_request(FinalRequest("promote", "2", "r", triggered=triggered), auto_promote=auto_promote)
    assert (v.outcome, v.reason_code) == (outcome, code)
    assert v.reasons and v.details == {}


from include.mlops.domain.policy import promotion_ready, window_days  # noqa: E402


@pytest.mark.parametrize(
    ("rows", "waited_out", "test", "ready"),
    [
        (0, False, "none", False),  # labels come a day after the requests: wait for them
        (299, False, "none", False),
        (300, False, "none", True),  # enough to judge the promotion on production labels
        (0, True, "none", True),  # a window of traffic and still no labels: the early window decides
        (299, True, "delong", False),  # a test needs the labels, however long it takes
        (300, False, "delong", True),
    ],
    ids=["no-labels", "too-few", "enough", "waited-out", "test-waits", "test-enough"],
)
def test_promotion_waits_for_labels(rows, waited_out, test, ready):
    assert promotion_ready(rows, min_rows=300, waited_out=waited_out, test=test) is ready


def test_window_days():
    """A monitoring window in whole days, rounded up, as the backtest counts a release's days."""
    assert (window_days(168), window_days(24), window_days(25), window_days(1)) == (7, 1, 2, 1)


# -- issue 16: opt-in policies (defaults keep the behaviour above) ----------------------------------
import numpy as np  # noqa: E402

from include.mlops.domain.bake_policy import BakeState, decide_bake  # noqa: E402
from include.mlops.domain.policy import decay_is_real, decide_freshness  # noqa: E402
from include.mlops.domain.significance import PairedComparison, delong_test  # noqa: E402


def window_policy(**over):
    return WindowPolicy(**{**POLICY.__dict__, **over})


@pytest.mark.parametrize(
    ("policy", "signals", "waited_out", "extended", "outcome", "code"),
    [
        (window_policy(on_inconclusive="keep"), sig(requests=40), True, False, "inconclusive", "too_few_requests"),  # today
        (window_policy(on_inconclusive="extend"), sig(requests=40), True, False, "extend", "window_extended"),
        (window_policy(on_inconclusive="extend"), sig(requests=40), True, True, "rollback", "inconclusive_after_extension"),
        (window_policy(on_inconclusive="extend"), sig(requests=40), False, False, "wait", "collecting"),
        (window_policy(on_inconclusive="extend"), sig(), True, False, "passed", "early_window_passed"),  # enough after all
        (window_policy(on_inconclusive="rollback"), sig(requests=40), True, False, "rollback", "inconclusive_window"),
        (window_policy(on_inconclusive="rollback"), sig(requests=40), False, False, "wait", "collecting"),
        # the error rate against the champion's over the same window
        (window_policy(max_error_rate_increase=0.005), sig(errors=8, champion_errors=2), False, False, "rollback", "hard_breach"),
        (window_policy(max_error_rate_increase=0.005), sig(errors=8, champion_errors=40), False, False, "passed", "early_window_passed"),
        (window_policy(max_error_rate_increase=0.005), sig(errors=8, champion_requests=0), False, False, "passed", "early_window_passed"),
        (window_policy(), sig(errors=8, champion_errors=0), False, False, "passed", "early_window_passed"),  # off: not compared
    ],
    ids=[
        "keep",
        "extend",
        "extension-over",
        "extend-still-waiting",
        "extend-enough",
        "rollback",
        "rollback-still-waiting",
        "error-increase",
        "champion-as-bad",
        "no-champion-traffic",
        "error-increase-off",
    ],  # fmt: skip
)
def test_early_window_inconclusive_and_error_rate_vs_champion(policy, signals, waited_out, extended, outcome, code):
    v = decide_early_window(signals, policy, waited_out=waited_out, extended=extended)
    assert (v.outcome, v.reason_code) == (outcome, code), v
    assert v.reasons


def test_error_rate_increase_is_reported_with_its_value():
    v = decide_early_window(sig(errors=8, champion_errors=2), window_policy(max_error_rate_increase=0.005), waited_out=False)
    assert "above the champion's" in v.reasons[0]
    assert v.details["error_rate_increase"] == pytest.approx(8 / 500 - 2 / 2002, abs=1e-6)


def comparison(diff=0.02, significant=True, reason="significant_gain", champ=0.65, rows=1000):
    return PairedComparison(
        method="delong", metric="roc_auc", rows=rows, positives=200, champion=champ, challenger=champ + diff, difference=diff,
        se=0.005, ci_low=diff - 0.01, ci_high=diff + 0.01, level=0.95, p_value=0.01, min_gain=0.0,
        p_value_gain=0.01 if significant else 0.3, alpha=0.05, significant=significant, reason=reason,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("realized", "cmp", "outcome", "code"),
    [
        (real(), comparison(), "promote", "significant_gain"),
        (real(chal=0.65), comparison(0.0, False, "no_gain"), "refused", "gain_not_significant"),  # a tie is never a promotion
        (real(chal=0.653), comparison(0.003, False, "not_significant"), "refused", "gain_not_significant"),
        (real(chal=0.653), comparison(0.003, False, "gain_below_minimum"), "refused", "gain_not_significant"),
        (real(), None, "refused", "gain_not_significant"),  # the test could not be computed
        (real(chal=0.62), comparison(-0.03, False, "no_gain"), "refused", "loses_on_production_labels"),  # the loss rule first
        (real(rows=50), None, "refused", "awaiting_labels"),  # no promotion before the labels
        (None, None, "refused", "awaiting_labels"),
    ],
    ids=["significant", "tie", "within-noise", "below-min-gain", "not-computable", "loses", "few-labels", "no-labels"],
)
def test_promotion_with_a_test(realized, cmp, outcome, code):
    v = decide_promotion("1", "2", None, realized, min_rows=200, tolerance=0.005, test="delong", comparison=cmp)
    assert (v.outcome, v.reason_code) == (outcome, code), v
    if cmp is not None and code in ("significant_gain", "gain_not_significant"):
        assert v.details["test"]["p_value_gain"] == cmp.p_value_gain and "p(gain <=" in v.reasons[0]


def test_promotion_test_none_ignores_the_comparison():
    """The default keeps today's rule: a tie promotes, whatever a comparison says."""
    v = decide_promotion("1", "2", None, real(chal=0.65), min_rows=200, tolerance=0.005, comparison=comparison(0.0, False, "no_gain"))
    assert (v.outcome, v.reason_code) == ("promote", "wins_on_production_labels")


def test_a_real_tie_on_the_same_rows_is_refused():
    """The issue's v13: the same scores for both versions (roc_auc equal) -> DeLong says no gain."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 800)
    s = rng.random(800) * 0.5 + y * 0.2
    cmp = delong_test(y, s, s.copy())
    v = decide_promotion("1", "2", None, real(champ=cmp.champion, chal=cmp.challenger), min_rows=200, tolerance=0.005,
                         test="delong", comparison=cmp)  # fmt: skip
    assert (v.outcome, v.reason_code) == ("refused", "gain_not_significant") and cmp.reason == "no_gain"


DAY = timedelta(days=1)


def bake(champion="3", challenger="2", rows=1000, covered=8 * DAY, cmp=None):
    return BakeState("3", "2", champion, challenger, rows, covered, cmp)


@pytest.mark.parametrize(
    ("state", "outcome", "code"),
    [
        (bake(covered=3 * DAY), "wait", "baking"),
        (bake(rows=10, covered=3 * DAY), "wait", "baking"),
        (bake(cmp=comparison(0.03, True, "significant_gain")), "rollback", "worse_than_previous_champion"),  # the old one is better
        (bake(cmp=comparison(0.004, False, "not_significant")), "end", "bake_passed"),
        (bake(cmp=comparison(-0.02, False, "no_gain")), "end", "bake_passed"),
        (bake(rows=100, cmp=None), "end", "bake_without_enough_labels"),
        (bake(cmp=None), "end", "bake_without_enough_labels"),  # not computable (one class)
        (bake(champion="2", challenger=None), "noop", "bake_superseded"),  # rolled back by hand meanwhile
        (bake(challenger="4"), "noop", "bake_superseded"),  # a new deployment replaced the shadow
        (bake(champion="3", challenger=None, covered=DAY), "noop", "bake_superseded"),
    ],
    ids=["baking", "baking-few-rows", "worse", "not-worse", "better", "few-labels", "no-test", "rolled-back", "redeployed", "shadow-gone"],
)
def test_bake(state, outcome, code):
    v = decide_bake(state, bake=7 * DAY, min_rows=300)
    assert (v.outcome, v.reason_code) == (outcome, code), v
    assert v.reasons
    if outcome == "rollback":
        assert v.details["to"] == "2" and "previous champion v2" in v.reasons[0]


@pytest.mark.parametrize(
    ("trained_until", "max_age", "outcome", "code"),
    [
        (T0 - 40 * DAY, None, "off", "freshness_off"),
        (None, 30 * DAY, "unknown", "model_age_unknown"),
        (T0 - 40 * DAY, 30 * DAY, "stale", "model_stale"),
        (T0 - 30 * DAY, 30 * DAY, "fresh", "model_fresh"),  # exactly at the limit is fresh
        (T0 - 10 * DAY, 30 * DAY, "fresh", "model_fresh"),
    ],
)
def test_freshness(trained_until, max_age, outcome, code):
    v = decide_freshness(trained_until, T0, max_age)
    assert (v.outcome, v.reason_code) == (outcome, code)


def gov(**over):
    return RetrainPolicy(**{**GOV.__dict__, **over})


DECAYED = {"decay_test": {"decayed": True, "reason": "decayed"}}
NOT_DECAYED = {"decay_test": {"decayed": False, "reason": "not_significant"}}
TREND = {"decay_test": {"decayed": False, "reason": "not_significant"}, "trend_test": {"significant": True, "reason": "trend"}}


def cause(name, evidence=None, days=0.0):
    return RetrainTrigger(name, f"{name}:v1", T0 + timedelta(days=days), evidence or {})


@pytest.mark.parametrize(
    ("t", "p", "s", "outcome", "code"),
    [
        (cause("drift_detected"), gov(), state(), "accepted", "retrain_requested"),  # default: drift triggers (today)
        (cause("drift_detected"), gov(retrain_on_drift=False), state(), "refused", "drift_not_a_trigger"),
        (cause("performance_degraded"), gov(retrain_on_drift=False), state(), "accepted", "retrain_requested"),
        (cause("performance_degraded"), gov(decay_evidence="point"), state(), "accepted", "retrain_requested"),
        (cause("performance_degraded"), gov(decay_evidence="significant"), state(), "refused", "decay_not_significant"),
        (cause("performance_degraded", NOT_DECAYED), gov(decay_evidence="significant"), state(), "refused", "decay_not_significant"),
        (cause("performance_degraded", DECAYED), gov(decay_evidence="significant"), state(), "accepted", "retrain_requested"),
        (cause("performance_degraded", TREND), gov(decay_evidence="significant"), state(), "accepted", "retrain_requested"),
        (
            cause("performance_degraded", DECAYED),
            gov(decay_evidence="significant"),
            state(in_flight=True),
            "refused",
            "retrain_in_progress",
        ),
        (cause("model_stale"), gov(max_model_age=30 * DAY), state(trained=T0 - 40 * DAY), "accepted", "retrain_requested"),
        (cause("model_stale"), gov(max_model_age=30 * DAY), state(trained=T0 - 20 * DAY), "refused", "model_fresh"),
        (cause("model_stale"), gov(), state(trained=T0 - 400 * DAY), "refused", "freshness_off"),
        (cause("model_stale"), gov(max_model_age=30 * DAY), state(), "refused", "model_age_unknown"),
        (cause("model_stale", days=5), gov(max_model_age=30 * DAY), state([(0.0, "x")], trained=T0 - 40 * DAY), "refused", "cooldown"),
        (cause("manual"), gov(retrain_on_drift=False), state(), "accepted", "retrain_requested"),  # a person's request: governance only
        (cause("manual", days=3), gov(), state([(0.0, "drift_detected:v1")]), "refused", "cooldown"),
        (cause("manual"), gov(), state(new_rows=10), "refused", "not_enough_new_rows"),
    ],
    ids=[
        "drift-default",
        "drift-off",
        "decay-drift-off",
        "decay-point",
        "decay-no-evidence",
        "decay-not-significant",
        "decay-significant",
        "decay-trend",
        "decay-in-flight",
        "stale",
        "fresh",
        "freshness-off",
        "age-unknown",
        "stale-cooldown",
        "manual",
        "manual-cooldown",
        "manual-few-rows",
    ],  # fmt: skip
)
def test_retrain_causes(t, p, s, outcome, code):
    v = decide_retrain(t, s, p)
    assert (v.outcome, v.reason_code) == (outcome, code), v
    assert v.reasons and v.details["cause"] == t.cause


@pytest.mark.parametrize(
    ("evidence", "real"),
    [({}, False), (DECAYED, True), (NOT_DECAYED, False), (TREND, True), ({"trend_test": {"significant": False}}, False)],
)
def test_decay_is_real(evidence, real):
    assert decay_is_real(evidence) is real
