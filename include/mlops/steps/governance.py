"""Governed retraining: rules, never emotion.

A drift or decay event asks for a retrain; :func:`include.mlops.domain.policy.decide_retrain` answers from
the state kept in the ops store: a cooldown since the last retrain, a maximum number per period, a
minimum number of newly validated labelled rows since the last training window, dedupe of repeated
triggers for the same cause, a retrain already in flight, and a stop when the training pool itself
failed validation. Every answer is a decision; a refusal alerts once per reason (the alert's dedupe
key), an acceptance emits ``retrain_requested`` and the candidate goes through ``train_candidate``
and ``deploy_validated_model`` like any other. All times are event times (the window that raised
the trigger), so a replayed year is governed exactly as a real one.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.domain.clock import utcnow
from include.mlops.domain.policy import RetrainPolicy, RetrainState, RetrainTrigger, Verdict, decide_retrain
from include.mlops.domain.roles import CHAMPION

if TYPE_CHECKING:
    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)

REQUESTS_KEY = "retrain_requests"
#: A request with no verdict after this long (wall time) no longer blocks new ones.
IN_FLIGHT_TIMEOUT = timedelta(hours=6)


def _requests(rt: Runtime) -> list[dict[str, Any]]:
    value = rt.store.get_state(rt.model_name, REQUESTS_KEY, [])
    return list(value) if isinstance(value, list) else []


def _in_flight(rt: Runtime, last: dict[str, Any] | None) -> bool:
    """The last accepted request has not reached a training refusal or a deployment verdict yet."""
    if not last:
        return False
    at = datetime.fromisoformat(last["at_wall"])
    if utcnow() - at > IN_FLIGHT_TIMEOUT:
        return False
    return not rt.store.decided_since(rt.model_name, at, {"training": ["refused"], "deployment": ["deployed", "refused"]})


def _pool_invalid(rt: Runtime) -> bool:
    """The last training attempt failed the pool's GX gate and no batch has been accepted since."""
    last = rt.store.last_decision(rt.model_name, "training")
    if not last or last["outcome"] != "refused" or last["reason_code"] != "training_set_invalid":
        return False
    return not rt.store.count_accepted_batches(rt.model_name, decided_after=last["created_at"])


def _last_window_end(rt: Runtime) -> datetime | None:
    """End of the data the current champion was trained and evaluated on (its holdout end)."""
    from include.mlops.adapters.registry import aliases, mlflow_client

    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    champion = aliases(client, rt.model_name).get(CHAMPION)
    if champion is None:
        return None
    tag = client.get_model_version(rt.model_name, champion).tags.get("mlops.window")
    if not tag:
        return None
    return datetime.fromisoformat(json.loads(tag)["holdout_end"]) + timedelta(days=1)


def state(rt: Runtime) -> RetrainState:
    reqs = _requests(rt)
    since = _last_window_end(rt)
    new_rows = rt.store.count_ground_truth(rt.model_name, event_from=since)
    return RetrainState(
        requests=[(datetime.fromisoformat(r["at_event"]), str(r["key"])) for r in reqs],
        in_flight=_in_flight(rt, reqs[-1] if reqs else None),
        new_rows=new_rows,
        pool_invalid=_pool_invalid(rt),
    )


def policy(rt: Runtime) -> RetrainPolicy:
    r = rt.spec.retraining
    return RetrainPolicy(
        cooldown=timedelta(days=r.cooldown_days),
        max_retrains=r.max_retrains,
        period=timedelta(days=r.period_days),
        min_new_rows=r.min_new_rows,
        dedupe=timedelta(hours=r.dedupe_hours),
    )


def trigger_from(extra: dict[str, Any], cause: str) -> RetrainTrigger:
    end = extra.get("window_end") or utcnow().isoformat()
    return RetrainTrigger(cause=cause, key=f"{cause}:v{extra.get('version', '?')}", event_time=datetime.fromisoformat(str(end)))


def govern(
    rt: Runtime, trigger: RetrainTrigger, reasons: list[str], *, dag_id: str | None, run_id: str | None
) -> tuple[Verdict, dict[str, Any]]:
    """Decide on one trigger, record the decision, alert once on a refusal; returns the verdict and,
    when accepted, the extra of the ``retrain_requested`` event."""
    from include.mlops.adapters.alerts import raise_alert

    st = state(rt)
    verdict = decide_retrain(trigger, st, policy(rt))
    inputs = {
        "trigger": {"cause": trigger.cause, "key": trigger.key, "event_time": trigger.event_time.isoformat(), "reasons": reasons},
        "state": {
            "requests": [(a.isoformat(), k) for a, k in st.requests],
            "in_flight": st.in_flight,
            "new_rows": st.new_rows,
            "pool_invalid": st.pool_invalid,
        },
    }
    rt.store.record_decision(
        rt.model_name, "governance", verdict.outcome, verdict.reason_code, subject=trigger.key, reasons=verdict.reasons + reasons,
        inputs=inputs, dag_id=dag_id, run_id=run_id,
    )  # fmt: skip
    if verdict.outcome != "accepted":
        raise_alert(
            rt.store,
            rt.model_name,
            severity="info" if verdict.reason_code in ("duplicate_trigger", "retrain_in_progress") else "warning",
            kind="retrain_refused",
            dedupe_key=f"retrain_refused:{verdict.reason_code}",
            message=f"retrain refused ({verdict.reason_code}): {'; '.join(verdict.reasons)}",
            payload=inputs,
        )
        return verdict, {}
    reqs = _requests(rt)
    request_id = f"rr-{len(reqs) + 1:04d}-{trigger.event_time:%Y%m%d}"
    reqs.append({"id": request_id, "at_event": trigger.event_time.isoformat(), "at_wall": utcnow().isoformat(), "key": trigger.key})
    rt.store.set_state(rt.model_name, REQUESTS_KEY, reqs)
    reason = f"{trigger.cause} ({trigger.key}, window ending {trigger.event_time:%Y-%m-%d}): " + "; ".join(reasons)[:400]
    return verdict, {"reason": reason, "request_id": request_id, "cause": trigger.cause}
