"""Pure decision functions of the loop: inputs in, a :class:`Verdict` with a reason code out.

DAG tasks gather the inputs, call these, record the verdict as a decision and act on it. Nothing
here reads a clock, a database or the network, so every branch is tested table-driven.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.domain.significance import PairedComparison


@dataclass(frozen=True)
class Verdict:
    outcome: str
    reason_code: str
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- offline gates --------------------------------------------------------------------------------
#: The offline gates a candidate must pass before it serves, in the order they are reported.
GATES: tuple[str, ...] = ("loads", "signature", "floors", "beats_champion", "probe")
#: The gates judged on one evaluation of candidate and champion, so run by one task together.
EVALUATION_GATES: tuple[str, ...] = ("floors", "beats_champion")
#: The name of that task's gate run.
EVALUATION = "evaluation"
#: One task per gate, except the evaluation: ``loads``, ``signature``, ``evaluation``, ``probe``.
GATE_TASKS: tuple[str, ...] = tuple(dict.fromkeys(EVALUATION if g in EVALUATION_GATES else g for g in GATES))


def gates_of_task(task: str) -> tuple[str, ...]:
    """The gates one gate task judges."""
    return EVALUATION_GATES if task == EVALUATION else (task,)


# -- early window ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowSignals:
    """What the early window observed for the new version (and the champion over the same period).

    ``None`` means "not measured" (e.g. no champion traffic to compare with); checks on a missing
    signal are skipped and listed, never guessed.
    """

    requests: int
    errors: int
    p95_latency_ms: float | None
    champion_requests: int = 0
    champion_p95_latency_ms: float | None = None
    rejected_share: float | None = None
    score_shift_vs_holdout: float | None = None  # PSI of the score distribution
    score_shift_vs_champion: float | None = None  # PSI vs the champion's live scores
    rss_mb: float | None = None
    cpu_cores: float | None = None
    champion_errors: int = 0  # failed rows of the champion over the same period
    #: p95 of each version's own inference time (its predict calls, inference_log.model_ms): the
    #: latency ratio compares these, since both versions' rows share a request's latency.
    model_p95_ms: float | None = None
    champion_model_p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def champion_error_rate(self) -> float | None:
        """The champion's error rate over the same period (None: it served nothing)."""
        total = self.champion_requests + self.champion_errors
        return self.champion_errors / total if total else None


@dataclass(frozen=True)
class WindowPolicy:
    min_requests: int
    max_error_rate: float
    max_p95_latency_ms: float
    max_latency_ratio: float
    max_rejected_share: float
    max_score_psi_vs_holdout: float | None  # None: reported, never a breach
    max_score_psi_vs_champion: float | None  # None: reported, never a breach
    max_rss_mb: float
    max_cpu_cores: float
    #: The new version's error rate minus the champion's above it: a breach (None: not compared).
    max_error_rate_increase: float | None = None
    #: A window that runs out with too few requests: keep | extend | rollback.
    on_inconclusive: str = "keep"


def latency_ratio(model_p95_ms: float | None, champion_model_p95_ms: float | None) -> float | None:
    """The new version's p95 inference time over the champion's (None when either is not measured)."""
    if model_p95_ms is None or not champion_model_p95_ms or math.isnan(model_p95_ms) or math.isnan(champion_model_p95_ms):
        return None
    return model_p95_ms / champion_model_p95_ms


def _too_few_requests(s: WindowSignals, p: WindowPolicy, details: dict[str, Any], *, extended: bool) -> Verdict:
    """The window ran out before ``min_requests``: what ``on_inconclusive`` says to do."""
    text = f"only {s.requests} requests reached the new version within the window; {p.min_requests} are needed"
    if p.on_inconclusive == "rollback":
        return Verdict("rollback", "inconclusive_window", [text + " (early_window.on_inconclusive: rollback)"], details)
    if p.on_inconclusive == "extend":
        if extended:
            return Verdict("rollback", "inconclusive_after_extension", [text + ", after one extension of the window"], details)
        return Verdict("extend", "window_extended", [text + ": the window is extended once"], details)
    return Verdict("inconclusive", "too_few_requests", [text], details)


