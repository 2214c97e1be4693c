"""Continuous monitoring: is the model still behaving the way we expect?

One pass (``monitor_model``) looks at a window of live traffic in event time, for the champion and
the challenger, against the reference stored with each version at training time:

* data drift per feature and dataset drift (:mod:`include.mlops.domain.drift`, exact fast checks on the
  whole window against precomputed reference statistics), prediction drift (score and class);
* input quality: the spec's Great Expectations suite on the window's inputs, and the share of
  requests the serving API rejected;
* realized quality once labels have arrived (the version's labelled predictions over the trailing
  ``quality_days``), against the holdout value at training time;
* prediction consistency: the spec's probe set scored by the live serving API and by the registry
  artifact must agree;
* system stability: error rate and latency.

Each pass writes an Evidently HTML report and a JSON summary keyed by version and window, adds a
snapshot to the Evidently workspace (dashboards over time), logs the summary to the version's
MLflow monitoring run, and records a decision: healthy, warning, drift, decay or
insufficient_data, with reason codes.

The inference log lives in the ops store (the system of record, joined to ground truth); for
analysis it is exported incrementally to a columnar copy, ``<lake>/inference/<model>/day=*/``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select

from include.mlops.adapters.lake import atomic_write_bytes, atomic_write_text
from include.mlops.adapters.store import governance_state, ground_truth, inference_log, utcnow

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.spec import Spec
    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)

EXPORT_KEY = "inference_export_last_id"
PROBE_PREFIX = "probe-"
LOG_COLUMNS = [
    "id",
    "request_id",
    "entity_id",
    "model_version",
    "route",
    "event_time",
    "score",
    "prediction",
    "latency_ms",
    "status",
    "created_at",
]


class MonitoringError(RuntimeError):
    """A monitoring pass that could not complete (e.g. MLflow unreachable); nothing was recorded."""


# -- the columnar copy of the inference log -------------------------------------------------------
def _state_get(rt: Runtime, key: str, default: Any) -> Any:
    with rt.store.engine.connect() as conn:
        row = conn.execute(
            select(governance_state.c.value).where(governance_state.c.model_name == rt.model_name, governance_state.c.key == key)
        ).first()
    return row[0] if row else default


def _state_set(rt: Runtime, key: str, value: Any) -> None:
    from sqlalchemy import delete, insert

    with rt.store.begin() as conn:
        conn.execute(delete(governance_state).where(governance_state.c.model_name == rt.model_name, governance_state.c.key == key))
        conn.execute(insert(governance_state).values(model_name=rt.model_name, key=key, value=value, updated_at=utcnow()))


def inference_dir(rt: Runtime) -> Path:
    return rt.lake.root / "inference" / rt.model_name


def export_inference(rt: Runtime, chunk: int = 100_000) -> dict[str, Any]:
    """Append inference-log rows not exported yet to ``<lake>/inference/<model>/day=<event day>/``.

    Incremental by row id; a part file is named by its id range, so a retry after a crash rewrites
    the same file instead of adding a duplicate, and the high-water mark moves only after the write.
    """
    import pandas as pd

    last = int(_state_get(rt, EXPORT_KEY, 0))
    written, files = 0, 0
    features = rt.spec.feature_names
    while True:
        cols = [getattr(inference_log.c, c) for c in LOG_COLUMNS] + [inference_log.c.features]
        with rt.store.engine.connect() as conn:
            rows = conn.execute(
                select(*cols)
                .where(inference_log.c.model_name == rt.model_name, inference_log.c.id > last)
                .order_by(inference_log.c.id)
                .limit(chunk)
            ).all()
        if not rows:
            break
        df = pd.DataFrame(rows, columns=[*LOG_COLUMNS, "features"])
        feats = pd.DataFrame([(f if isinstance(f, dict) else json.loads(f) if f else {}) for f in df.pop("features")]).reindex(
            columns=features
        )
        df = pd.concat([df.reset_index(drop=True), feats.reset_index(drop=True)], axis=1)
        df["event_time"] = pd.to_datetime(df["event_time"]).fillna(pd.to_datetime(df["created_at"]))
        df["day"] = df["event_time"].dt.strftime("%Y-%m-%d")
        first, high = int(df["id"].iloc[0]), int(df["id"].iloc[-1])
        # the consistency probe's rows carry wall-clock time: they are no window's traffic (and
        # would make "today" the latest event day of a replayed year)
        df = df[~df["entity_id"].fillna("").astype(str).str.startswith(PROBE_PREFIX)]
        for day, part in df.groupby("day"):
            path = inference_dir(rt) / f"day={day}" / f"part-{first:012d}-{high:012d}.parquet"
            import io

            buf = io.BytesIO()
            part.drop(columns=["day"]).to_parquet(buf, index=False)
            atomic_write_bytes(path, buf.getvalue())
            files += 1
        written += len(df)
        last = high
        _state_set(rt, EXPORT_KEY, last)
    return {"rows": written, "files": files, "last_id": last}


def read_window(rt: Runtime, start: datetime, end: datetime, versions: list[str] | None = None) -> pd.DataFrame:
    """Exported inference rows with event time in [start, end) (probe traffic excluded)."""
    import pandas as pd

    from include.mlops.domain.drift import read_window as read_parts
    from include.mlops.domain.drift import window_files

    last = (end - timedelta(microseconds=1)).date()
    if end <= start or not window_files(rt.lake.root, rt.model_name, start.date(), last):
        return pd.DataFrame(columns=[*LOG_COLUMNS, *rt.spec.feature_names])
    # the parts of a day can differ in schema (a column all null in one part): read_parts unifies them
    df = read_parts(rt.lake.root, rt.model_name, start.date(), last)
    df = df[(df["event_time"] >= start) & (df["event_time"] < end)]
    df = df[~df["entity_id"].fillna("").astype(str).str.startswith(PROBE_PREFIX)]
    if versions is not None:
        df = df[df["model_version"].isin(versions) | (df["status"] == "rejected")]
    return df.reset_index(drop=True)


def latest_event_day(rt: Runtime) -> date | None:
    days = sorted(p.name.removeprefix("day=") for p in inference_dir(rt).glob("day=*"))
    return date.fromisoformat(days[-1]) if days else None


# -- references -------------------------------------------------------------------------------
@dataclass
class Reference:
    version: str
    run_id: str
    stats: dict[str, Any]  # include.mlops.domain.drift.reference_stats of the training inputs + holdout scores
    sample: pd.DataFrame
    holdout: pd.DataFrame
    metrics: dict[str, float]


def load_reference(rt: Runtime, version: str) -> Reference:
    """The reference stored with ``version`` at training time, cached under the lake."""
    import mlflow
    import pandas as pd

    from include.mlops.adapters.registry import mlflow_client
    from include.mlops.domain import drift

    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    mv = client.get_model_version(rt.model_name, version)
    run_id = str(mv.run_id)
    cache = rt.lake.root / "reference" / rt.model_name / f"v{version}"
    if not (cache / "complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("sample.parquet", "holdout_predictions.parquet"):
            src = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"reference/{name}")
            (cache / name).write_bytes(Path(src).read_bytes())
        try:
            src = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="reference/drift_stats.json")
            stats = json.loads(Path(src).read_text())
        except Exception:  # a version logged without drift stats: compute them once from its reference sample
            holdout = pd.read_parquet(cache / "holdout_predictions.parquet")
            stats = drift.reference_stats(pd.read_parquet(cache / "sample.parquet"), rt.spec, score=holdout["score"])
        (cache / "drift_stats.json").write_text(json.dumps(stats))
        run = client.get_run(run_id)
        (cache / "metrics.json").write_text(json.dumps(run.data.metrics))
        (cache / "complete").write_text("ok")
    stats = json.loads((cache / "drift_stats.json").read_text())
    return Reference(
        version,
        run_id,
        stats,
        pd.read_parquet(cache / "sample.parquet"),
        pd.read_parquet(cache / "holdout_predictions.parquet"),
        json.loads((cache / "metrics.json").read_text()),
    )


# -- one pass ---------------------------------------------------------------------------------
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


def _rejected_between(rt: Runtime, frame: pd.DataFrame) -> int:
    served = frame[frame["status"] != "rejected"]
    if served.empty:
        return 0
    lo, hi = served["created_at"].min(), served["created_at"].max()
    with rt.store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(inference_log)
                .where(
                    inference_log.c.model_name == rt.model_name,
                    inference_log.c.status == "rejected",
                    inference_log.c.created_at >= lo.to_pydatetime(),
                    inference_log.c.created_at <= hi.to_pydatetime(),
                )
            ).scalar_one()
        )


def _input_quality(rt: Runtime, frame: pd.DataFrame, rejected: int, total_requests: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    from include.mlops.domain.validation import validate_frame

    issues: list[tuple[str, str]] = []
    inputs = frame[rt.spec.feature_names].copy()
    for f in rt.spec.features:  # the export stores what arrived; text columns as object for GX
        if f.type == "categorical":
            inputs[f.name] = inputs[f.name].astype(object)
    outcome = validate_frame(inputs, rt.spec, None, inputs=True)
    for r in outcome.reasons:
        issues.append((f"input_{r.code}", r.message))
    share = rejected / total_requests if total_requests else 0.0
    if share > rt.spec.monitoring.max_rejected_share:
        issues.append(("schema_rejected_requests", f"{share:.1%} of requests failed schema validation ({rejected} of {total_requests})"))
    return {"reason_codes": outcome.reason_codes, "rejected_share": share, "rejected": rejected, "checks": len(outcome.checks)}, issues


def _quality(rt: Runtime, version: str, end: datetime, ref: Reference) -> dict[str, Any]:
    """Realized quality of ``version`` over the trailing ``quality_days`` of labelled predictions."""
    import numpy as np

    from include.mlops.steps.training import classification_metrics

    mon = rt.spec.monitoring
    df = _labelled(rt, version, end)
    metric = rt.spec.promotion.metric
    out: dict[str, Any] = {"labelled_rows": len(df), "metric": metric, "days": mon.quality_days, "holdout": ref.metrics.get(metric)}
    if len(df) < mon.min_labelled_rows:
        out["status"] = "waiting_for_labels"
        return out
    m = classification_metrics(df["label"].astype(int).to_numpy(), df["score"].astype(float).to_numpy())
    out.update(
        status="measured", live=m.get(metric), live_metrics={k: v for k, v in m.items() if not (isinstance(v, float) and np.isnan(v))}
    )
    return out


def _consistency(rt: Runtime) -> dict[str, Any]:
    """The probe set through the live serving API vs each answering version's registry artifact."""
    import httpx
    import numpy as np

    from include.mlops.adapters.registry import quiet_model_imports
    from include.mlops.domain.profiles import probe_frame

    quiet_model_imports()
    probes = probe_frame(rt.spec)
    rows = json.loads(probes.to_json(orient="records"))
    try:
        resp = httpx.post(
            f"{rt.settings.serving_url}/predict",
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
        expected = _artifact_probe_scores(rt, version, probes)[idx]
        got = np.array([s for _, s in pairs])
        worst = max(worst, float(np.max(np.abs(expected - got))) if len(got) else 0.0)
    return {"status": "measured", "rows": len(answers), "versions": sorted(by_version), "max_abs_diff": worst}


def _artifact_probe_scores(rt: Runtime, version: str, probes: pd.DataFrame) -> Any:
    """The probe set scored by ``version``'s registry artifact: computed by loading the artifact the
    first time, then kept beside the version's cached reference (a version's artifact never
    changes; loading it for every window was a second of each monitoring pass)."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd

    key = int(pd.util.hash_pandas_object(probes[rt.spec.feature_names], index=False).sum()) & 0xFFFFFFFFFFFF
    cache = rt.lake.root / "reference" / rt.model_name / f"v{version}" / f"probe_scores-{key:012x}.npy"
    if cache.exists():
        return np.load(cache)
    model = mlflow.sklearn.load_model(f"models:/{rt.model_name}/{version}")
    scores = np.asarray(model.predict_proba(probes[rt.spec.feature_names])[:, 1], dtype=float)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, scores)
    tmp.replace(cache)
    return scores


def monitor_version(
    rt: Runtime, version: str, role: str, window: tuple[datetime, datetime], frame: pd.DataFrame, *, consistency: dict[str, Any] | None
) -> tuple[Summary, pd.DataFrame]:
    """Every check for one version on one window; returns the summary and its scored rows."""
    import numpy as np

    from include.mlops.domain import drift

    mon = rt.spec.monitoring
    start, end = window
    mine = frame[(frame["model_version"] == version) & frame["status"].isin(["ok", "error"])]
    routes = ["champion"] if role == "champion" else ["challenger", "shadow"]
    mine = mine[mine["route"].isin(routes)]
    s = Summary(rt.model_name, version, role, start.isoformat(), end.isoformat(), rows=len(mine))
    ok = mine[mine["status"] == "ok"]
    if len(mine) < mon.min_rows:
        s.outcome = "insufficient_data"
        s.reason_codes.append("too_few_rows")
        s.reasons.append(f"{len(mine)} scored rows in the window; at least {mon.min_rows} are needed to judge drift")
        return s, ok
    ref = load_reference(rt, version)

    # system stability
    errors = int((mine["status"] == "error").sum())
    p95 = float(np.percentile(ok["latency_ms"].dropna(), 95)) if ok["latency_ms"].notna().any() else None
    s.system = {"requests": len(mine), "errors": errors, "error_rate": errors / len(mine), "p95_latency_ms": p95}
    if errors / len(mine) > mon.max_error_rate:
        s.add("warning", "error_rate", f"error rate {errors / len(mine):.2%} > {mon.max_error_rate:.2%}")
    if p95 is not None and p95 > mon.max_p95_latency_ms:
        s.add("warning", "latency", f"p95 latency {p95:.0f} ms > {mon.max_p95_latency_ms:.0f} ms")

    # data drift (features) and prediction drift (score), one pass over the window
    overrides: dict[str, dict[str, Any]] = {k: v.model_dump(exclude_none=True) for k, v in mon.drift_overrides.items()}
    overrides.setdefault("score", {"threshold": mon.score_drift_threshold})
    current = ok[[*rt.spec.feature_names, "score"]].copy()
    current["score"] = current["score"].astype(float)
    results = drift.column_drift(current, ref.stats, rt.spec, overrides)
    by_col = {r.column: r for r in results}
    feature_results = [r for r in results if r.column in rt.spec.feature_names and r.column not in mon.drift_exclude]
    ds = drift.dataset_drift(feature_results, share=mon.dataset_drift_share)
    s.drift = {
        "share": ds.share_drifted,
        "drifted": list(ds.drifted_names),
        "undefined": list(ds.undefined_names),
        "dataset_drift": ds.drifted,
        "columns": {r.column: _column_summary(r) for r in feature_results},
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
    sr = by_col.get("score")
    s.prediction = {
        "score_method": sr.method if sr else None,
        "score_drift": _num(sr.score) if sr else None,
        "drifted": bool(sr.drifted) if sr else False,
        "positive_rate": float((ok["score"] >= 0.5).mean()) if len(ok) else None,
        "holdout_positive_rate": float((ref.holdout["score"] >= 0.5).mean()),
        "mean_score": float(ok["score"].mean()) if len(ok) else None,
    }
    if sr is not None and sr.drifted:
        s.add(
            "drift",
            "prediction_drift",
            f"score distribution drifted from the holdout predictions ({sr.method} {_num(sr.score) or 0:.3f} vs {sr.threshold})",
        )

    # input quality (rejected requests have no trustworthy event time: they are counted over the
    # wall-clock span in which this window's traffic was served)
    rejected = _rejected_between(rt, frame)
    s.input_quality, issues = _input_quality(rt, ok, rejected, len(frame[frame["status"] != "rejected"]) + rejected)
    for code, msg in issues:
        s.add("warning", code, msg)

    # realized quality once labels are in
    s.quality = _quality(rt, version, end, ref)
    live, base = s.quality.get("live"), s.quality.get("holdout")
    if live is not None and base is not None and not math.isnan(live) and base - live > mon.max_quality_drop:
        s.add(
            "decay",
            "quality_decay",
            f"{s.quality['metric']} {live:.4f} on {s.quality['labelled_rows']} labelled predictions vs {base:.4f} at training",
        )

    # prediction consistency
    if consistency is not None:
        s.consistency = consistency
        diff = consistency.get("max_abs_diff")
        if diff is not None and diff > mon.probe_tolerance:
            s.add(
                "warning",
                "probe_mismatch",
                f"live and registry scores differ by up to {diff:.3g} on the probe set (environment or serialization skew)",
            )
    if not s.reason_codes:
        s.reason_codes.append("healthy")
        s.reasons.append("no drift, quality and system within bounds")
    return s, ok


def _column_summary(r: Any) -> dict[str, Any]:
    return {
        "method": r.method,
        "score": _num(r.score),
        "threshold": r.threshold,
        "drifted": bool(r.drifted),
        "status": r.status,
        "null_share": r.null_share,
        "unseen": list(r.unseen_categories[:5]),
    }


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


# -- Evidently: reports, workspace snapshots, the dashboard -----------------------------------------
REPORT_SAMPLE_ROWS = 20_000


def drift_report(spec: Spec, cur: pd.DataFrame, ref: pd.DataFrame, *, extra_numeric: tuple[str, ...] = (), **run: Any) -> Any:
    """Evidently's drift snapshot of ``cur`` against ``ref`` (both holding the spec's features and
    ``extra_numeric``; their categorical columns are made plain objects in place): the share of
    drifted columns and each judged column's drift (score, test, the two distributions). These are
    what ``DataDriftPreset`` computes, without its summary table, which computes every column's
    drift twice more and draws every plot again (half of the report's CPU on a weekly window).
    ``run`` goes to ``Report.run`` (timestamp, metadata, tags)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    cats = [f.name for f in spec.features if f.type == "categorical"]
    nums = [f.name for f in spec.features if f.type != "categorical"]
    for df in (cur, ref):
        for c in cats:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    dd = DataDefinition(numerical_columns=[*nums, *extra_numeric], categorical_columns=cats)
    # the columns monitoring judges (``drift_exclude``, e.g. month in a weekly window, is not)
    judged = [c for c in [*spec.feature_names, *extra_numeric] if c not in spec.monitoring.drift_exclude]
    metrics: list[Any] = [DriftedColumnsCount(columns=judged), *[ValueDrift(column=c) for c in judged]]
    return Report(metrics).run(Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd), **run)


