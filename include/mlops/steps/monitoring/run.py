"""The monitoring pass: which window, which versions, and what is recorded and alerted.

One pass (``monitor_model``) looks at a window of live traffic in event time, for the versions that
served it (the champion, and the challenger when there is one), against the reference stored with
each version at training time (:mod:`.checks`). For each version it writes the Evidently HTML
report and the JSON summary keyed by version and window (:mod:`.reports`), logs the summary to the
version's MLflow monitoring run (:mod:`.tracking`), adds the snapshots to the Evidently workspace,
records a ``monitor`` decision in the ops store, and raises or resolves the champion's alerts.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.adapters.lake import atomic_write_text
from include.mlops.steps.monitoring.checks import Summary, estimated_impact, monitor_version, probe_consistency
from include.mlops.steps.monitoring.export import export_inference, labelled, latest_event_day, read_window
from include.mlops.steps.monitoring.reference import load_reference
from include.mlops.steps.monitoring.reports import evidently_snapshots, publish_evidently
from include.mlops.steps.monitoring.resources import alert_serving, pass_resources
from include.mlops.steps.monitoring.tracking import log_to_mlflow

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)


class MonitoringError(RuntimeError):
    """A monitoring pass that could not complete (e.g. MLflow unreachable); nothing was recorded."""


def choose_window(rt: Runtime, start: str | None, end: str | None) -> tuple[datetime, datetime] | None:
    """The window to judge: the one named (a window-closed event), else the latest event day."""
    hours = rt.spec.monitoring.window_hours
    if start and end:
        return datetime.fromisoformat(start), datetime.fromisoformat(end)
    if end:
        e = datetime.fromisoformat(end)
        return e - timedelta(hours=hours), e
    day = latest_event_day(rt)
    if day is None:
        return None
    e = datetime.combine(day, datetime.min.time()) + timedelta(days=1)
    return e - timedelta(hours=hours), e


def already_judged(rt: Runtime, version: str, window: tuple[datetime, datetime]) -> bool:
    return rt.store.decision_exists(rt.model_name, "monitor", version=version, window_start=window[0], window_end=window[1])


def run_monitoring(
    rt: Runtime,
    *,
    window_start: str | None = None,
    window_end: str | None = None,
    force: bool = False,
    dag_id: str | None = None,
    run_id: str | None = None,
    shared: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One monitoring pass over the window for the versions that served it (the champion, and the
    challenger when there is one). ``shared`` carries what several windows of one pass reuse."""
    from include.mlops.adapters.registry import CHALLENGER, CHAMPION

    exported = export_inference(rt)
    window = choose_window(rt, window_start, window_end)
    if window is None:
        return {"status": "no_traffic", "exported": exported, "summaries": []}
    current = current_aliases(rt)
    frame = read_window(rt, window[0], window[1])
    roles = serving_roles(frame, current)
    log.info("monitoring %s..%s: %s rows in the window, versions %s", window[0], window[1], len(frame), roles or "none serving")
    consistency = pass_consistency(rt, shared) if roles else None
    resources = pass_resources(rt, shared) if roles else None
    summaries = []
    for version, role in roles:
        if not force and already_judged(rt, version, window):
            log.info("v%s window %s..%s already judged; skipping", version, *window)
            continue
        s = judge_version(rt, version, role, window, frame, consistency=consistency, resources=resources, dag_id=dag_id, run_id=run_id)
        summaries.append(s.to_dict())
    return {
        "status": "judged",
        "window": [window[0].isoformat(), window[1].isoformat()],
        "exported": exported,
        "summaries": summaries,
        "current": {k: current.get(k) for k in (CHAMPION, CHALLENGER)},
    }


def current_aliases(rt: Runtime) -> dict[str, str]:
    """The registry's aliases now; MLflow unreachable fails the pass before anything is judged."""
    from include.mlops.adapters.registry import aliases, mlflow_client

    try:
        return aliases(mlflow_client(rt.settings.mlflow_tracking_uri), rt.model_name)
    except Exception as exc:
        raise MonitoringError(
            f"MLflow at {rt.settings.mlflow_tracking_uri} is unreachable ({type(exc).__name__}: {exc}); nothing was recorded"
        ) from exc


def pass_consistency(rt: Runtime, shared: dict[str, Any] | None) -> dict[str, Any]:
    """The probe-set consistency check, once per pass: the serving API and the registry do not
    change between the windows of one pass."""
    if shared is not None and "consistency" in shared:
        found: dict[str, Any] = shared["consistency"]
        return found
    consistency = probe_consistency(rt)
    if shared is not None:
        shared["consistency"] = consistency
    return consistency


