"""Every check of one version on one window, gathered in a :class:`Summary`.

* system stability: error rate and p95 latency; each version's own inference time (a challenger's
  against the champion's) and the serving process's CPU and memory (:mod:`.resources`);
* data drift per feature and dataset drift (:mod:`include.mlops.domain.drift`, exact fast checks
  on the whole window against the reference statistics), prediction drift of the score;
* input quality: the spec's Great Expectations suite on the window's inputs, and the share of
  requests the serving API rejected;
* realized quality once labels have arrived (the version's labelled predictions over the trailing
  ``quality_days``), against the holdout value at training time (labels that arrive after the
  verdict revise it: :mod:`.revision`);
* prediction consistency: the spec's probe set scored by the live serving API and by the registry
  artifact must agree.

The outcome is healthy, warning, drift, decay or insufficient_data, with reason codes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from include.mlops.steps.monitoring.export import labelled
from include.mlops.steps.monitoring.reference import Reference, artifact_probe_scores, load_reference
from include.mlops.steps.monitoring.resources import check_serving

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.drift import ColumnDrift, DatasetDrift
    from include.mlops.domain.spec import Monitoring, Spec
    from include.mlops.runtime import Runtime


@dataclass
class Summary:
    """The outcome of monitoring one version on one window (JSON-able)."""

    model: str
    version: str
    role: str  # champion | challenger
    window_start: str
    window_end: str
    rows: int
    outcome: str = "healthy"  # healthy | warning | drift | decay | insufficient_data
    reason_codes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)
    prediction: dict[str, Any] = field(default_factory=dict)
    input_quality: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    consistency: dict[str, Any] = field(default_factory=dict)
    system: dict[str, Any] = field(default_factory=dict)
    report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, level: str, code: str, reason: str) -> None:
        order = ["healthy", "warning", "decay", "drift"]
        if order.index(level) > order.index(self.outcome if self.outcome in order else "healthy"):
            self.outcome = level
        self.reason_codes.append(code)
        self.reasons.append(reason)


def monitor_version(
    rt: Runtime,
    version: str,
    role: str,
    window: tuple[datetime, datetime],
    frame: pd.DataFrame,
    *,
    consistency: dict[str, Any] | None,
    resources: dict[str, Any] | None = None,
) -> tuple[Summary, pd.DataFrame]:
    """Every check for one version on one window; returns the summary and its scored rows.
    ``resources``: the serving process's reading of the pass (:func:`.resources.pass_resources`)."""
    mon = rt.spec.monitoring
    start, end = window
    mine = frame[(frame["model_version"] == version) & frame["status"].isin(["ok", "error"])]
    routes = ["champion"] if role == "champion" else ["challenger", "shadow"]
    mine = mine[mine["route"].isin(routes)]
    s = Summary(rt.model_name, version, role, start.isoformat(), end.isoformat(), rows=len(mine))
    ok = mine[mine["status"] == "ok"]
    if too_few_rows(s, mon):
        return s, ok
    ref = load_reference(rt, version)
    check_system(s, mine, mon)
    check_serving(s, frame, mine, resources, mon)
    check_drift(s, rt.spec, ok, ref)
    check_input_quality(s, rt, frame, ok)
    check_realized_quality(s, rt, end, ref)
    check_estimated_quality(s, rt.spec, ok, ref)
    if consistency is not None:
        check_consistency(s, consistency, mon)
    mark_healthy(s)
    return s, ok


def too_few_rows(s: Summary, mon: Monitoring) -> bool:
    """A window with fewer than ``min_rows`` scored rows is ``insufficient_data``, never a guess."""
    if s.rows >= mon.min_rows:
        return False
    s.outcome = "insufficient_data"
    s.reason_codes.append("too_few_rows")
    s.reasons.append(f"{s.rows} scored rows in the window; at least {mon.min_rows} are needed to judge drift")
    return True


def mark_healthy(s: Summary) -> None:
    """A window no check objected to is ``healthy``, with that reason code."""
    if not s.reason_codes:
        s.reason_codes.append("healthy")
        s.reasons.append("no drift, quality and system within bounds")


