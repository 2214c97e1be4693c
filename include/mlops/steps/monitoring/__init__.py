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

One module per step:

* :mod:`.export`: the columnar copy of the inference log, a window of it, labelled predictions;
* :mod:`.reference`: each version's training-time reference and probe scores, cached in the lake;
* :mod:`.checks`: every check of one version on one window, in a :class:`Summary`;
* :mod:`.reports`: Evidently reports, snapshots, the workspace project and its dashboard;
* :mod:`.tracking`: the version's MLflow monitoring run;
* :mod:`.run`: the pass (window, versions, decision records, alerts) and the events it emits.
"""

from __future__ import annotations

from include.mlops.steps.monitoring.checks import Summary, monitor_version, probe_consistency
from include.mlops.steps.monitoring.export import (
    EXPORT_KEY,
    LOG_COLUMNS,
    PROBE_PREFIX,
    export_inference,
    inference_dir,
    labelled,
    latest_event_day,
    read_window,
)
from include.mlops.steps.monitoring.reference import Reference, artifact_probe_scores, load_reference
from include.mlops.steps.monitoring.reports import (
    REPORT_SAMPLE_ROWS,
    data_definition,
    drift_report,
    ensure_project,
    evidently_snapshots,
    publish_evidently,
)
from include.mlops.steps.monitoring.run import (
    MonitoringError,
    already_judged,
    choose_window,
    event_extra,
    run_monitoring,
    run_windows,
    serving_roles,
)
from include.mlops.steps.monitoring.tracking import log_to_mlflow

__all__ = [
    "EXPORT_KEY",
    "LOG_COLUMNS",
    "PROBE_PREFIX",
    "REPORT_SAMPLE_ROWS",
    "MonitoringError",
    "Reference",
    "Summary",
    "already_judged",
    "artifact_probe_scores",
    "choose_window",
    "data_definition",
    "drift_report",
    "ensure_project",
    "event_extra",
    "evidently_snapshots",
    "export_inference",
    "inference_dir",
    "labelled",
    "latest_event_day",
    "load_reference",
    "log_to_mlflow",
    "monitor_version",
    "probe_consistency",
    "publish_evidently",
    "read_window",
    "run_monitoring",
    "run_windows",
    "serving_roles",
]