def decide_early_window(s: WindowSignals, p: WindowPolicy, *, waited_out: bool, extended: bool = False) -> Verdict:
    """``rollback`` on any hard breach; ``passed`` when every measured signal is within bounds and
    enough requests were seen; ``wait`` while too few requests and time remains. When the window
    ran out with too few requests, ``p.on_inconclusive`` decides: ``inconclusive`` (``keep``: nothing
    is changed, a person decides), ``extend`` once (``extended`` says the extension ran out too, then
    ``rollback``), or ``rollback`` at once: with ``extend`` or ``rollback`` a canary never keeps
    serving on an unjudged window."""
    breaches: list[str] = []
    details: dict[str, Any] = {"requests": s.requests, "error_rate": round(s.error_rate, 6)}
    skipped: list[str] = []

    # An error-rate breach needs no minimum sample: a model failing live is rolled back at once.
    if s.requests and s.error_rate > p.max_error_rate:
        breaches.append(f"error rate {s.error_rate:.2%} > {p.max_error_rate:.2%} ({s.errors} of {s.requests} rows failed)")
    if s.rss_mb is not None and s.rss_mb > p.max_rss_mb:
        breaches.append(f"serving memory {s.rss_mb:.0f} MB > {p.max_rss_mb:.0f} MB")
    if breaches:
        return Verdict("rollback", "hard_breach", breaches, details)
    if s.requests < p.min_requests:
        if waited_out or extended:
            return _too_few_requests(s, p, details, extended=extended)
        return Verdict("wait", "collecting", [f"{s.requests}/{p.min_requests} requests"], details)

    checks: list[tuple[str, float | None, float | None, str]] = [
        ("p95_latency_ms", s.p95_latency_ms, p.max_p95_latency_ms, "p95 latency {v:.1f} ms > {t:.1f} ms"),
        ("rejected_share", s.rejected_share, p.max_rejected_share, "requests failing schema validation {v:.2%} > {t:.2%}"),
        (
            "score_psi_vs_holdout",
            s.score_shift_vs_holdout,
            p.max_score_psi_vs_holdout,
            "score distribution shift vs its holdout PSI {v:.3f} > {t:.3f}",
        ),
        ("cpu_cores", s.cpu_cores, p.max_cpu_cores, "serving CPU {v:.2f} cores > {t:.2f}"),
    ]
    ratio = latency_ratio(s.model_p95_ms, s.champion_model_p95_ms)
    checks.append(("latency_ratio", ratio, p.max_latency_ratio, "p95 model inference time {v:.2f}x the champion's > {t:.2f}x"))
    champion_rate = s.champion_error_rate
    if p.max_error_rate_increase is not None and champion_rate is not None:
        checks.append(
            (
                "error_rate_increase",
                s.error_rate - champion_rate,
                p.max_error_rate_increase,
                "error rate {v:.2%} above the champion's over the same window > {t:.2%}",
            )
        )
    if p.max_score_psi_vs_champion is not None:
        checks.append(
            (
                "score_psi_vs_champion",
                s.score_shift_vs_champion,
                p.max_score_psi_vs_champion,
                "score shift vs the champion PSI {v:.3f} > {t:.3f}",
            )
        )
    for name, value, limit, text in checks:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            skipped.append(name)
            continue
        details[name] = round(float(value), 6)
        if limit is not None and value > limit:
            breaches.append(text.format(v=value, t=limit))
    if s.score_shift_vs_champion is not None:
        details.setdefault("score_psi_vs_champion", round(s.score_shift_vs_champion, 6))
    details["not_measured"] = skipped
    if breaches:
        return Verdict("rollback", "hard_breach", breaches, details)
    return Verdict("passed", "early_window_passed", [f"{s.requests} requests, every measured signal within bounds"], details)


# -- promotion and rollback -------------------------------------------------------------------------
@dataclass(frozen=True)
class Realized:
    """Realized quality of champion and challenger on the same labelled requests."""

    rows: int
    metric: str
    champion: float | None
    challenger: float | None
    greater_is_better: bool = True