# -- system stability -------------------------------------------------------------------------
def check_system(s: Summary, mine: pd.DataFrame, mon: Monitoring) -> None:
    """Error rate and p95 latency of the version's requests in the window."""
    import numpy as np

    ok = mine[mine["status"] == "ok"]
    errors = int((mine["status"] == "error").sum())
    p95 = float(np.percentile(ok["latency_ms"].dropna(), 95)) if ok["latency_ms"].notna().any() else None
    s.system = {"requests": len(mine), "errors": errors, "error_rate": errors / len(mine), "p95_latency_ms": p95}
    if errors / len(mine) > mon.max_error_rate:
        s.add("warning", "error_rate", f"error rate {errors / len(mine):.2%} > {mon.max_error_rate:.2%}")
    if p95 is not None and p95 > mon.max_p95_latency_ms:
        s.add("warning", "latency", f"p95 latency {p95:.0f} ms > {mon.max_p95_latency_ms:.0f} ms")


# -- data drift (features) and prediction drift (score) ----------------------------------------
def check_drift(s: Summary, spec: Spec, ok: pd.DataFrame, ref: Reference) -> None:
    """Feature and score drift against the reference statistics, in one pass over the window.
    Pure (no Runtime): monitoring and the backtest (:mod:`include.mlops.steps.backtest`) both call it."""
    from include.mlops.domain import drift

    mon = spec.monitoring
    results = drift_results(spec, ok, ref)
    feature_results = [r for r in results if r.column in spec.feature_names and r.column not in mon.drift_exclude]
    judge_dataset_drift(s, drift.dataset_drift(feature_results, share=mon.dataset_drift_share), feature_results)
    s.drift["thresholds"] = "calibrated" if ref.calibration is not None else "fixed"
    judge_prediction_drift(s, {r.column: r for r in results}.get("score"), ok, ref, task=spec.task)


def drift_results(spec: Spec, ok: pd.DataFrame, ref: Reference) -> list[ColumnDrift]:
    """Every column's drift verdict: the spec's tests (``drift_overrides``, the score's threshold),
    and, when the version was calibrated at training time (``ref.calibration``), the calibrated
    columns tested with their pinned test and judged against their own thresholds
    (``domain.drift_calibration.judge``); a version without a calibration keeps the fixed rule."""
    from include.mlops.domain import drift
    from include.mlops.domain.drift_calibration import judge
    from include.mlops.domain.spec import DriftOverride

    mon = spec.monitoring
    overrides: dict[str, DriftOverride] = dict(mon.drift_overrides)  # typed and checked when the spec loaded
    overrides.setdefault("score", DriftOverride(threshold=mon.score_drift_threshold))
    calibrated = ref.calibration.features if ref.calibration is not None else {}
    for column, threshold in calibrated.items():
        if column not in mon.drift_overrides:
            overrides[column] = DriftOverride(method=threshold.method)  # type: ignore[arg-type]
    current = ok[[*spec.feature_names, "score"]].copy()
    current["score"] = current["score"].astype(float)
    results = drift.column_drift(current, ref.stats, spec, overrides)
    return [
        judge(r, calibrated[r.column]).as_column_drift() if r.column in calibrated and r.column not in mon.drift_overrides else r
        for r in results
    ]


def judge_dataset_drift(s: Summary, ds: DatasetDrift, feature_results: list[ColumnDrift]) -> None:
    s.drift = {
        "share": ds.share_drifted,
        "drifted": list(ds.drifted_names),
        "undefined": list(ds.undefined_names),
        "dataset_drift": ds.drifted,
        "columns": {r.column: column_summary(r) for r in feature_results},
    }
    if ds.drifted:
        s.add(
            "drift",
            "dataset_drift",
            f"{ds.drifted_columns} of {ds.tested_columns} features drifted ({ds.share_drifted:.0%}): {', '.join(ds.drifted_names)}",
        )
    elif ds.drifted_names:
        s.add(
            "warning", "feature_drift", f"features drifted: {', '.join(ds.drifted_names)} ({ds.share_drifted:.0%}, below the dataset share)"
        )


