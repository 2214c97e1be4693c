"""Every asset of the loop, defined once. Producers declare them as ``outlets``, consumers as
``schedule``, so the Airflow asset graph *is* the loop.

Imported by DAG files at parse time: it reads two settings (the lake folder) and nothing else.
"""

from __future__ import annotations

from airflow.providers.standard.triggers.file import DirectoryFileDeleteTrigger
from airflow.sdk import Asset, AssetWatcher

from include.mlops.adapters.lake import READY_MARKER, landing_dir
from include.mlops.settings import get_settings

#: How often the triggerer looks for the landing marker (seconds).
LANDING_POKE_SECONDS = 2.0

_LANDING = landing_dir(get_settings().lake)

#: New label batches in the landing folder. The watcher fires when a producer touches
#: ``<landing>/_READY`` (and deletes the marker, never a batch).
LABEL_BATCHES_LANDED = Asset(
    name="label_batches_landed",
    uri=f"file://{_LANDING}",
    group="data",
    watchers=[
        AssetWatcher(
            name="landing_ready_marker",
            trigger=DirectoryFileDeleteTrigger(directory=str(_LANDING), filename=READY_MARKER, poke_interval=LANDING_POKE_SECONDS),
        )
    ],
)
TRAINING_POOL = Asset(name="training_pool", uri="mlops://loop/training_pool", group="data")
GROUND_TRUTH = Asset(name="ground_truth", uri="mlops://loop/ground_truth", group="data")
BATCH_QUARANTINED = Asset(name="batch_quarantined", uri="mlops://loop/batch_quarantined", group="data")
RETRAIN_REQUESTED = Asset(name="retrain_requested", uri="mlops://loop/retrain_requested", group="model")
CANDIDATE_REGISTERED = Asset(name="candidate_registered", uri="mlops://loop/candidate_registered", group="model")
MODEL_DEPLOYED = Asset(name="model_deployed", uri="mlops://loop/model_deployed", group="model")
CANDIDATE_REFUSED = Asset(name="candidate_refused", uri="mlops://loop/candidate_refused", group="model")
EARLY_WINDOW_PASSED = Asset(name="early_window_passed", uri="mlops://loop/early_window_passed", group="model")
MODEL_PROMOTED = Asset(name="model_promoted", uri="mlops://loop/model_promoted", group="model")
MODEL_ROLLED_BACK = Asset(name="model_rolled_back", uri="mlops://loop/model_rolled_back", group="model")
#: Announced by whoever knows a window of traffic is complete (the demo's replay, after a day's
#: requests): POST /api/v2/assets/events with extra {"window_start": ..., "window_end": ...}.
INFERENCE_WINDOW_CLOSED = Asset(name="inference_window_closed", uri="mlops://loop/inference_window_closed", group="monitoring")
DRIFT_DETECTED = Asset(name="drift_detected", uri="mlops://loop/drift_detected", group="monitoring")
PERFORMANCE_DEGRADED = Asset(name="performance_degraded", uri="mlops://loop/performance_degraded", group="monitoring")


def monitoring_schedule() -> str:
    """monitor_model's cron, from the spec (a light YAML read at parse time; a broken spec shows as
    the DAG's import error, which is where a person will look)."""
    from include.mlops.domain.spec import load_spec

    return load_spec(get_settings().spec_path).monitoring.schedule