def decide_promotion(
    champion: str | None,
    challenger: str | None,
    version: str | None,
    realized: Realized | None,
    *,
    min_rows: int,
    tolerance: float,
    test: str = "none",
    comparison: PairedComparison | None = None,
) -> Verdict:
    """Promote the challenger (or the named version) unless production evidence says it loses.

    With ``test`` (``delong`` / ``bootstrap``, ``promotion.test``), a promotion also needs
    ``comparison``, the paired test of both versions' scores on the same labelled requests, to show
    a significant gain (``comparison.significant``): too few labels refuse (``awaiting_labels``,
    the challenger keeps serving until promoted again), a gain the test cannot tell from noise
    refuses (``gain_not_significant``). With ``none`` the tolerance rule alone decides (as before).
    """
    target = version or challenger
    if target is None:
        return Verdict("refused", "nothing_to_promote", ["there is no challenger to promote"])
    if target == champion:
        return Verdict("noop", "already_champion", [f"version {target} is already the champion"])
    if challenger is not None and target != challenger:
        return Verdict(
            "refused", "not_the_challenger", [f"version {target} is not the challenger (v{challenger}); only the challenger is promoted"]
        )
    if challenger is None:
        return Verdict("refused", "not_the_challenger", [f"version {target} is not serving as challenger"])
    if realized is None or realized.rows < min_rows or realized.champion is None or realized.challenger is None:
        rows = realized.rows if realized else 0
        if test != "none":
            return Verdict(
                "refused",
                "awaiting_labels",
                [f"{rows} labelled requests in the window (< {min_rows}): promotion.test {test} needs them; promote again once labelled"],
                {"labelled_rows": rows},
            )
        return Verdict(
            "promote",
            "promoted_without_labels",
            [f"{rows} labelled requests in the window (< {min_rows}): promoted on the early-window evidence alone"],
            {"labelled_rows": rows},
        )
    diff = realized.challenger - realized.champion
    if not realized.greater_is_better:
        diff = -diff
    details = {"labelled_rows": realized.rows, "metric": realized.metric, "champion": realized.champion, "challenger": realized.challenger}
    if diff < -tolerance:
        return Verdict(
            "refused",
            "loses_on_production_labels",
            [
                f"on {realized.rows} labelled requests {realized.metric} is {realized.challenger:.4f} for v{target} vs "
                f"{realized.champion:.4f} for champion v{champion} (tolerance {tolerance})"
            ],
            details,
        )
    if test != "none":
        return _significant_promotion(target, champion, realized, comparison, test, details)
    return Verdict(
        "promote",
        "wins_on_production_labels",
        [f"{realized.metric} {realized.challenger:.4f} vs champion {realized.champion:.4f} on {realized.rows} labelled requests"],
        details,
    )


def _significant_promotion(
    target: str, champion: str | None, realized: Realized, comparison: PairedComparison | None, test: str, details: dict[str, Any]
) -> Verdict:
    if comparison is None:
        return Verdict(
            "refused",
            "gain_not_significant",
            [f"promotion.test {test} could not be computed on the {realized.rows} labelled requests (e.g. one class only)"],
            details,
        )
    details = {**details, "test": comparison.to_dict()}
    gain = (
        f"{comparison.metric} {comparison.challenger:.4f} for v{target} vs {comparison.champion:.4f} for champion v{champion} "
        f"on {comparison.rows} labelled requests: gain {comparison.difference:+.4f} "
        f"({comparison.level:.0%} CI {comparison.ci_low:+.4f}..{comparison.ci_high:+.4f}), "
        f"p(gain <= {comparison.min_gain:g}) = {comparison.p_value_gain:.3g} ({comparison.method})"
    )
    if comparison.significant:
        return Verdict("promote", "significant_gain", [gain], details)
    why = f"{gain}: {comparison.reason.replace('_', ' ')} at alpha {comparison.alpha:g}"
    return Verdict("refused", "gain_not_significant", [why], details)


