"""MLflow: each version's monitoring run, one metric point per judged window.

The run (tagged ``mlops.kind=monitoring`` and the version, linked from the model version's
``mlops.monitoring_run_id`` tag) gets the window's headline numbers, stepped by the window's end
day, and its JSON summary as an artifact under ``windows/<day>/``.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from include.mlops.steps.monitoring.checks import number_or_none

if TYPE_CHECKING:
    from include.mlops.runtime import Runtime
    from include.mlops.steps.monitoring.checks import Summary


def log_to_mlflow(rt: Runtime, s: Summary, summary_path: Path) -> str | None:
    """Log the window's numbers and its summary file to the version's monitoring run (created the
    first time); returns the run id."""
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

    metrics = [Metric(key, v, ts, step) for key, v in ((k, number_or_none(x)) for k, x in values.items()) if v is not None]
    if metrics:  # one request, not one per metric
        client.log_batch(run_id, metrics=metrics)
    client.log_artifact(run_id, str(summary_path), artifact_path=f"windows/{end:%Y-%m-%d}")
    mlflow.set_tracking_uri(rt.settings.mlflow_tracking_uri)
    return str(run_id)