def evidently_snapshots(rt: Runtime, s: Summary, scored: pd.DataFrame, ref: Reference, labelled: pd.DataFrame | None) -> list[Any]:
    """Two snapshots per window: drift (features + score vs the reference) and model/system."""
    import numpy as np
    import pandas as pd
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue, QuantileValue, RocAuc, RowCount

    spec = rt.spec
    current = scored.sample(n=min(len(scored), REPORT_SAMPLE_ROWS), random_state=0) if len(scored) > REPORT_SAMPLE_ROWS else scored
    cur = current[[*spec.feature_names, "score"]].copy()
    refdf = ref.sample[spec.feature_names].copy().reset_index(drop=True)
    # Per-column drift compares distributions, so the reference score column is the holdout scores
    # resampled to the reference sample's length (rows are not paired across columns).
    rng = np.random.default_rng(0)
    refdf["score"] = rng.choice(ref.holdout["score"].to_numpy(dtype=float), size=len(refdf), replace=True)
    when = datetime.fromisoformat(s.window_end)
    meta: dict[str, Any] = {"model": s.model, "version": s.version, "role": s.role, "window_start": s.window_start, "outcome": s.outcome}
    tags = [f"v{s.version}", s.role, "drift"]
    drift_snap = drift_report(spec, cur, refdf, extra_numeric=("score",), timestamp=when, metadata=meta, tags=tags)
    sys_df = pd.DataFrame({"latency_ms": current["latency_ms"].astype(float), "score": current["score"].astype(float)})
    metrics: list[Any] = [
        RowCount(),
        MeanValue(column="score"),
        QuantileValue(column="latency_ms", quantile=0.95),
        MeanValue(column="latency_ms"),
    ]
    model_snap = Report(metrics).run(
        Dataset.from_pandas(sys_df, data_definition=DataDefinition(numerical_columns=["latency_ms", "score"])),
        None,
        timestamp=when,
        metadata=meta,
        tags=[f"v{s.version}", s.role, "system"],
    )
    snaps = [drift_snap, model_snap]
    if labelled is not None and len(labelled) >= rt.spec.monitoring.min_labelled_rows and labelled["label"].nunique() == 2:
        qdf = labelled[["label", "score"]].astype({"label": int, "score": float})
        qdd = DataDefinition(numerical_columns=["score"], classification=[BinaryClassification(target="label", prediction_probas="score")])
        snaps.append(
            Report([RocAuc()]).run(
                Dataset.from_pandas(qdf, data_definition=qdd),
                None,
                timestamp=when,
                metadata=meta,
                tags=[f"v{s.version}", s.role, "quality"],
            )
        )
    return snaps