def window_days(window_hours: float) -> int:
    """A monitoring window (``monitoring.window_hours``) in whole days, rounded up."""
    return max(1, -(-int(window_hours) // 24))


def promotion_ready(labelled_rows: int, *, min_rows: int, waited_out: bool, test: str = "none") -> bool:
    """May an automatic promotion be decided now? Once ``min_rows`` labelled requests of the release
    are in (:func:`decide_promotion` judges it on them); without ``test``, also once the release
    served a monitoring window of traffic without them (``waited_out``: the early window decides)."""
    return labelled_rows >= min_rows or (waited_out and test == "none")


@dataclass(frozen=True)
class LedgerRow:
    alias: str
    action: str
    from_version: str | None
    to_version: str | None


def rollback_target(champion_history: list[LedgerRow], current: str | None, requested: str | None) -> Verdict:
    """Where a rollback of the champion goes, from the ledger (never "version minus one").

    Without ``requested``: the version that served before the current champion. A repeat of a
    rollback that just happened (the last champion change was a rollback *to* the current
    champion) changes nothing. With ``requested``: that version, if it has served as champion.
    """
    if current is None:
        return Verdict("refused", "no_champion", ["there is no champion to roll back"])
    served = [r.to_version for r in champion_history if r.to_version]
    if requested is not None:
        if requested == current:
            return Verdict("noop", "already_champion", [f"version {requested} is already the champion"])
        if requested not in served:
            return Verdict(
                "refused", "never_served", [f"version {requested} never served as champion; rollback only returns to a version that did"]
            )
        return Verdict("rollback", "rollback_to_requested", [f"champion v{current} -> v{requested} (requested)"], {"to": requested})
    last = champion_history[-1] if champion_history else None
    if last is not None and last.action == "rolled_back" and last.to_version == current:
        return Verdict("noop", "already_rolled_back", [f"v{current} is serving after a rollback; name a version to go further back"])
    previous = last.from_version if last is not None and last.to_version == current else None
    if previous is None:
        return Verdict("refused", "nothing_to_roll_back_to", [f"no version served as champion before v{current}"])
    return Verdict(
        "rollback", "rollback_to_previous", [f"champion v{current} -> v{previous}, the version that served before it"], {"to": previous}
    )


# -- what a promote-or-rollback run is asked to do ---------------------------------------------------
@dataclass(frozen=True)
class FinalRequest:
    """The action a promote-or-rollback run was asked for, by a person or by early-window events."""

    action: str  # promote | rollback
    version: str | None
    reason: str
    triggered: bool = False  # by ``early_window_passed`` events rather than by hand


def final_request(params: Mapping[str, Any], events: list[Mapping[str, Any]]) -> FinalRequest:
    """The run's params, unless ``early_window_passed`` events (their extras: ``events``) triggered
    it: then a promotion of the version the last of them names (else the version in the params)."""
    action, version = params.get("action") or "promote", params.get("version")
    reason = params.get("reason") or "manual"
    for extra in events:
        action, version, reason = "promote", extra.get("version") or version, "early window passed"
    return FinalRequest(str(action), str(version) if version else None, str(reason), triggered=bool(events))


def decide_final_request(request: FinalRequest, *, auto_promote: bool) -> Verdict:
    """``proceed`` to the promote-or-rollback decision, or ``noop`` when the early window triggered
    the run but the spec leaves promotion to a person (``promotion.auto_promote`` off)."""
    if request.triggered and not auto_promote:
        return Verdict("noop", "auto_promote_off", ["promotion.auto_promote is off: promote by hand"])
    if request.triggered:
        return Verdict("proceed", "auto_promote", [f"early window passed: {request.action} v{request.version or 'the challenger'}"])
    return Verdict("proceed", "requested", [f"{request.action} requested: {request.reason}"])


# -- retraining governance ----------------------------------------------------------------------
#: What may ask for a retrain.
DRIFT, DECAY, STALE, MANUAL = "drift_detected", "performance_degraded", "model_stale", "manual"


@dataclass(frozen=True)
class RetrainTrigger:
    cause: str  # drift_detected | performance_degraded | model_stale | manual
    key: str  # what the trigger is about, e.g. "drift_detected:v3" (dedupe)
    event_time: datetime  # end of the window that raised it (event time)
    #: For decay: the window's ``decay_test`` and/or ``trend_test`` verdicts (their ``to_dict()``).
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrainState:
    """What governance knows, from the ops store."""

    requests: list[tuple[datetime, str]]  # (event time, key) of accepted retrain requests, oldest first
    in_flight: bool  # an accepted request whose candidate has not reached a verdict yet
    new_rows: int  # validated labelled rows since the last training window ended
    pool_invalid: bool  # the last training attempt was refused because the pool failed validation
    #: End of the data the champion was trained and evaluated on (its holdout), event time.
    trained_until: datetime | None = None


@dataclass(frozen=True)
class RetrainPolicy:
    cooldown: timedelta
    max_retrains: int
    period: timedelta
    min_new_rows: int
    dedupe: timedelta
    retrain_on_drift: bool = True
    decay_evidence: str = "point"  # point | significant
    max_model_age: timedelta | None = None


def decide_freshness(trained_until: datetime | None, at: datetime, max_age: timedelta | None) -> Verdict:
    """Is the champion older than the spec allows at event time ``at``? ``stale`` / ``fresh``, or
    ``off`` (no limit) / ``unknown`` (no training window recorded)."""
    if max_age is None:
        return Verdict("off", "freshness_off", ["retraining.max_model_age_days is not set"])
    if trained_until is None:
        return Verdict("unknown", "model_age_unknown", ["the champion has no recorded training window"])
    age = at - trained_until
    details = {"trained_until": trained_until.isoformat(), "at": at.isoformat(), "age_days": round(age.total_seconds() / 86400, 3)}
    if age > max_age:
        return Verdict(
            "stale", "model_stale", [f"the champion's data ends {trained_until:%Y-%m-%d}: {age.days} days old > {max_age.days}"], details
        )
    return Verdict("fresh", "model_fresh", [f"the champion's data ends {trained_until:%Y-%m-%d}: {age.days} days old"], details)


def decay_is_real(evidence: Mapping[str, Any]) -> bool:
    """A window's decay is real when its bootstrap decay test says ``decayed`` or the trend test
    over the last windows is ``significant`` (``significance.decay_test`` / ``trend_test``)."""
    decay, trend = evidence.get("decay_test") or {}, evidence.get("trend_test") or {}
    return bool(decay.get("decayed")) or bool(trend.get("significant"))


def _cause_refusal(t: RetrainTrigger, s: RetrainState, p: RetrainPolicy, details: dict[str, Any]) -> Verdict | None:
    """Whether the spec counts this trigger as a reason to retrain at all (before governance)."""
    if t.cause == DRIFT and not p.retrain_on_drift:
        why = "retraining.retrain_on_drift is off: drift is reported, not retrained on"
        return Verdict("refused", "drift_not_a_trigger", [why], details)
    if t.cause == DECAY and p.decay_evidence == "significant" and not decay_is_real(t.evidence):
        tests = {k: t.evidence[k].get("reason") for k in ("decay_test", "trend_test") if isinstance(t.evidence.get(k), Mapping)}
        found = ", ".join(f"{k}: {v}" for k, v in tests.items()) or "no test result with the trigger"
        return Verdict("refused", "decay_not_significant", [f"realized decay is not significant ({found})"], details)
    if t.cause == STALE:
        fresh = decide_freshness(s.trained_until, t.event_time, p.max_model_age)
        details.update(fresh.details)
        if fresh.outcome != "stale":
            return Verdict("refused", fresh.reason_code, fresh.reasons, details)
    return None


def decide_retrain(t: RetrainTrigger, s: RetrainState, p: RetrainPolicy) -> Verdict:
    """Governance first: whether the spec counts the cause (drift only with ``retrain_on_drift``,
    decay only when real with ``decay_evidence: significant``, age only beyond ``max_model_age``),
    then every rule that can refuse a retrain, in a fixed order, else accept."""
    details: dict[str, Any] = {"cause": t.cause, "key": t.key, "event_time": t.event_time.isoformat(), "new_rows": s.new_rows}
    refusal = _cause_refusal(t, s, p, details)
    if refusal is not None:
        return refusal
    if s.pool_invalid:
        return Verdict("refused", "training_pool_invalid", ["the last training was refused: the training pool failed validation"], details)
    if s.in_flight:
        return Verdict("refused", "retrain_in_progress", ["a retrain is already running; this trigger joins it"], details)
    for at, key in reversed(s.requests):
        if key == t.key and timedelta(0) <= t.event_time - at < p.dedupe:
            return Verdict(
                "refused", "duplicate_trigger", [f"the same cause ({t.key}) already triggered a retrain at {at:%Y-%m-%d %H:%M}"], details
            )
    if s.requests:
        last = s.requests[-1][0]
        if t.event_time - last < p.cooldown:
            wait = p.cooldown - (t.event_time - last)
            return Verdict(
                "refused",
                "cooldown",
                [f"last retrain at {last:%Y-%m-%d}; cooldown of {p.cooldown.days} days has {wait.days} day(s) left"],
                details,
            )
    recent = [at for at, _ in s.requests if timedelta(0) <= t.event_time - at < p.period]
    if len(recent) >= p.max_retrains:
        return Verdict(
            "refused",
            "retrain_budget_exhausted",
            [f"{len(recent)} retrains in the last {p.period.days} days (max {p.max_retrains})"],
            details,
        )
    if s.new_rows < p.min_new_rows:
        return Verdict(
            "refused",
            "not_enough_new_rows",
            [f"{s.new_rows} new validated labelled rows since the last training window; {p.min_new_rows} needed"],
            details,
        )
    return Verdict("accepted", "retrain_requested", [f"{t.cause} ({t.key}): governance allows a retrain"], details)
