"""The bake period after a promotion (``promotion.bake_days`` > 0).

A promotion with a bake period leaves the previous champion as the challenger in shadow mode (it
scores every request and answers none: :func:`include.mlops.steps.release.act_final`). When the
labels of the requests served since the promotion cover the period in event time,
:func:`bake_verdict` compares the two versions on those labelled requests (their paired scores:
:mod:`include.mlops.steps.paired`) with the spec's ``promotion.test``, and
:func:`include.mlops.domain.bake_policy.decide_bake` decides; :func:`act_bake` rolls back to the
previous champion (decision ``bake``, critical alert) or removes the shadow. It runs in
``promote_or_rollback`` after ``promote``: a sensor in reschedule mode holds no worker slot while
the labels arrive.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.domain.bake_policy import BakeState, decide_bake
from include.mlops.domain.clock import utcnow
from include.mlops.domain.policy import Verdict
from include.mlops.domain.roles import CHALLENGER, CHAMPION
from include.mlops.steps.paired import compare, paired_scores

if TYPE_CHECKING:
    from include.mlops.runtime import Runtime


def bake_verdict(rt: Runtime, bake: dict[str, Any]) -> tuple[Verdict, dict[str, Any]]:
    """Where the bake period of a promotion stands (``bake``: the ``bake`` of the promote result):
    the aliases now, and, once the labels cover the period, the paired test of the previous
    champion (as challenger) against the promoted version on the requests served since."""
    from include.mlops.adapters.registry import aliases, mlflow_client

    current = aliases(mlflow_client(rt.settings.mlflow_tracking_uri), rt.model_name)
    promoted, previous = str(bake["promoted"]), str(bake["previous"])
    champion, challenger = current.get(CHAMPION), current.get(CHALLENGER)
    days, min_rows = timedelta(days=float(bake["days"])), rt.spec.promotion.min_labelled_rows
    inputs: dict[str, Any] = {"bake": bake, "champion": champion, "challenger": challenger}
    state = BakeState(promoted, previous, champion, challenger, 0, timedelta(0))
    if champion == promoted and challenger == previous:
        since = datetime.fromisoformat(str(bake["since"]))
        # cheap first: how far the labels reach; both models score the rows only once they cover the period
        times = [t for (t, _) in rt.store.labelled_inference(rt.model_name, ["event_time"], routes=[CHAMPION], created_from=since)]
        covered = max(times) - min(times) if times else timedelta(0)
        state = BakeState(promoted, previous, champion, challenger, len(times), covered)
        if covered >= days and len(times) >= min_rows:
            paired = paired_scores(rt, since, (promoted, previous), routes=(CHAMPION,))
            comparison = compare(rt, paired, promoted, previous, min_gain=0.0)
            state = BakeState(promoted, previous, champion, challenger, paired.rows, covered, comparison)
        inputs["labelled_rows"], inputs["covered"] = state.labelled_rows, str(covered)
    return decide_bake(state, bake=days, min_rows=min_rows), inputs


def act_bake(rt: Runtime, verdict: Verdict, inputs: dict[str, Any], *, dag_id: str | None, run_id: str | None) -> dict[str, Any]:
    """The end of a bake period: roll back to the previous champion, or remove its shadow; a decision
    (kind ``bake``) and, on a rollback, a critical alert."""
    from include.mlops.adapters.alerts import raise_alert
    from include.mlops.adapters.registry import AliasConflict, alias_lock, mlflow_client
    from include.mlops.steps.alias_moves import FinalMove
    from include.mlops.steps.deploy import notify_serving

    bake = inputs["bake"]
    promoted, previous = str(bake["promoted"]), str(bake["previous"])
    actor = f"{dag_id}/{run_id}" if dag_id else "bake"
    key = run_id or f"manual-{utcnow().isoformat()}"
    text = "; ".join(verdict.reasons)
    move = FinalMove(rt, mlflow_client(rt.settings.mlflow_tracking_uri), actor, key, f"bake period of v{promoted}: {text}", dag_id, run_id)
    result: dict[str, Any] = {"outcome": verdict.outcome, "reason_code": verdict.reason_code, "reasons": verdict.reasons}
    try:
        with alias_lock(rt.store, rt.model_name):  # each change compares-and-sets on the bake's versions
            if verdict.outcome == "rollback":
                move.set(CHAMPION, previous, strategy="rollback", op=f"bake:{promoted}:rollback", action="rolled_back", expected=promoted)
                move.remove(
                    CHALLENGER,
                    reason=f"v{previous} is champion again",
                    op=f"bake:{promoted}:clear",
                    action="rolled_back",
                    expected=previous,
                )
                result.update(version=previous, rolled_back_from=promoted)
            elif verdict.outcome == "end":
                why = f"bake period of v{promoted} over: {text}"
                move.remove(CHALLENGER, reason=why, op=f"bake:{promoted}:end", action="removed", expected=previous)
                result.update(version=promoted, shadow_removed=previous)
    except AliasConflict as exc:
        verdict = Verdict("refused", exc.reason_code, [f"not carried out ({verdict.outcome}): {exc}"], verdict.details)
        result = {"outcome": verdict.outcome, "reason_code": verdict.reason_code, "reasons": verdict.reasons}
    rt.store.record_decision(
        rt.model_name,
        "bake",
        verdict.outcome,
        verdict.reason_code,
        subject=f"version {promoted}",
        version=promoted,
        reasons=verdict.reasons,
        inputs={**inputs, **verdict.details},
        dag_id=dag_id,
        run_id=run_id,
    )
    if verdict.outcome == "rollback":
        raise_alert(
            rt.store,
            rt.model_name,
            severity="critical",
            kind="model_rolled_back",
            dedupe_key=f"bake_rollback:{promoted}",
            message=f"v{promoted} rolled back after its bake period: {text}",
            payload=result,
        )
    if verdict.outcome in ("rollback", "end"):
        notify_serving(rt)
    return result