def _workspace(rt: Runtime) -> Any:
    """The running Evidently UI's workspace over its API, else the workspace folder itself."""
    from evidently.ui.workspace import RemoteWorkspace, Workspace

    try:
        ws = RemoteWorkspace(rt.settings.evidently_dag_url)
        ws.list_projects()
        return ws
    except Exception:
        return Workspace.create(str(rt.settings.evidently_workspace))


def ensure_project(ws: Any, rt: Runtime) -> Any:
    """The model's Evidently project, with the loop's dashboard (created once)."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, line_plot_panel, text_panel

    found = ws.search_project(rt.model_name)
    if found:
        return found[0]
    project = ws.create_project(
        rt.model_name, description=f"mlops-loop monitoring of {rt.model_name}: one snapshot set per window and version"
    )
    dash = project.dashboard
    dash.add_panel(text_panel(title=f"{rt.model_name}: drift, quality and performance over time"), tab="Overview")
    dash.add_panel(
        counter_panel(
            title="Share of drifted features (last window)",
            values=[PanelMetric(metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
        ),
        tab="Overview",
    )
    dash.add_panel(
        line_plot_panel(
            title="Share of drifted features",
            values=[PanelMetric(metric="DriftedColumnsCount", metric_labels={"value_type": "share"}, legend="share")],
        ),
        tab="Overview",
    )
    dash.add_panel(
        line_plot_panel(
            title="Prediction drift (score vs holdout)",
            values=[PanelMetric(metric="ValueDrift", metric_labels={"column": "score"}, legend="score")],
        ),
        tab="Overview",
    )
    dash.add_panel(
        line_plot_panel(title="Realized ROC AUC (labelled predictions)", values=[PanelMetric(metric="RocAuc", legend="ROC AUC")]),
        tab="Overview",
    )
    dash.add_panel(
        line_plot_panel(
            title="Latency (ms)",
            values=[
                PanelMetric(metric="QuantileValue", metric_labels={"column": "latency_ms"}, legend="p95"),
                PanelMetric(metric="MeanValue", metric_labels={"column": "latency_ms"}, legend="mean"),
            ],
        ),
        tab="Overview",
    )
    dash.add_panel(line_plot_panel(title="Scored rows per window", values=[PanelMetric(metric="RowCount", legend="rows")]), tab="Overview")
    dash.add_panel(
        line_plot_panel(
            title="Drift score per feature",
            values=[PanelMetric(metric="ValueDrift", metric_labels={"column": f.name}, legend=f.name) for f in rt.spec.features],
        ),
        tab="Features",
    )
    return project


def publish_evidently(rt: Runtime, s: Summary, snaps: list[Any], html: Path) -> str | None:
    """Save the drift report as HTML beside the JSON summary and add every snapshot to the workspace."""
    html.parent.mkdir(parents=True, exist_ok=True)
    snaps[0].save_html(str(html))
    try:
        ws = _workspace(rt)
        project = ensure_project(ws, rt)
        for snap in snaps:
            ws.add_run(project.id, snap, include_data=False)
        return str(project.id)
    except Exception as exc:  # the report is kept either way; the dashboard catches up next window
        log.warning("could not add snapshots to the Evidently workspace: %s", exc)
        return None


# -- MLflow: the version's monitoring run -------------------------------------------------------
def log_to_mlflow(rt: Runtime, s: Summary, summary_path: Path) -> str | None:
    import mlflow

    from include.mlops.adapters.registry import mlflow_client

    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(rt.model_name) or client.get_experiment(client.create_experiment(rt.model_name))
    runs = client.search_runs(
        [exp.experiment_id], f"tags.`mlops.kind` = 'monitoring' and tags.`mlops.version` = '{s.version}'", max_results=1
    )
    if runs:
        run_id = runs[0].info.run_id
    else:
        run = client.create_run(
            exp.experiment_id, run_name=f"monitoring v{s.version}", tags={"mlops.kind": "monitoring", "mlops.version": s.version}
        )
        run_id = run.info.run_id
        client.set_model_version_tag(rt.model_name, s.version, "mlops.monitoring_run_id", run_id)
    end = datetime.fromisoformat(s.window_end)
    step = (end.date() - date(1970, 1, 1)).days
    ts = int(end.timestamp() * 1000)
    values = {
        "rows": s.rows,
        "drift_share": s.drift.get("share"),
        "score_drift": s.prediction.get("score_drift"),
        "positive_rate": s.prediction.get("positive_rate"),
        "error_rate": s.system.get("error_rate"),
        "p95_latency_ms": s.system.get("p95_latency_ms"),
        "rejected_share": s.input_quality.get("rejected_share"),
        f"live_{s.quality.get('metric', 'metric')}": s.quality.get("live"),
        "probe_max_abs_diff": s.consistency.get("max_abs_diff"),
    }
    from mlflow.entities import Metric

    metrics = [Metric(key, v, ts, step) for key, v in ((k, _num(x)) for k, x in values.items()) if v is not None]
    if metrics:  # one request, not one per metric
        client.log_batch(run_id, metrics=metrics)
    client.log_artifact(run_id, str(summary_path), artifact_path=f"windows/{end:%Y-%m-%d}")
    mlflow.set_tracking_uri(rt.settings.mlflow_tracking_uri)
    return str(run_id)


# -- the whole pass -----------------------------------------------------------------------------
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
    subject = f"v{version} {window[0]:%Y-%m-%dT%H:%M}..{window[1]:%Y-%m-%dT%H:%M}"
    with rt.store.engine.connect() as conn:
        from include.mlops.adapters.store import decisions

        n = conn.execute(
            select(func.count())
            .select_from(decisions)
            .where(decisions.c.model_name == rt.model_name, decisions.c.kind == "monitor", decisions.c.subject == subject)
        ).scalar_one()
    return bool(n)


def _labelled(rt: Runtime, version: str, end: datetime) -> pd.DataFrame:
    """Scored rows of ``version`` joined to their labels, over the ``quality_days`` before ``end``
    (probe traffic excluded; one row per entity)."""
    import pandas as pd

    start = end - timedelta(days=rt.spec.monitoring.quality_days)
    with rt.store.engine.connect() as conn:
        rows = conn.execute(
            select(inference_log.c.entity_id, inference_log.c.score, ground_truth.c.label)
            .join(
                ground_truth,
                and_(ground_truth.c.entity_id == inference_log.c.entity_id, ground_truth.c.model_name == inference_log.c.model_name),
            )
            .where(
                inference_log.c.model_name == rt.model_name,
                inference_log.c.model_version == version,
                inference_log.c.status == "ok",
                inference_log.c.route.in_(["champion", "challenger", "shadow"]),
                inference_log.c.event_time >= start,
                inference_log.c.event_time < end,
            )
        ).all()
    df = pd.DataFrame(rows, columns=["entity_id", "score", "label"]).drop_duplicates("entity_id")
    return df[~df["entity_id"].astype(str).str.startswith(PROBE_PREFIX)]


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
    from include.mlops.adapters.registry import CHALLENGER, CHAMPION, aliases, mlflow_client

    exported = export_inference(rt)
    window = choose_window(rt, window_start, window_end)
    if window is None:
        return {"status": "no_traffic", "exported": exported, "summaries": []}
    try:
        current = aliases(mlflow_client(rt.settings.mlflow_tracking_uri), rt.model_name)
    except Exception as exc:
        raise MonitoringError(
            f"MLflow at {rt.settings.mlflow_tracking_uri} is unreachable ({type(exc).__name__}: {exc}); nothing was recorded"
        ) from exc
    frame = read_window(rt, window[0], window[1])
    roles = serving_roles(frame, current)
    log.info("monitoring %s..%s: %s rows in the window, versions %s", window[0], window[1], len(frame), roles or "none serving")
    consistency = None
    if roles:  # once per pass: the serving API and the registry do not change between windows
        if shared is not None and "consistency" in shared:
            consistency = shared["consistency"]
        else:
            consistency = _consistency(rt)
            if shared is not None:
                shared["consistency"] = consistency
    summaries = []
    for version, role in roles:
        if not force and already_judged(rt, version, window):
            log.info("v%s window %s..%s already judged; skipping", version, *window)
            continue
        # Everything that needs MLflow happens before anything is recorded: if MLflow goes away
        # mid-pass the task fails (and retries) without a partial decision or dashboard point.
        s, scored = monitor_version(rt, version, role, window, frame, consistency=consistency)
        out_dir = rt.lake.root / "reports" / rt.model_name / "monitoring" / f"v{version}"
        stem = f"{window[0]:%Y%m%dT%H%M}-{window[1]:%Y%m%dT%H%M}"
        snaps: list[Any] = []
        if s.outcome != "insufficient_data":
            try:
                snaps = evidently_snapshots(rt, s, scored, load_reference(rt, version), _labelled(rt, version, window[1]))
                s.report = str(out_dir / f"{stem}.html")
            except Exception as exc:
                log.warning("Evidently report for v%s failed: %s", version, exc)
        summary_path = out_dir / f"{stem}.json"
        atomic_write_text(summary_path, json.dumps(s.to_dict(), indent=1, default=str))
        try:
            mlflow_run = log_to_mlflow(rt, s, summary_path)
        except Exception as exc:
            raise MonitoringError(f"could not log the summary to MLflow ({type(exc).__name__}: {exc}); nothing was recorded") from exc
        if snaps and s.report:
            publish_evidently(rt, s, snaps, Path(s.report))
        rt.store.record_decision(
            rt.model_name,
            "monitor",
            s.outcome,
            s.reason_codes[0] if s.reason_codes else "healthy",
            subject=f"v{version} {window[0]:%Y-%m-%dT%H:%M}..{window[1]:%Y-%m-%dT%H:%M}",
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
        if role == CHAMPION:
            _alert(rt, s)
        summaries.append(s.to_dict())
    return {
        "status": "judged",
        "window": [window[0].isoformat(), window[1].isoformat()],
        "exported": exported,
        "summaries": summaries,
        "current": {k: current.get(k) for k in (CHAMPION, CHALLENGER)},
    }


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
        raise_alert(rt.store, rt.model_name, severity=severity, kind=kind, dedupe_key=f"{key}:v{v}",  # type: ignore[arg-type]
                    message=f"v{v} {s.outcome} on {s.window_start[:10]}: " + "; ".join(s.reasons)[:800], payload=payload)  # fmt: skip
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
    return {
        "current": results[-1].get("current"),
        "windows": [r.get("window") for r in results],
        "summaries": [s for r in results for s in r.get("summaries", [])],
        "status": ",".join(sorted({r["status"] for r in results})),
    }


def event_extra(result: dict[str, Any], asset: str) -> dict[str, Any] | None:
    """The extra of ``drift_detected`` / ``performance_degraded`` for the champion's latest summary
    showing the condition, or None when no window of this pass showed it."""
    codes = {"drift_detected": {"dataset_drift", "prediction_drift"}, "performance_degraded": {"quality_decay"}}[asset]
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
            }
    return None
