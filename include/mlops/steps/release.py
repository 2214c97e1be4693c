"""After a deployment: watch the early window, then promote or roll back.

The early window compares the new version with the champion over the same period, from the
inference log (requests, errors, p95 latency, each version's own inference time, scores,
schema-rejected requests) and the serving API's ``/metrics`` (CPU and memory of the serving
process, :mod:`include.mlops.steps.monitoring.resources`). Evidently measures the output shift:
the new version's live scores and predicted classes against its own holdout predictions, and
against the champion's live output; its HTML report is kept with the decision.

The verdict comes from :func:`include.mlops.domain.policy.decide_early_window`; a hard breach rolls back
at once (challenger alias removed, or the champion restored from the ledger). Promotion and manual
rollback use :func:`~include.mlops.domain.policy.decide_promotion` and
:func:`~include.mlops.domain.policy.rollback_target`, with realized quality measured by scoring the same
labelled requests with both versions' registry artifacts.

Both versions' scores of the same labelled requests come from :mod:`include.mlops.steps.paired`
(``promotion.test``); with ``promotion.bake_days`` a promotion leaves the previous champion in shadow
for :mod:`include.mlops.steps.bake` to judge.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.domain.clock import utcnow
from include.mlops.domain.policy import (
    FinalRequest,
    LedgerRow,
    Verdict,
    WindowPolicy,
    WindowSignals,
    decide_early_window,
    promotion_ready,
    window_days,
)
from include.mlops.domain.roles import CANARY, CHALLENGER, CHAMPION, SHADOW
from include.mlops.steps.alias_moves import FinalMove, move_aliases
from include.mlops.steps.monitoring.resources import cpu_use, model_p95_ms, serving_process  # the DAG reads it from here

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)

OK_STATUSES = ("ok", "error")


@dataclass(frozen=True)
class Release:
    """One deployment being watched: which version, how it serves, since when (naive UTC)."""

    model: str
    version: str
    strategy: str  # canary | shadow | direct
    since: str
    champion: str | None  # the champion it is compared with (None for a direct deployment)
    ledger_id: int | None = None

    @property
    def routes(self) -> tuple[str, ...]:
        return {CANARY: (CHALLENGER,), SHADOW: (SHADOW,), "direct": (CHAMPION,)}[self.strategy]

    @property
    def since_dt(self) -> datetime:
        return datetime.fromisoformat(self.since)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_release(rt: Runtime, version: str | None) -> Release:
    """The deployment of ``version`` (default: the latest one) from the ledger."""
    row = rt.store.latest_deployment(rt.model_name, version)
    if row is None:
        raise LookupError(f"no deployment of {rt.model_name}{' v' + str(version) if version else ''} in the ledger")
    champion = None
    if row["alias"] == CHALLENGER:
        champ = rt.store.alias_holder(rt.model_name, CHAMPION)
        champion = champ["to_version"] if champ else None
    return Release(rt.model_name, str(row["to_version"]), str(row["strategy"]), row["created_at"].isoformat(), champion, int(row["id"]))


def traffic(rt: Runtime, rel: Release) -> tuple[int, int]:
    """(rows scored by the new version, of which errors) since the deployment: a cheap query."""
    counts = rt.store.inference_status_counts(rel.model, created_from=rel.since_dt, version=rel.version, routes=rel.routes)
    return sum(counts.get(s, 0) for s in OK_STATUSES), counts.get("error", 0)


def window_policy(rt: Runtime) -> WindowPolicy:
    ew = rt.spec.early_window
    return WindowPolicy(
        min_requests=ew.min_requests,
        max_error_rate=ew.max_error_rate,
        max_p95_latency_ms=ew.max_p95_latency_ms,
        max_latency_ratio=ew.max_latency_ratio,
        max_rejected_share=ew.max_rejected_share,
        max_score_psi_vs_holdout=ew.max_score_psi_vs_holdout,
        max_score_psi_vs_champion=ew.max_score_psi_vs_champion,
        max_rss_mb=ew.max_rss_mb,
        max_cpu_cores=ew.max_cpu_cores,
        max_error_rate_increase=ew.max_error_rate_increase,
        on_inconclusive=ew.on_inconclusive,
    )


def waited_out(rt: Runtime, rel: Release, now: datetime | None = None) -> bool:
    return ((now or utcnow()) - rel.since_dt) >= timedelta(minutes=rt.spec.early_window.max_minutes)


def extension_over(rt: Runtime, rel: Release, now: datetime | None = None) -> bool:
    """With ``on_inconclusive: extend``: the one extension (another ``max_minutes``) has run out too."""
    ew = rt.spec.early_window
    return ew.on_inconclusive == "extend" and ((now or utcnow()) - rel.since_dt) >= timedelta(minutes=2 * ew.max_minutes)


def poke(rt: Runtime, rel: Release) -> tuple[bool, dict[str, Any]]:
    """Is the window ready to judge? Enough requests, a visible hard breach, or time is up (an
    ``extend`` verdict keeps waiting: the window's one extension)."""
    requests, errors = traffic(rt, rel)
    p = window_policy(rt)
    quick = decide_early_window(
        WindowSignals(requests=requests, errors=errors, p95_latency_ms=None),
        p,
        waited_out=waited_out(rt, rel),
        extended=extension_over(rt, rel),
    )
    done = quick.outcome not in ("wait", "extend")
    return done, {"requests": requests, "errors": errors, "state": quick.outcome}


# -- the judgment ------------------------------------------------------------------------------
def _frame(rt: Runtime, rel: Release, versions: list[str], routes: tuple[str, ...] | None = None) -> pd.DataFrame:
    import pandas as pd

    cols = ["model_version", "route", "status", "score", "prediction", "latency_ms", "model_ms"]
    rows = rt.store.inference_rows(rel.model, cols, created_from=rel.since_dt, versions=versions, routes=routes or None)
    return pd.DataFrame(rows, columns=cols)


def _rejected_share(rt: Runtime, rel: Release) -> float | None:
    """Share of the requests this version served (or would have: the serving API logs a rejected
    row against the version and route its entity id routes to) that were rejected, on its routes.
    Judged per version, so junk sent to the champion cannot push a canary over the limit. A request
    rejected before its rows were read (no entity id: bad JSON, too large) was never routed and is
    logged with no version: it counts for no version. A shadow answers nobody, so it has none."""
    counts = rt.store.inference_status_counts(
        rel.model, created_from=rel.since_dt, version=rel.version, routes=rel.routes, distinct_requests=True
    )
    total = sum(counts.values())
    return counts.get("rejected", 0) / total if total else None


def _holdout_predictions(rt: Runtime, rel: Release) -> pd.DataFrame | None:
    return holdout_predictions(rt, rel.version)


def holdout_predictions(rt: Runtime, version: str) -> pd.DataFrame | None:
    """The version's holdout rows with their labels and its scores (stored at training), or None."""
    import mlflow
    import pandas as pd

    from include.mlops.adapters.registry import mlflow_client

    try:
        run_id = mlflow_client(rt.settings.mlflow_tracking_uri).get_model_version(rt.model_name, version).run_id
        return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="reference/holdout_predictions.parquet"))
    except Exception as exc:
        log.warning("no holdout predictions for v%s: %s", version, exc)
        return None