def judge_version(
    rt: Runtime,
    version: str,
    role: str,
    window: tuple[datetime, datetime],
    frame: pd.DataFrame,
    *,
    consistency: dict[str, Any] | None,
    dag_id: str | None,
    run_id: str | None,
    resources: dict[str, Any] | None = None,
) -> Summary:
    """Judge one version on the window, then publish, record and alert. Everything that needs MLflow
    happens before anything is recorded: if MLflow goes away mid-pass the task fails (and retries)
    without a partial decision or dashboard point."""
    from include.mlops.adapters.registry import CHAMPION

    s, scored = monitor_version(rt, version, role, window, frame, consistency=consistency, resources=resources)
    out_dir = rt.lake.root / "reports" / rt.model_name / "monitoring" / f"v{version}"
    stem = f"{window[0]:%Y%m%dT%H%M}-{window[1]:%Y%m%dT%H%M}"
    snaps = window_snapshots(rt, s, scored, window, out_dir / f"{stem}.html")
    summary_path = out_dir / f"{stem}.json"
    atomic_write_text(summary_path, json.dumps(s.to_dict(), indent=1, default=str))
    try:
        mlflow_run = log_to_mlflow(rt, s, summary_path)
    except Exception as exc:
        raise MonitoringError(f"could not log the summary to MLflow ({type(exc).__name__}: {exc}); nothing was recorded") from exc
    if snaps and s.report:
        publish_evidently(rt, s, snaps, Path(s.report))
    record_decision(rt, s, window, summary_path, mlflow_run, dag_id=dag_id, run_id=run_id)
    if role == CHAMPION:
        _alert(rt, s)
    alert_serving(rt, s)  # the serving process and a challenger's inference time: any role
    return s


def window_snapshots(rt: Runtime, s: Summary, scored: pd.DataFrame, window: tuple[datetime, datetime], html: Path) -> list[Any]:
    """The window's Evidently snapshots (none for a window with too few rows); ``s.report`` names
    the HTML report they will be saved to. A failed report is logged and skipped."""
    if s.outcome == "insufficient_data":
        return []
    try:
        snaps = evidently_snapshots(rt, s, scored, load_reference(rt, s.version), labelled(rt, s.version, window[1]))
    except Exception as exc:
        log.warning("Evidently report for v%s failed: %s", s.version, exc)
        return []
    s.report = str(html)
    return snaps


def record_decision(
    rt: Runtime,
    s: Summary,
    window: tuple[datetime, datetime],
    summary_path: Path,
    mlflow_run: str | None,
    *,
    dag_id: str | None,
    run_id: str | None,
) -> None:
    """The ``monitor`` decision of one version on one window, with the summary's headline inputs."""
    rt.store.record_decision(
        rt.model_name,
        "monitor",
        s.outcome,
        s.reason_codes[0] if s.reason_codes else "healthy",
        subject=f"v{s.version} {window[0]:%Y-%m-%dT%H:%M}..{window[1]:%Y-%m-%dT%H:%M}",
        version=s.version,
        window_start=window[0],
        window_end=window[1],
        reasons=s.reasons,
        inputs={
            "summary": str(summary_path),
            "mlflow_run_id": mlflow_run,
            "role": s.role,
            "rows": s.rows,
            "reason_codes": s.reason_codes,
            "drift_share": s.drift.get("share"),
            "drifted": s.drift.get("drifted"),
            "quality": s.quality,
            "system": s.system,
        },
        report_uri=s.report,
        dag_id=dag_id,
        run_id=run_id,
    )


def serving_roles(frame: pd.DataFrame, current: dict[str, str]) -> list[tuple[str, str]]:
    """The versions to judge on a window: those that served it, in the role they served in (a
    window can close after a promotion: the rows then belong to the old champion and the
    challenger of the time). A window no version served is judged for the current aliases,
    which says "too few rows" instead of saying nothing."""
    from include.mlops.adapters.registry import CHALLENGER, CHAMPION

    ok = frame[frame["status"] == "ok"] if len(frame) else frame
    served: dict[str, str] = {}
    if len(ok):
        for version, group in ok.groupby(ok["model_version"].astype(str)):
            served[str(version)] = CHAMPION if group["route"].mode().iloc[0] == CHAMPION else CHALLENGER
    if not served:
        return [(v, r) for r, v in ((CHAMPION, current.get(CHAMPION)), (CHALLENGER, current.get(CHALLENGER))) if v]
    return sorted(served.items(), key=lambda vr: (vr[1] != CHAMPION, vr[0]))


