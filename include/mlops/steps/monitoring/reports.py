"""Evidently: the window's reports and snapshots, the workspace project and its dashboard.

Each judged window gets an HTML drift report beside its JSON summary, and two or three snapshots
(drift; model and system; realized quality once labels are in) added to the Evidently workspace,
whose project dashboard shows them over time. Every Evidently dataset is described by
:func:`data_definition`, so Evidently tests each column as the loop does.

Evidently embeds the data's categories in the report's HTML (inside ``<script>``) and in its
snapshots, and the current window's categories are whatever clients sent to ``/predict``. So no
raw request string reaches a report: :func:`reportable_categories` keeps only the categories the
reference (training data) or the spec knows, short and plain, and maps everything else to
:data:`UNKNOWN_CATEGORY` before Evidently sees the frames.
"""

from __future__ import annotations

import logging
import numbers
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.spec import Spec
    from include.mlops.runtime import Runtime
    from include.mlops.steps.monitoring.checks import Summary
    from include.mlops.steps.monitoring.reference import Reference

log = logging.getLogger(__name__)

REPORT_SAMPLE_ROWS = 20_000

#: What a category value the reference does not know (or that is not plain text) becomes in a report.
UNKNOWN_CATEGORY = "__unknown__"
#: Longest category value a report shows as itself.
MAX_CATEGORY_CHARS = 64
#: A category value a report may show as itself: printable, no markup or quoting characters.
_PLAIN = re.compile(r"[^<>&\"'`\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")


def _plain(value: object) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_CATEGORY_CHARS and _PLAIN.fullmatch(value) is not None
    return isinstance(value, numbers.Real)  # numbers (numpy's too) and flags carry no markup


def reportable_categories(spec: Spec, cur: pd.DataFrame, ref: pd.DataFrame) -> None:
    """Make the categorical columns of ``cur`` and ``ref`` safe to put in a report, in place.

    A value stays itself only when the reference sample or the spec's ``categories`` list holds it
    and it is plain (at most :data:`MAX_CATEGORY_CHARS` characters, no markup, quoting or control
    characters); any other value, in either frame, becomes :data:`UNKNOWN_CATEGORY`. Missing values
    stay missing. Categories clients invent all count as one unknown category in the report's drift
    (the loop's own drift decision is computed elsewhere, on the raw values)."""
    for f in spec.features:
        if f.type != "categorical" or f.name not in cur.columns or f.name not in ref.columns:
            continue
        known = {v for v in [*ref[f.name].dropna().unique(), *(f.categories or [])] if _plain(v)}
        for df in (cur, ref):
            col = df[f.name]
            df[f.name] = col.where(col.isna() | col.isin(known), UNKNOWN_CATEGORY)


def data_definition(columns: Sequence[str], spec: Spec | None = None, *, classification: tuple[str, str] | None = None) -> Any:
    """Evidently ``DataDefinition`` of ``columns``: categorical when the spec says so, else numeric.

    With a ``spec``, every column's kind is given, so Evidently's reports test what we test (it
    otherwise infers kinds from dtypes: an integer column with <= 10 values becomes categorical,
    which changes its choice of test); without one, the columns are numeric and any other column
    of the data is left to Evidently. ``classification``: ``(target, probability column)`` of a
    binary classifier.
    """
    from evidently import BinaryClassification, DataDefinition

    cat = {f.name for f in spec.features if f.type == "categorical"} if spec is not None else set()
    return DataDefinition(
        numerical_columns=[c for c in columns if c not in cat],
        categorical_columns=[c for c in columns if c in cat] if spec is not None else None,
        classification=[BinaryClassification(target=classification[0], prediction_probas=classification[1])] if classification else None,
    )


def drift_report(spec: Spec, cur: pd.DataFrame, ref: pd.DataFrame, *, extra_numeric: tuple[str, ...] = (), **run: Any) -> Any:
    """Evidently's drift snapshot of ``cur`` against ``ref`` (both holding the spec's features and
    ``extra_numeric``; their categorical columns are made plain objects in place): the share of
    drifted columns and each judged column's drift (score, test, the two distributions). These are
    what ``DataDriftPreset`` computes, without its summary table, which computes every column's
    drift twice more and draws every plot again (half of the report's CPU on a weekly window).
    ``run`` goes to ``Report.run`` (timestamp, metadata, tags). Categories neither the reference
    nor the spec knows are reported as :data:`UNKNOWN_CATEGORY` (:func:`reportable_categories`)."""
    from evidently import Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    cats = [f.name for f in spec.features if f.type == "categorical"]
    for df in (cur, ref):
        for c in cats:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    reportable_categories(spec, cur, ref)
    dd = data_definition([*spec.feature_names, *extra_numeric], spec)
    # the columns monitoring judges (``drift_exclude``, e.g. month in a weekly window, is not)
    judged = [c for c in [*spec.feature_names, *extra_numeric] if c not in spec.monitoring.drift_exclude]
    metrics: list[Any] = [DriftedColumnsCount(columns=judged), *[ValueDrift(column=c) for c in judged]]
    return Report(metrics).run(Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd), **run)


def evidently_snapshots(rt: Runtime, s: Summary, scored: pd.DataFrame, ref: Reference, labelled: pd.DataFrame | None) -> list[Any]:
    """Two snapshots per window: drift (features + score vs the reference) and model/system; a
    third, realized quality, once enough labelled predictions of both classes are in."""
    import numpy as np
    import pandas as pd
    from evidently import Dataset, Report
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
        Dataset.from_pandas(sys_df, data_definition=data_definition(["latency_ms", "score"])),
        None,
        timestamp=when,
        metadata=meta,
        tags=[f"v{s.version}", s.role, "system"],
    )
    snaps = [drift_snap, model_snap]
    if rt.spec.task == "regression":
        return snaps + _regression_quality(rt, labelled, when=when, metadata=meta, tags=[f"v{s.version}", s.role, "quality"])
    if labelled is not None and len(labelled) >= rt.spec.monitoring.min_labelled_rows and labelled["label"].nunique() == 2:
        qdf = labelled[["label", "score"]].astype({"label": int, "score": float})
        qdd = data_definition(["score"], classification=("label", "score"))
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


def _regression_quality(rt: Runtime, labelled: pd.DataFrame | None, *, when: Any, metadata: Any, tags: list[str]) -> list[Any]:
    """A regressor's realized quality snapshot (Evidently's MAE and RMSE of the predicted values
    against the outcomes), once the window has enough labelled rows."""
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.metrics import MAE, RMSE

    if labelled is None or len(labelled) < rt.spec.monitoring.min_labelled_rows:
        return []
    qdf = labelled[["label", "score"]].astype(float)
    qdd = DataDefinition(numerical_columns=["label", "score"], regression=[Regression(target="label", prediction="score")])
    return [Report([MAE(), RMSE()]).run(Dataset.from_pandas(qdf, data_definition=qdd), None, timestamp=when, metadata=metadata, tags=tags)]


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