def judge_prediction_drift(
    s: Summary, sr: ColumnDrift | None, ok: pd.DataFrame, ref: Reference, *, task: str = "binary_classification"
) -> None:
    """Prediction drift: the score (a classifier's probability, a regressor's predicted value) is a
    numeric column like any other, tested against the holdout predictions (``drift_results``)."""
    s.prediction = {
        "score_method": sr.method if sr else None,
        "score_drift": number_or_none(sr.score) if sr else None,
        "drifted": bool(sr.drifted) if sr else False,
        "mean_score": float(ok["score"].mean()) if len(ok) else None,
        "holdout_mean_score": number_or_none(ref.holdout["score"].mean()),
    }
    if task == "binary_classification":
        s.prediction["positive_rate"] = float((ok["score"] >= 0.5).mean()) if len(ok) else None
        s.prediction["holdout_positive_rate"] = float((ref.holdout["score"] >= 0.5).mean())
    if sr is not None and sr.drifted:
        s.add(
            "drift",
            "prediction_drift",
            f"score distribution drifted from the holdout predictions ({sr.method} {number_or_none(sr.score) or 0:.3f} vs {sr.threshold})",
        )


def column_summary(r: ColumnDrift) -> dict[str, Any]:
    return {
        "method": r.method,
        "score": number_or_none(r.score),
        "threshold": r.threshold,
        "drifted": bool(r.drifted),
        "status": r.status,
        "null_share": r.null_share,
        "unseen": list(r.unseen_categories[:5]),
        **({"note": r.note} if r.note else {}),
    }


def number_or_none(v: Any) -> float | None:
    """``v`` as a finite float, else None (JSON and MLflow take no NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


# -- input quality ------------------------------------------------------------------------------
def check_input_quality(s: Summary, rt: Runtime, frame: pd.DataFrame, ok: pd.DataFrame) -> None:
    """The spec's input expectations on the window, and the share of requests refused by schema.
    Rejected requests have no trustworthy event time: they are counted over the wall-clock span in
    which this window's traffic was served."""
    from include.mlops.domain.validation import validate_frame

    served = frame[frame["status"] != "rejected"]
    rejected = 0
    if not served.empty:
        lo, hi = served["created_at"].min(), served["created_at"].max()
        rejected = rt.store.count_rejected(rt.model_name, lo.to_pydatetime(), hi.to_pydatetime())
    total_requests = len(served) + rejected
    inputs = ok[rt.spec.feature_names].copy()
    for f in rt.spec.features:  # the export stores what arrived; text columns as object for GX
        if f.type == "categorical":
            inputs[f.name] = inputs[f.name].astype(object)
    outcome = validate_frame(inputs, rt.spec, None, inputs=True)
    share = rejected / total_requests if total_requests else 0.0
    s.input_quality = {"reason_codes": outcome.reason_codes, "rejected_share": share, "rejected": rejected, "checks": len(outcome.checks)}
    for r in outcome.reasons:
        s.add("warning", f"input_{r.code}", r.message)
    if share > rt.spec.monitoring.max_rejected_share:
        s.add("warning", "schema_rejected_requests", f"{share:.1%} of requests failed schema validation ({rejected} of {total_requests})")


# -- realized quality ---------------------------------------------------------------------------
def check_realized_quality(s: Summary, rt: Runtime, end: datetime, ref: Reference) -> None:
    """Decay when the realized metric has fallen below the holdout value by more than allowed."""
    s.quality = realized_quality(rt, s.version, end, ref)
    judge_decay(s, rt.spec.monitoring)
    judge_trend(s, quality_history(rt, s.version, end), rt.spec.monitoring)


