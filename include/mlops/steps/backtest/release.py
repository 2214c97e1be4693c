"""A release under way, judged at the end of each day of its traffic.

The early window (``domain.policy.decide_early_window`` with ``steps.release.window_policy``) lasts
until the new version has answered ``early_window.min_requests`` rows (canary: its sticky share;
shadow: every row; direct: every row). It is *waited out* after one monitoring window of traffic
(``monitoring.window_hours`` in days: ``max_minutes`` is wall time and has no meaning in event
time), and ``early_window.on_inconclusive`` then decides inside ``decide_early_window`` (keep,
extend once by another window, or roll back). Measured: requests, the champion's requests, the PSI of the new version's scores against its
holdout scores and against the champion's live scores (``domain.drift``'s PSI). Not measured (no
servers here): errors, latency, CPU, memory, rejected requests.

A canary or shadow that passed is then decided (``domain.policy.decide_final_request`` with
``promotion.auto_promote``, ``decide_promotion``) on the release's labelled rows, both versions
scoring the same rows as ``steps.paired`` does, once ``promotion.min_labelled_rows`` of them have
arrived (or the window is waited out, without ``promotion.test``); with ``promotion.test`` the
paired test (``steps.paired.compare``) must show a real gain. With ``promotion.bake_days`` the
previous champion then scores in shadow until the period's labels are in, and ``decide_bake``
rolls the promotion back when it is significantly worse. A direct deployment that breaches is
rolled back to the version ``domain.policy.rollback_target`` names.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.domain.policy import (
    FinalRequest,
    LedgerRow,
    Realized,
    Verdict,
    WindowSignals,
    decide_early_window,
    decide_final_request,
    decide_promotion,
    promotion_ready,
    rollback_target,
)
from include.mlops.domain.roles import CHAMPION
from include.mlops.steps.backtest.state import Bake
from include.mlops.steps.paired import PairedScores

if TYPE_CHECKING:
    import numpy as np

    from include.mlops.steps.backtest.loop import Loop
    from include.mlops.steps.backtest.state import Release


def judge_release(loop: Loop, day: date, now: datetime) -> None:
    """Judge the release at the end of ``day``: early window, then promotion or rollback."""
    from include.mlops.steps.backtest.loop import window_days
    from include.mlops.steps.release import window_policy

    st, spec = loop.st, loop.spec
    rel = st.release
    if rel is None or rel.kept or day < rel.since:
        return
    days_in = (day - rel.since).days + 1
    waited_out = days_in >= window_days(spec) * (2 if rel.extended else 1)
    if rel.passed is None:
        verdict = decide_early_window(signals(loop, rel, day), window_policy(loop.rt), waited_out=waited_out, extended=rel.extended)
        if verdict.outcome == "wait":
            return
        st.record(now, "early_window", verdict, version=rel.version, days=days_in, details=verdict.details)
        if verdict.outcome in ("inconclusive", "extend") or verdict.reason_code.startswith("inconclusive"):
            st.counts["early_window_inconclusive"] += 1
        if verdict.outcome == "extend":  # early_window.on_inconclusive: extend, once
            rel.extended = True
            return
        if verdict.outcome == "inconclusive":  # on_inconclusive: keep: a person decides, the release stays
            rel.kept = True
            return
        if verdict.outcome == "rollback":
            roll_back(loop, now, verdict)
            return
        rel.passed = verdict
        if rel.mode == "direct":
            st.release = None
            return
    promote(loop, rel, now, waited_out=waited_out)


def promote(loop: Loop, rel: Release, now: datetime, *, waited_out: bool) -> None:
    """``steps.release.decide_final`` in event time: both versions score the release's labelled
    rows; with ``promotion.test`` the paired test (``steps.paired.compare``) must show the gain;
    with ``promotion.bake_days`` the previous champion then bakes in shadow (:func:`judge_bake`)."""
    from include.mlops.steps.paired import compare

    st, p = loop.st, loop.spec.promotion
    ask = decide_final_request(FinalRequest("promote", rel.version, "early window passed", triggered=True), auto_promote=p.auto_promote)
    if ask.outcome != "proceed":
        st.record(now, "promotion", ask, version=rel.version)
        rel.kept = True
        return
    paired = paired_scores(loop, rel.first_row, rel.since, now, (st.champion, rel.version))
    realized = realized_of(loop, paired, st.champion, rel.version)
    if not promotion_ready(realized.rows, min_rows=p.min_labelled_rows, waited_out=waited_out, test=p.test):
        return  # the release keeps serving while its labels arrive (promote_or_rollback's await_labels)
    comparison = compare(loop.rt, paired, st.champion, rel.version, min_gain=p.min_gain)
    verdict = decide_promotion(
        st.champion, rel.version, None, realized, min_rows=p.min_labelled_rows, tolerance=p.tolerance, test=p.test, comparison=comparison
    )
    st.record(now, "promotion", verdict, version=rel.version, details=verdict.details)
    st.release = None
    if verdict.outcome != "promote":
        st.counts["promotions_refused"] += 1
        return
    previous = st.champion
    st.ledger.append(LedgerRow(CHAMPION, "promoted", previous, rel.version))
    st.champion = rel.version
    st.counts["promotions"] += 1
    if p.bake_days > 0:
        day = now.date()
        st.bake = Bake(rel.version, previous, day, loop.h.span(day, day)[0])


def judge_bake(loop: Loop, day: date, now: datetime) -> None:
    """``steps.bake.bake_verdict`` / ``act_bake`` in event time: once the labels of the requests served
    since the promotion cover ``bake_days``, the previous champion (in shadow) against the promoted
    one on the same rows; ``decide_bake`` rolls back or ends the bake."""
    from include.mlops.domain.bake_policy import BakeState, decide_bake
    from include.mlops.steps.paired import compare

    st, p = loop.st, loop.spec.promotion
    bake = st.bake
    if bake is None or day < bake.since:
        return
    paired = paired_scores(loop, bake.first_row, bake.since, now, (bake.promoted, bake.previous))
    covered = (paired.last_event - paired.first_event) if paired.first_event and paired.last_event else timedelta(0)
    state = BakeState(bake.promoted, bake.previous, st.champion, st.challenger, paired.rows, covered)
    if covered >= timedelta(days=p.bake_days) and paired.rows >= p.min_labelled_rows:
        comparison = compare(loop.rt, paired, bake.promoted, bake.previous, min_gain=0.0)
        state = BakeState(bake.promoted, bake.previous, st.champion, st.challenger, paired.rows, covered, comparison)
    verdict = decide_bake(state, bake=timedelta(days=p.bake_days), min_rows=p.min_labelled_rows)
    if verdict.outcome == "wait":
        return
    st.record(now, "bake", verdict, version=bake.promoted, details=verdict.details)
    st.bake = None
    if verdict.outcome == "rollback":
        st.ledger.append(LedgerRow(CHAMPION, "rolled_back", bake.promoted, bake.previous))
        st.champion = bake.previous
        st.counts["bake_rollbacks"] += 1
        st.alert(f"bake_rollback:{bake.promoted}")


def roll_back(loop: Loop, now: datetime, verdict: Verdict) -> None:
    """Undo the release: remove the challenger, or restore the champion ``rollback_target`` names."""
    st = loop.st
    rel = st.release
    st.release = None
    if rel is None:
        return
    if rel.mode != "direct":
        st.counts["release_rollbacks"] += 1
        return
    target = rollback_target(st.ledger, st.champion, None)
    st.record(now, "rollback", target, version=rel.version, because=verdict.reason_code)
    if target.outcome == "rollback":
        st.ledger.append(LedgerRow(CHAMPION, "rolled_back", st.champion, str(target.details["to"])))
        st.champion = str(target.details["to"])
        st.counts["champion_rollbacks"] += 1


def release_rows(loop: Loop, rel: Release, day: date) -> tuple[int, int, np.ndarray, np.ndarray]:
    """The release's traffic so far: row span, and masks of the rows the new version answered
    (or scored in shadow) and those the champion answered."""
    lo, hi = rel.first_row, loop.h.span(rel.since, day)[1]
    v = int(rel.version)
    mine = (loop.st.served[lo:hi] == v) | (loop.st.shadow[lo:hi] == v)
    champ = loop.st.served[lo:hi] == int(loop.st.champion)
    return lo, hi, mine, champ


def signals(loop: Loop, rel: Release, day: date) -> WindowSignals:
    import numpy as np

    lo, hi, mine, champ = release_rows(loop, rel, day)
    new = loop.scores(rel.version, lo, hi)[mine]
    holdout = loop.st.versions[rel.version].reference.holdout["score"].to_numpy()
    vs_champion = None
    if rel.mode != "direct" and champ.any():
        vs_champion = score_psi(loop, loop.scores(loop.st.champion, lo, hi)[champ], new)
    return WindowSignals(
        requests=int(mine.sum()),
        errors=0,
        p95_latency_ms=None,
        champion_requests=int(champ.sum()) if rel.mode != "direct" else 0,
        score_shift_vs_holdout=score_psi(loop, holdout, new) if new.size else None,
        score_shift_vs_champion=vs_champion if vs_champion is None or np.isfinite(vs_champion) else None,
    )


def score_psi(loop: Loop, reference: Any, current: Any) -> float | None:
    """PSI of ``current`` scores against ``reference`` scores (``domain.drift``'s PSI)."""
    import pandas as pd

    from include.mlops.domain import drift
    from include.mlops.domain.drift_statistics import numeric_stats

    if len(reference) == 0 or len(current) == 0:
        return None
    stats = {"format": drift.STATS_FORMAT, "rows": len(reference), "columns": {"score": numeric_stats(pd.Series(reference, dtype=float))}}
    r = drift.column_drift(pd.DataFrame({"score": current}), stats, loop.spec, {"score": {"method": "psi"}}, columns=["score"], workers=1)
    return r[0].score


def paired_scores(loop: Loop, first_row: int, since: date, now: datetime, versions: tuple[str, ...]) -> PairedScores:
    """``steps.paired.paired_scores`` in event time: the rows served from ``first_row`` (day ``since``)
    to the day before ``now`` whose labels have arrived by ``now``, scored by every version."""
    import numpy as np

    lo, hi = first_row, loop.h.span(since, now.date() - timedelta(days=1))[1]
    ready = np.flatnonzero(loop.h.labels_usable(lo, hi, now)) if hi > lo else np.zeros(0, dtype=int)
    if ready.size == 0:
        return PairedScores(np.zeros(0, dtype=int), {v: np.zeros(0) for v in versions})
    times = loop.h.frame[loop.spec.time_column].to_numpy()[lo:hi][ready]
    scores = {v: loop.scores(v, lo, hi)[ready] for v in versions}
    first, last = (t.astype("datetime64[us]").astype(datetime) for t in (times.min(), times.max()))
    return PairedScores(loop.h.labels[lo:hi][ready], scores, first, last)


def realized_of(loop: Loop, paired: PairedScores, champion: str, challenger: str) -> Realized:
    """Champion and new version on the same labelled rows (``steps.paired.realized_quality``)."""
    import numpy as np

    from include.mlops.domain.tasks import evaluate
    from include.mlops.domain.tasks import metric as task_metric

    metric = loop.spec.promotion.metric
    higher = task_metric(loop.spec.task, metric).higher_is_better
    if not paired.rows:
        return Realized(0, metric, None, None, higher)
    values = [evaluate(loop.spec.task, paired.labels, paired.scores[v]).get(metric) for v in (champion, challenger)]
    ok = all(v is not None and not np.isnan(v) for v in values)
    return Realized(paired.rows, metric, values[0] if ok else None, values[1] if ok else None, higher)