_ALERTS = {
    "drift": ("warning", "drift_detected", "drift"),
    "decay": ("critical", "performance_degraded", "decay"),
}


def _alert(rt: Runtime, s: Summary) -> None:
    """One alert per incident: drift / decay / warning signals of the champion; a healthy window
    resolves them, so the next occurrence is a new incident."""
    from include.mlops.adapters.alerts import raise_alert, resolve_alerts

    v = s.version
    payload = {"version": v, "window_start": s.window_start, "window_end": s.window_end, "reason_codes": s.reason_codes, "report": s.report}
    if s.outcome in _ALERTS:
        severity, kind, key = _ALERTS[s.outcome]
        impact = estimated_impact(s)
        payload["estimated"] = s.quality.get("estimated")
        text = "; ".join(s.reasons)[:800] + (f" ({impact})" if impact else "")
        raise_alert(rt.store, rt.model_name, severity=severity, kind=kind, dedupe_key=f"{key}:v{v}",  # type: ignore[arg-type]
                    message=f"v{v} {s.outcome} on {s.window_start[:10]}: {text}", payload=payload)  # fmt: skip
    for code, reason in zip(s.reason_codes, s.reasons, strict=False):
        if code.startswith("input_") or code in ("schema_rejected_requests", "probe_mismatch", "error_rate", "latency"):
            raise_alert(rt.store, rt.model_name, severity="warning", kind="monitoring_warning", dedupe_key=f"{code}:v{v}",
                        message=f"v{v} on {s.window_start[:10]}: {reason}", payload=payload)  # fmt: skip
    if s.outcome == "healthy":
        resolve_alerts(rt.store, rt.model_name, dedupe_prefix=f"drift:v{v}")
        resolve_alerts(rt.store, rt.model_name, dedupe_prefix=f"decay:v{v}")


def run_windows(
    rt: Runtime, windows: list[tuple[str | None, str | None]], *, force: bool = False, dag_id: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Judge several announced windows in event-time order in one pass (a fast replay announces
    windows faster than a task starts); with none announced, the latest window."""
    shared: dict[str, Any] = {}
    results = [
        run_monitoring(rt, window_start=a, window_end=b, force=force, dag_id=dag_id, run_id=run_id, shared=shared)
        for a, b in sorted(set(windows), key=str)
    ]
    if not results:
        results = [run_monitoring(rt, force=force, dag_id=dag_id, run_id=run_id)]
    from include.mlops.steps.value import refresh_after_monitoring

    refresh_after_monitoring(rt, [r.get("window") for r in results if r.get("status") == "judged"])
    return {
        "current": results[-1].get("current"),
        "windows": [r.get("window") for r in results],
        "summaries": [s for r in results for s in r.get("summaries", [])],
        "status": ",".join(sorted({r["status"] for r in results})),
    }


def event_extra(result: dict[str, Any], asset: str) -> dict[str, Any] | None:
    """The extra of ``drift_detected`` / ``performance_degraded`` for the champion's latest summary
    showing the condition, or None when no window of this pass showed it."""
    codes = {"drift_detected": {"dataset_drift", "prediction_drift"}, "performance_degraded": {"quality_decay", "quality_trend"}}[asset]
    champion_now = (result.get("current") or {}).get("champion")
    for s in reversed(result.get("summaries", [])):
        if champion_now is not None and s["version"] != champion_now:
            continue  # a version that no longer serves as champion asks for nothing
        if s["role"] == "champion" and codes & set(s["reason_codes"]):
            return {
                "version": s["version"],
                "window_start": s["window_start"],
                "window_end": s["window_end"],
                "reason_codes": sorted(codes & set(s["reason_codes"])),
                "reasons": [r for c, r in zip(s["reason_codes"], s["reasons"], strict=False) if c in codes],
                "drifted": s["drift"].get("drifted", []),
                "drift_share": s["drift"].get("share"),
                "quality": s["quality"].get("live"),
                "report": s["report"],
                **({"trend_test": s["quality"]["trend_test"]} if isinstance(s["quality"].get("trend_test"), dict) else {}),
            }
    return None