def check_estimated_quality(s: Summary, spec: Spec, ok: pd.DataFrame, ref: Reference) -> None:
    """CBPE (``domain.performance_estimation``): the window's ROC AUC estimated from its scores alone,
    fitted on the version's holdout predictions; reported in ``s.quality["estimated"]`` (and in the
    champion's drift and decay alerts as the estimated impact), never a verdict of its own: on the
    flights it reads about 0.045 above the realized AUC (docs/signals.md). Pure: monitoring and the
    backtest call it."""
    from include.mlops.domain.performance_estimation import estimate_performance, fit_cbpe

    target = spec.target.name
    if spec.task != "binary_classification":
        s.quality["estimated"] = {"status": "not_applicable", "reason": NO_CBPE}
        return
    if "score" not in ok.columns or target not in ref.holdout.columns or "score" not in ref.holdout.columns:
        return
    try:
        cbpe = fit_cbpe(ref.holdout["score"].to_numpy(), ref.holdout[target].astype(int).to_numpy(), seed=spec.training.random_state)
    except ValueError as exc:  # a holdout with one class: nothing to calibrate on
        s.quality["estimated"] = {"status": "unavailable", "reason": str(exc)}
        return
    auc = estimate_performance(cbpe, ok["score"].to_numpy()).metrics["roc_auc"]
    figures = {"value": auc.value, "lower": auc.lower, "upper": auc.upper, "reference": auc.reference, "change": auc.change}
    finite = {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in figures.items()}
    s.quality["estimated"] = {"method": "cbpe", "metric": "roc_auc", **finite}


#: Why a regressor's window has no estimate without labels.
NO_CBPE = "not applicable to regression: CBPE estimates a classifier's metrics from its calibrated probabilities"


def estimated_impact(s: Summary) -> str:
    """The estimated change of the window's ROC AUC (CBPE) in words, or "" without an estimate."""
    e = s.quality.get("estimated") or {}
    if e.get("value") is None or e.get("change") is None:
        return ""
    return f"estimated roc_auc without labels (CBPE) {e['value']:.3f} ({e['change']:+.3f} vs holdout)"


def quality_history(rt: Runtime, version: str, end: datetime) -> list[float]:
    """The version's realized quality in its earlier windows (its ``monitor`` decisions, each as
    last revised by late labels: :mod:`.revision`), oldest first; NaN where a window had no value.
    Empty when the trend test is off."""
    from include.mlops.steps.monitoring.revision import live_of

    if rt.spec.monitoring.trend_windows == 0:
        return []
    rows = [d for d in rt.store.list_decisions(rt.model_name, "monitor") if str(d.get("version")) == version and d.get("window_end")]
    rows = sorted((d for d in rows if d["window_end"] < end.replace(tzinfo=None)), key=lambda d: d["window_end"])
    revisions = rt.store.latest_window_quality(rt.model_name, version=version)
    return [live_of(d, revisions) for d in rows]


def judge_trend(s: Summary, earlier: list[float], mon: Monitoring) -> None:
    """Slow decay (pure: monitoring and the backtest call it): ``significance.trend_test`` on the
    realized quality of the version's last ``trend_windows`` windows, this one included. Its verdict
    goes in ``s.quality["trend_test"]`` (and from there into the ``performance_degraded`` event)."""
    from include.mlops.domain.significance import trend_test

    live = s.quality.get("live")
    if mon.trend_windows == 0 or live is None or math.isnan(live):
        return
    verdict = trend_test(
        [*earlier, float(live)], last=mon.trend_windows, min_slope=mon.trend_min_slope, direction=_worsening(s.quality["metric"])
    )
    # JSON-safe: the verdict's open bounds (too few windows) are infinite, which PostgreSQL's json refuses
    s.quality["trend_test"] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in verdict.to_dict().items()}
    if verdict.significant:
        way = "falling" if verdict.direction == "decreasing" else "rising"
        s.add(
            "decay",
            "quality_trend",
            f"{s.quality['metric']} {way} over the last {verdict.windows} windows (Sen slope {verdict.sen_slope:+.4f} per window, "
            f"Mann-Kendall p {verdict.p_value:.3g})",
        )


def _worsening(metric: str) -> Literal["decreasing", "increasing"]:
    """The trend that is a decay of ``metric``: falling ROC AUC or R2, rising MAE or RMSE."""
    from include.mlops.domain.tasks import metric_of

    return "decreasing" if metric_of(metric).higher_is_better else "increasing"


