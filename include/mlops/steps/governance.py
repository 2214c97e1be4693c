"""Governed retraining: rules, never emotion.

A drift or decay event asks for a retrain; :func:`include.mlops.domain.policy.decide_retrain` answers from
the state kept in the ops store: a cooldown since the last retrain, a maximum number per period, a
minimum number of newly validated labelled rows since the last training window, dedupe of repeated
triggers for the same cause, a retrain already in flight, and a stop when the training pool itself
failed validation. Every answer is a decision; a refusal alerts once per reason (the alert's dedupe
key), an acceptance emits ``retrain_requested`` and the candidate goes through ``train_candidate``
and ``deploy_validated_model`` like any other. All times are event times (the window that raised
the trigger), so a replayed year is governed exactly as a real one.

Causes, and what the spec's ``retraining`` says about them: ``drift_detected`` (only with
``retrain_on_drift``), ``performance_degraded`` (with ``decay_evidence: significant`` only when the
window's bootstrap decay test against the holdout rows, computed here by :func:`realized_decay`, or
a trend test sent with the event says the decay is real), ``model_stale`` (the champion's data is
older than ``max_model_age_days``: :func:`freshness_trigger`, checked when an inference window
closes) and ``manual`` (a person's request with a reason: :func:`manual_trigger`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.domain.clock import utcnow
from include.mlops.domain.policy import (
    DECAY,
    MANUAL,
    STALE,
    RetrainPolicy,
    RetrainState,
    RetrainTrigger,
    Verdict,
    decide_freshness,
    decide_retrain,
)
from include.mlops.domain.roles import CHALLENGER, CHAMPION, SHADOW

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.spec import Spec
    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)

REQUESTS_KEY = "retrain_requests"
#: Refusals that are the rules working as meant: an info alert, not a warning.
QUIET_REFUSALS = ("duplicate_trigger", "retrain_in_progress", "drift_not_a_trigger", "decay_not_significant")
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
        trained_until=since,
    )


def policy(rt: Runtime) -> RetrainPolicy:
    r = rt.spec.retraining
    return RetrainPolicy(
        cooldown=timedelta(days=r.cooldown_days),
        max_retrains=r.max_retrains,
        period=timedelta(days=r.period_days),
        min_new_rows=r.min_new_rows,
        dedupe=timedelta(hours=r.dedupe_hours),
        retrain_on_drift=r.retrain_on_drift,
        decay_evidence=r.decay_evidence,
        max_model_age=timedelta(days=r.max_model_age_days) if r.max_model_age_days is not None else None,
    )


def trigger_from(extra: dict[str, Any], cause: str) -> RetrainTrigger:
    end = extra.get("window_end") or utcnow().isoformat()
    evidence = {k: extra[k] for k in ("decay_test", "trend_test") if isinstance(extra.get(k), dict)}
    return RetrainTrigger(
        cause=cause, key=f"{cause}:v{extra.get('version', '?')}", event_time=datetime.fromisoformat(str(end)), evidence=evidence
    )


def realized_decay(rt: Runtime, extra: dict[str, Any]) -> dict[str, Any] | None:
    """The bootstrap decay test (``significance.decay_test``) of the window's labelled requests of
    the version (``monitoring.quality_days`` before the window's end, as monitoring's realized
    quality) against its holdout rows, with ``monitoring.max_quality_drop``; None without the data."""
    from include.mlops.domain.tasks import truth_column
    from include.mlops.steps.release import holdout_predictions

    version, end = extra.get("version"), extra.get("window_end")
    if not version or not end:
        return None
    end_dt = datetime.fromisoformat(str(end))
    rows = rt.store.labelled_inference(
        rt.model_name, ["entity_id", "score"], routes=[CHAMPION, CHALLENGER, SHADOW], version=str(version),
        event_from=end_dt - timedelta(days=rt.spec.monitoring.quality_days), event_to=end_dt, truth=truth_column(rt.spec.task),
    )  # fmt: skip
    seen: dict[Any, tuple[float, float]] = {e: (float(sc), float(y)) for e, sc, y in rows}  # one row per entity
    if len(seen) < rt.spec.monitoring.min_labelled_rows:
        return None
    labels, scores = [y for _, y in seen.values()], [sc for sc, _ in seen.values()]
    return window_decay_test(rt.spec, labels, scores, holdout_predictions(rt, str(version)), f"v{version} on the window ending {end}")


def window_decay_test(
    spec: Spec, labels: Any, scores: Any, holdout: pd.DataFrame | None, what: str = "the window"
) -> dict[str, Any] | None:
    """``significance.decay_test`` of a window's labelled scores against the version's holdout rows
    (``monitoring.max_quality_drop``, ``promotion.metric``); None with too few labelled rows
    (``monitoring.min_labelled_rows``), no holdout, or one class only. A regressor's (``mae``...)
    decays by its error rising. The backtest calls it too."""
    from include.mlops.domain.significance import Sample, decay_test
    from include.mlops.domain.tasks import labels as task_labels
    from include.mlops.steps.paired import TEST_METRICS

    if len(labels) < spec.monitoring.min_labelled_rows or holdout is None or not len(holdout):
        return None
    baseline = Sample(task_labels(spec.task, holdout[spec.target.name]), holdout["score"].to_numpy())
    try:
        verdict = decay_test(
            labels, scores, baseline, metric=TEST_METRICS.get(spec.promotion.metric, "roc_auc"),  # type: ignore[arg-type]
            max_drop=spec.monitoring.max_quality_drop, seed=spec.training.random_state,
        )  # fmt: skip
    except ValueError as exc:  # one class only in the window
        log.warning("no decay test for %s: %s", what, exc)
        return None
    return verdict.to_dict()


def event_trigger(rt: Runtime, extra: dict[str, Any], cause: str) -> RetrainTrigger:
    """The trigger of one asset event; a decay judged on its significance gets its decay test here
    when the event did not bring one."""
    if cause == DECAY and rt.spec.retraining.decay_evidence == "significant" and "decay_test" not in extra:
        test = realized_decay(rt, extra)
        extra = {**extra, "decay_test": test} if test else extra
    return trigger_from(extra, cause)


def manual_trigger(reason: str, run_id: str, event_time: datetime) -> RetrainTrigger:
    """A person's retrain request: its own key (never a duplicate of another run's), at ``event_time``."""
    return RetrainTrigger(cause=MANUAL, key=f"{MANUAL}:{run_id}", event_time=event_time, evidence={"reason": reason})


def latest_event_time(rt: Runtime) -> datetime:
    """Where event time stands: the end of the latest day of served traffic (else the wall clock)."""
    from include.mlops.steps.monitoring.export import latest_event_day

    day = latest_event_day(rt)
    return datetime.combine(day, datetime.min.time()) + timedelta(days=1) if day else utcnow()


def freshness_trigger(rt: Runtime, window_end: datetime) -> tuple[RetrainTrigger | None, Verdict]:
    """A ``model_stale`` trigger when the champion's data is older than ``max_model_age_days`` at the
    end of a closed window (else None, with the freshness verdict to log)."""
    r = rt.spec.retraining
    max_age = timedelta(days=r.max_model_age_days) if r.max_model_age_days is not None else None
    if max_age is None:
        return None, decide_freshness(None, window_end, None)
    fresh = decide_freshness(_last_window_end(rt), window_end, max_age)
    if fresh.outcome != "stale":
        return None, fresh
    from include.mlops.adapters.registry import aliases, mlflow_client

    champion = aliases(mlflow_client(rt.settings.mlflow_tracking_uri), rt.model_name).get(CHAMPION)
    return RetrainTrigger(cause=STALE, key=f"{STALE}:v{champion}", event_time=window_end), fresh


def govern(
    rt: Runtime, trigger: RetrainTrigger, reasons: list[str], *, dag_id: str | None, run_id: str | None
) -> tuple[Verdict, dict[str, Any]]:
    """Decide on one trigger, record the decision, alert once on a refusal; returns the verdict and,
    when accepted, the extra of the ``retrain_requested`` event."""
    from include.mlops.adapters.alerts import raise_alert

    st = state(rt)
    verdict = decide_retrain(trigger, st, policy(rt))
    inputs = {
        "trigger": {
            "cause": trigger.cause,
            "key": trigger.key,
            "event_time": trigger.event_time.isoformat(),
            "reasons": reasons,
            "evidence": dict(trigger.evidence),
        },
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
            severity="info" if verdict.reason_code in QUIET_REFUSALS else "warning",
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


def govern_run(
    rt: Runtime, events: list[tuple[str, dict[str, Any]]], params: dict[str, Any], *, dag_id: str | None, run_id: str | None
) -> dict[str, Any]:
    """Every trigger of one ``retrain_on_drift`` run, judged: its asset events (``(asset, extra)``),
    or, for a run started by a person (no events), a manual request with the ``reason`` param.
    Returns ``{"verdicts", "request", "summary"}``: the accepted request (or None) and one line per
    verdict saying what was decided and why (the run's note and log)."""
    verdicts: list[dict[str, Any]] = []
    accepted: dict[str, Any] | None = None
    if not events:
        reason = str(params.get("reason") or "").strip()
        if not reason:
            why = "a manual retrain request needs a reason (the reason param): nothing was requested"
            verdicts.append(Verdict("refused", "reason_required", [why]).to_dict())
        else:
            at = params.get("event_time")
            when = datetime.fromisoformat(str(at)) if at else latest_event_time(rt)
            verdict, request = govern(
                rt, manual_trigger(reason, run_id or "manual", when), [f"manual: {reason}"], dag_id=dag_id, run_id=run_id
            )
            verdicts.append(verdict.to_dict())
            accepted = request or None
    for asset, extra in events:  # each trigger judged on its own, named by its asset
        if asset == "inference_window_closed":
            end = extra.get("window_end")
            if not end:
                continue
            trigger, fresh = freshness_trigger(rt, datetime.fromisoformat(str(end)))
            if trigger is None:
                log.info("window ending %s: %s", end, "; ".join(fresh.reasons))
                continue
            verdict, request = govern(rt, trigger, fresh.reasons, dag_id=dag_id, run_id=run_id)
        else:
            verdict, request = govern(rt, event_trigger(rt, extra, asset), list(extra.get("reasons", [])), dag_id=dag_id, run_id=run_id)
        verdicts.append(verdict.to_dict())
        accepted = accepted or (request or None)
    lines = [f"{v['outcome']} ({v['reason_code']}): {'; '.join(v['reasons'])}" for v in verdicts] or ["no trigger to judge"]
    head = f"retrain requested ({accepted['request_id']})" if accepted else "no retrain"
    return {"verdicts": verdicts, "request": accepted, "summary": f"{head}. " + " | ".join(lines)}


def note_run(rt: Runtime, dag_id: str, run_id: str, text: str) -> bool:
    """Set the run's note (shown on the run in the Airflow UI) through Airflow's REST API. The Task
    SDK of Airflow 3 lets a task read its run's note but not write it, so this goes through the API
    server as the CLI tools do; best effort: False (logged) when the API cannot be reached."""
    from urllib.parse import quote

    from include.mlops.adapters.airflow_api import AirflowClient

    try:
        client = AirflowClient.for_home(rt.settings.airflow_url, rt.settings.airflow_home)
        client.timeout = 10.0
        client.request(
            "PATCH", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}", params={"update_mask": "note"}, json={"note": text[:1000]}
        )
    except Exception as exc:  # the decision is recorded either way; the note is a convenience
        log.warning("could not set the run's note (%s: %s); the decision is in the task log and XCom", type(exc).__name__, exc)
        return False
    return True