def _psi_report(reference: pd.DataFrame, current: pd.DataFrame, html: Path | None, *, classes: bool = True) -> dict[str, float | None]:
    """Evidently PSI of the score and of the predicted class (``classes``; a regressor's prediction is
    its score, so only the score's); saves the HTML report when ``html`` is given."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    cols = ["score", "prediction"] if classes else ["score"]
    dd = DataDefinition(numerical_columns=["score"], categorical_columns=cols[1:])
    report = Report([ValueDrift(column=c, method="psi", threshold=0.2) for c in cols])
    snap = report.run(
        Dataset.from_pandas(current[cols].astype({"score": float}), data_definition=dd),
        Dataset.from_pandas(reference[cols].astype({"score": float}), data_definition=dd),
    )
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        snap.save_html(str(html))
    values = [float(m["value"]) for m in snap.dict()["metrics"]]
    return {"score": values[0], "prediction": values[1] if classes else None}


def judge(rt: Runtime, rel: Release, start_metrics: dict[str, float] | None, report_dir: Path) -> tuple[Verdict, dict[str, Any]]:
    """Gather every signal of the window and decide."""
    import numpy as np

    frame = _frame(rt, rel, [v for v in (rel.version, rel.champion) if v])
    new = frame[(frame["model_version"] == rel.version) & frame["route"].isin(rel.routes) & frame["status"].isin(OK_STATUSES)]
    champ_all = frame[(frame["model_version"] == rel.champion) & (frame["route"] == CHAMPION)] if rel.champion else frame.iloc[0:0]
    champ = champ_all[champ_all["status"] == "ok"]
    scored = new[new["status"] == "ok"].dropna(subset=["score"])
    extra: dict[str, Any] = {}
    classes = rt.spec.task == "binary_classification"
    psi_holdout = psi_champion = None
    if len(scored):
        holdout = _holdout_predictions(rt, rel)
        if holdout is not None and len(holdout):
            psi = _psi_report(holdout, scored, report_dir / "vs_holdout.html", classes=classes)
            psi_holdout = psi["score"]
            extra["class_psi_vs_holdout"] = psi["prediction"]
            extra["report_vs_holdout"] = str(report_dir / "vs_holdout.html")
        if len(champ) >= 20:
            psi = _psi_report(champ.dropna(subset=["score"]), scored, report_dir / "vs_champion.html", classes=classes)
            psi_champion = psi["score"]
            extra["class_psi_vs_champion"] = psi["prediction"]
            extra["report_vs_champion"] = str(report_dir / "vs_champion.html")
    end_metrics = serving_process(rt.settings.serving_url)
    rss = end_metrics.get("rss_mb") if end_metrics else None
    cpu = cpu_use(start_metrics, end_metrics)["cores"]  # None unless both readings are of the same process
    signals = WindowSignals(
        requests=len(new),
        errors=int((new["status"] == "error").sum()),
        p95_latency_ms=float(np.percentile(scored["latency_ms"].dropna(), 95)) if scored["latency_ms"].notna().any() else None,
        champion_requests=len(champ),
        champion_p95_latency_ms=float(np.percentile(champ["latency_ms"].dropna(), 95)) if champ["latency_ms"].notna().any() else None,
        rejected_share=_rejected_share(rt, rel),
        score_shift_vs_holdout=psi_holdout,
        score_shift_vs_champion=psi_champion,
        rss_mb=rss,
        cpu_cores=cpu,
        champion_errors=int((champ_all["status"] == "error").sum()),
        model_p95_ms=model_p95_ms(scored),
        champion_model_p95_ms=model_p95_ms(champ),
    )
    verdict = decide_early_window(signals, window_policy(rt), waited_out=waited_out(rt, rel), extended=extension_over(rt, rel))
    if verdict.outcome in ("wait", "extend"):  # judged before the window (or its extension) ran out, e.g. by hand: do not guess
        verdict = Verdict("inconclusive", "too_few_requests", verdict.reasons, verdict.details)
    return verdict, {"signals": asdict(signals), **extra}


# -- acting on verdicts ---------------------------------------------------------------------------
def _client(rt: Runtime) -> Any:
    from include.mlops.adapters.registry import mlflow_client

    return mlflow_client(rt.settings.mlflow_tracking_uri)


def roll_back_release(rt: Runtime, rel: Release, reasons: list[str], *, dag_id: str | None, run_id: str | None) -> dict[str, Any]:
    """Undo a deployment: remove the challenger, or restore the champion that served before."""
    from include.mlops.adapters.registry import AliasConflict, alias_lock

    try:
        with alias_lock(rt.store, rel.model):
            return _roll_back(rt, rel, reasons, dag_id=dag_id, run_id=run_id)
    except AliasConflict as exc:  # moved by someone else in between: nothing to undo here
        log.warning("rollback of v%s not done (%s): %s", rel.version, exc.reason_code, exc)
        return {"version": rel.version, "action": "none", "reason_code": exc.reason_code, "why": str(exc)}


def _roll_back(rt: Runtime, rel: Release, reasons: list[str], *, dag_id: str | None, run_id: str | None) -> dict[str, Any]:
    from include.mlops.adapters.registry import aliases, previously_serving, reconcile, remove_alias, set_alias
    from include.mlops.steps.deploy import notify_serving

    client = _client(rt)
    reconcile(rt.store, client, rel.model)
    actor = f"{dag_id}/{run_id}" if dag_id else "release"
    why = "early window breach: " + "; ".join(reasons)
    key = f"{run_id or 'manual'}:rollback:{rel.version}"
    current = aliases(client, rel.model)
    if rel.strategy in (CANARY, SHADOW):
        if current.get(CHALLENGER) != rel.version:
            return {"version": rel.version, "action": "none", "why": f"v{rel.version} is no longer the challenger"}
        row = remove_alias(
            rt.store,
            client,
            rel.model,
            CHALLENGER,
            reason=why,
            actor=actor,
            op_key=key,
            dag_id=dag_id,
            run_id=run_id,
            action="rolled_back",
            expected=rel.version,
        )
        notify_serving(rt)
        return {"version": rel.version, "action": "challenger_removed", "ledger_id": row["id"] if row else None}
    if current.get(CHAMPION) != rel.version:
        return {"version": rel.version, "action": "none", "why": f"v{rel.version} is no longer the champion"}
    previous = previously_serving(rt.store, rel.model)
    if previous is None:
        return {"version": rel.version, "action": "none", "why": "nothing served before it: it stays (alerted)"}
    row = set_alias(
        rt.store,
        client,
        rel.model,
        CHAMPION,
        previous,
        strategy="rollback",
        reason=why,
        actor=actor,
        op_key=key,
        dag_id=dag_id,
        run_id=run_id,
        action="rolled_back",
        expected=rel.version,
    )
    notify_serving(rt)
    return {"version": rel.version, "action": "champion_restored", "restored": previous, "ledger_id": row["id"]}


def champion_history(rt: Runtime) -> list[LedgerRow]:
    return [LedgerRow(r["alias"], r["action"], r["from_version"], r["to_version"]) for r in rt.store.list_ledger(rt.model_name, CHAMPION)]


#: With ``promotion.test``, an automatic promotion gives up waiting for labels after this many
#: monitoring windows of wall time: ``decide_final`` then records ``awaiting_labels``, a person decides.
LABEL_WAIT_WINDOWS = 2


def await_labels(rt: Runtime, request: FinalRequest) -> tuple[bool, dict[str, Any]]:
    """May promote_or_rollback decide now? A promotion the early window triggered waits for the
    release's labels: ``promotion.min_labelled_rows`` labelled requests since the deployment (the rows
    :func:`decide_final` scores with both versions); without ``promotion.test`` at most until the
    release has served a monitoring window of traffic (event days, or wall time since the deployment);
    with a test at most :data:`LABEL_WAIT_WINDOWS` windows of wall time. The rule is
    ``domain.policy.promotion_ready``, as in the backtest. Labels come ``label_delay_hours`` after the
    requests and the early window ends after ``early_window.min_requests`` requests: without this
    wait a live promotion would never see one. A run by hand (promote or rollback), a release with
    no champion to compare, or a version no longer the challenger, goes on at once."""
    p = rt.spec.promotion
    if not request.triggered or request.action != "promote" or not p.auto_promote:
        return True, {"waited": False, "why": "not an automatic promotion"}
    try:
        rel = find_release(rt, request.version)
    except LookupError as exc:
        return True, {"waited": False, "why": str(exc)}
    if rel.champion is None:
        return True, {"waited": False, "why": f"v{rel.version} has no champion to be compared with ({rel.strategy})"}
    holder = rt.store.alias_holder(rel.model, CHALLENGER)
    if holder is None or str(holder["to_version"]) != rel.version:
        return True, {"waited": False, "why": f"v{rel.version} is no longer the challenger"}
    rows, days = rt.store.release_traffic(rel.model, created_from=rel.since_dt, routes=(CHAMPION, CHALLENGER))
    window_h = rt.spec.monitoring.window_hours
    wall = utcnow() - rel.since_dt
    waited_out = days >= window_days(window_h) or wall >= timedelta(hours=window_h)
    gave_up = p.test != "none" and wall >= timedelta(hours=window_h * LABEL_WAIT_WINDOWS)
    done = gave_up or promotion_ready(rows, min_rows=p.min_labelled_rows, waited_out=waited_out, test=p.test)
    info = {"waited": True, "version": rel.version, "labelled_rows": rows, "min_labelled_rows": p.min_labelled_rows}
    info |= {"traffic_days": days, "window_days": window_days(window_h), "waited_out": waited_out, "gave_up": gave_up, "ready": done}
    log.info(
        "v%s: %d labelled requests of %d needed, %d of %d days of traffic%s",
        rel.version,
        rows,
        p.min_labelled_rows,
        days,
        window_days(window_h),
        "" if done else ": waiting for labels",
    )
    return done, info


def decide_final(rt: Runtime, action: str, version: str | None) -> tuple[Verdict, dict[str, Any]]:
    """The promote-or-rollback verdict, with the inputs it was made on."""
    from include.mlops.adapters.registry import aliases, reconcile
    from include.mlops.domain.policy import decide_promotion, rollback_target
    from include.mlops.steps.paired import compare, paired_scores, realized_quality

    client = _client(rt)
    reconcile(rt.store, client, rt.model_name)
    current = aliases(client, rt.model_name)
    champion, challenger = current.get(CHAMPION), current.get(CHALLENGER)
    inputs: dict[str, Any] = {"action": action, "requested_version": version, "champion": champion, "challenger": challenger}
    if action == "rollback":
        return rollback_target(champion_history(rt), champion, version), inputs
    if action != "promote":
        return Verdict("refused", "unknown_action", [f"action must be promote or rollback, not {action!r}"]), inputs
    realized = comparison = None
    target = version or challenger
    p = rt.spec.promotion
    if champion and challenger and target == challenger:
        rel = find_release(rt, challenger)
        paired = paired_scores(rt, rel.since_dt, (champion, challenger))
        realized = realized_quality(rt, rel.since_dt, champion, challenger, paired)
        comparison = compare(rt, paired, champion, challenger, min_gain=p.min_gain)
        inputs["realized"] = asdict(realized) if realized else None
        inputs["window_since"] = rel.since
    verdict = decide_promotion(
        champion, challenger, version, realized, min_rows=p.min_labelled_rows, tolerance=p.tolerance, test=p.test, comparison=comparison
    )
    return verdict, inputs


def act_final(
    rt: Runtime, verdict: Verdict, inputs: dict[str, Any], reason: str, *, dag_id: str | None, run_id: str | None
) -> dict[str, Any]:
    """Carry out a promote-or-rollback verdict: ledger rows + tags, a decision, an alert."""
    from include.mlops.adapters.alerts import raise_alert
    from include.mlops.adapters.registry import AliasConflict, alias_lock, changed_since
    from include.mlops.steps.deploy import notify_serving

    actor = f"{dag_id}/{run_id}" if dag_id else "manual"
    key = run_id or f"manual-{utcnow().isoformat()}"
    champion, challenger = inputs.get("champion"), inputs.get("challenger")
    text = "; ".join(verdict.reasons)
    result: dict[str, Any] = {"outcome": verdict.outcome, "reason_code": verdict.reason_code, "reasons": verdict.reasons}
    move = FinalMove(rt, _client(rt), actor, key, f"{reason}: {text}", dag_id, run_id)
    try:
        with alias_lock(rt.store, rt.model_name):
            # act only on the state decided on: the champion and challenger must still be those versions
            changed = [] if move.started() else changed_since(move.client, rt.model_name, {CHAMPION: champion, CHALLENGER: challenger})
            if changed:
                raise AliasConflict("state_changed", "; ".join(changed))
            severity, kind = move_aliases(move, verdict, inputs, text, result)
    except AliasConflict as exc:
        verdict = Verdict(
            "refused", exc.reason_code, [f"not carried out ({verdict.outcome}, {verdict.reason_code}): {exc}"], verdict.details
        )
        text = "; ".join(verdict.reasons)
        result = {"outcome": verdict.outcome, "reason_code": verdict.reason_code, "reasons": verdict.reasons}
        severity, kind = "warning", "promotion_refused"
    decided_on = result.get("version") or inputs.get("requested_version") or challenger or champion
    rt.store.record_decision(
        rt.model_name,
        "promotion" if inputs.get("action") == "promote" else "rollback",
        verdict.outcome,
        verdict.reason_code,
        subject=f"version {decided_on}",
        version=str(decided_on) if str(decided_on).isdigit() else None,
        reasons=verdict.reasons,
        inputs={**inputs, **verdict.details},
        dag_id=dag_id,
        run_id=run_id,
    )
    raise_alert(
        rt.store,
        rt.model_name,
        severity=severity,
        kind=kind,
        dedupe_key=f"{kind}:{key}",
        message=f"{inputs.get('action')}: {verdict.outcome} ({verdict.reason_code}): {text}",
        payload=result,
    )
    if verdict.outcome in ("promote", "rollback") or result.get("challenger_removed"):
        notify_serving(rt)
    return result


def record_window(
    rt: Runtime, rel: Release, verdict: Verdict, inputs: dict[str, Any], *, dag_id: str | None, run_id: str | None
) -> dict[str, Any]:
    """The early-window decision, with every signal and the Evidently report, plus an alert when it
    is not a pass. Returns what the next task needs."""
    from include.mlops.adapters.alerts import raise_alert

    report = inputs.get("report_vs_holdout") or inputs.get("report_vs_champion")
    rt.store.record_decision(
        rt.model_name,
        "early_window",
        verdict.outcome,
        verdict.reason_code,
        subject=f"version {rel.version} ({rel.strategy})",
        version=rel.version,
        reasons=verdict.reasons,
        inputs={"release": rel.to_dict(), **inputs, **verdict.details},
        report_uri=report,
        dag_id=dag_id,
        run_id=run_id,
    )
    if verdict.outcome == "rollback":
        breach = verdict.reason_code == "hard_breach"
        kind = "early_window_breach" if breach else "early_window_inconclusive"
        raise_alert(
            rt.store,
            rt.model_name,
            severity="critical",
            kind=kind,
            dedupe_key=f"{kind}:{rel.version}",
            message=f"v{rel.version} ({rel.strategy}) "
            + ("breached its early window: " if breach else "rolled back on an inconclusive early window: ")
            + "; ".join(verdict.reasons),
            payload={"release": rel.to_dict(), "report": report},
        )
    elif verdict.outcome == "inconclusive":
        raise_alert(
            rt.store,
            rt.model_name,
            severity="warning",
            kind="early_window_inconclusive",
            dedupe_key=f"early_window_inconclusive:{rel.version}",
            message=f"v{rel.version}: " + "; ".join(verdict.reasons),
            payload={"release": rel.to_dict()},
        )
    return {"release": rel.to_dict(), "verdict": verdict.to_dict(), "report": report}