def judge_decay(s: Summary, mon: Monitoring) -> None:
    """The decay rule on ``s.quality`` (pure: monitoring and the backtest call it): the live metric
    is worse than the holdout value by more than ``max_quality_drop``, in the metric's direction and
    unit (an error metric such as MAE decays by rising)."""
    from include.mlops.domain.tasks import metric_of

    live, base = s.quality.get("live"), s.quality.get("holdout")
    if live is None or base is None or math.isnan(live):
        return
    if metric_of(s.quality["metric"]).drop(float(live), float(base)) > mon.max_quality_drop:
        s.add(
            "decay",
            "quality_decay",
            f"{s.quality['metric']} {live:.4f} on {s.quality['labelled_rows']} labelled predictions vs {base:.4f} at training",
        )


def realized_quality(rt: Runtime, version: str, end: datetime, ref: Reference) -> dict[str, Any]:
    """Realized quality of ``version`` over the trailing ``quality_days`` of labelled predictions."""
    return quality_of(labelled(rt, version, end), rt.spec, ref.metrics)


def quality_of(df: pd.DataFrame, spec: Spec, holdout_metrics: dict[str, float]) -> dict[str, Any]:
    """Realized quality of labelled predictions (columns ``score``, ``label``) against the holdout
    metrics (pure: monitoring and the backtest call it)."""
    import numpy as np

    from include.mlops.domain.tasks import evaluate, labels

    mon = spec.monitoring
    metric = spec.promotion.metric
    out: dict[str, Any] = {"labelled_rows": len(df), "metric": metric, "days": mon.quality_days, "holdout": holdout_metrics.get(metric)}
    if len(df) < mon.min_labelled_rows:
        out["status"] = "waiting_for_labels"
        return out
    m = evaluate(spec.task, labels(spec.task, df["label"]), df["score"].astype(float).to_numpy())
    out.update(
        status="measured", live=m.get(metric), live_metrics={k: v for k, v in m.items() if not (isinstance(v, float) and np.isnan(v))}
    )
    return out


# -- prediction consistency ---------------------------------------------------------------------
def check_consistency(s: Summary, consistency: dict[str, Any], mon: Monitoring) -> None:
    s.consistency = consistency
    diff = consistency.get("max_abs_diff")
    if diff is not None and diff > mon.probe_tolerance:
        s.add(
            "warning",
            "probe_mismatch",
            f"live and registry scores differ by up to {diff:.3g} on the probe set (environment or serialization skew)",
        )


def probe_consistency(rt: Runtime) -> dict[str, Any]:
    """The probe set through the live serving API vs each answering version's registry artifact."""
    import httpx
    import numpy as np

    from include.mlops.adapters.registry import quiet_model_imports
    from include.mlops.adapters.store import utcnow
    from include.mlops.domain.profiles import probe_frame

    quiet_model_imports()
    probes = probe_frame(rt.spec)
    rows = json.loads(probes.to_json(orient="records"))
    route = "/predict" if rt.entry is None or rt.entry.default else rt.entry.route  # this model's route
    try:
        resp = httpx.post(
            f"{rt.settings.serving_url}{route}",
            json={"rows": rows, "request_id": f"probe-{utcnow():%Y%m%d%H%M%S}"},
            headers=rt.settings.serving_headers(),
            timeout=30.0,
        )
    except httpx.HTTPError as exc:
        return {"status": "serving_unreachable", "error": str(exc)[:300]}
    if resp.status_code != 200:
        return {"status": "serving_error", "http_status": resp.status_code, "body": resp.text[:300]}
    answers = resp.json().get("predictions", [])
    by_version: dict[str, list[tuple[int, float]]] = {}
    for i, a in enumerate(answers):
        by_version.setdefault(str(a.get("model_version")), []).append((i, float(a.get("score", math.nan))))
    worst = 0.0
    for version, pairs in by_version.items():
        idx = [i for i, _ in pairs]
        expected = artifact_probe_scores(rt, version, probes)[idx]
        got = np.array([s for _, s in pairs])
        worst = max(worst, float(np.max(np.abs(expected - got))) if len(got) else 0.0)
    return {"status": "measured", "rows": len(answers), "versions": sorted(by_version), "max_abs_diff": worst}
