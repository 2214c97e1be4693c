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
scoring the same rows as ``steps.release.realized_quality`` does, once
``promotion.min_labelled_rows`` of them have arrived (or the window is waited out). A direct
deployment that breaches is rolled back to the version ``domain.policy.rollback_target`` names.
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
    rollback_target,
)
from include.mlops.domain.roles import CHAMPION

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
    st, p = loop.st, loop.spec.promotion
    ask = decide_final_request(FinalRequest("promote", rel.version, "early window passed", triggered=True), auto_promote=p.auto_promote)
    if ask.outcome != "proceed":
        st.record(now, "promotion", ask, version=rel.version)
        rel.kept = True
        return
    realized = realized_quality(loop, rel, now)
    if realized.rows < p.min_labelled_rows and not waited_out:
        return  # the release keeps serving while its labels arrive
    verdict = decide_promotion(st.champion, rel.version, None, realized, min_rows=p.min_labelled_rows, tolerance=p.tolerance)
    st.record(now, "promotion", verdict, version=rel.version, details=verdict.details)
    st.release = None
    if verdict.outcome == "promote":
        st.ledger.append(LedgerRow(CHAMPION, "promoted", st.champion, rel.version))
        st.champion = rel.version
        st.counts["promotions"] += 1
    else:
        st.counts["promotions_refused"] += 1


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


def realized_quality(loop: Loop, rel: Release, now: datetime) -> Realized:
    """Champion and new version scored on the same labelled rows of the release's traffic."""
    import numpy as np

    from include.mlops.domain.spec import LOWER_IS_BETTER
    from include.mlops.steps.training import classification_metrics

    metric = loop.spec.promotion.metric
    lo, hi, _, _ = release_rows(loop, rel, now.date() - timedelta(days=1))
    ready = np.flatnonzero(loop.h.labels_usable(lo, hi, now))
    if ready.size == 0:
        return Realized(0, metric, None, None, metric not in LOWER_IS_BETTER)
    y = loop.h.labels[lo:hi][ready]
    values = [classification_metrics(y, loop.scores(v, lo, hi)[ready]).get(metric) for v in (loop.st.champion, rel.version)]
    ok = all(v is not None and not np.isnan(v) for v in values)
    return Realized(int(ready.size), metric, values[0] if ok else None, values[1] if ok else None, metric not in LOWER_IS_BETTER)
