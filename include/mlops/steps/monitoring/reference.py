"""What a version is judged against: the reference stored with it at training time.

A version's reference (its training-input sample, holdout predictions, drift statistics and
metrics) and its registry artifact's scores on the probe set never change: both are fetched from
MLflow once and cached under ``<lake>/reference/<model>/v<version>/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.drift_calibration import DriftCalibration
    from include.mlops.runtime import Runtime

#: The drift calibration stored beside ``drift_stats.json`` (absent for versions trained without one).
CALIBRATION_FILE = "drift_calibration.json"


@dataclass
class Reference:
    version: str
    run_id: str
    stats: dict[str, Any]  # include.mlops.domain.drift.reference_stats of the training inputs + holdout scores
    sample: pd.DataFrame
    holdout: pd.DataFrame
    metrics: dict[str, float]
    #: Per-feature drift thresholds calibrated at training time; None: the spec's fixed rule.
    calibration: DriftCalibration | None = None


def reference_dir(rt: Runtime, version: str) -> Path:
    return rt.lake.root / "reference" / rt.model_name / f"v{version}"


def load_reference(rt: Runtime, version: str) -> Reference:
    """The reference stored with ``version`` at training time, cached under the lake."""
    import mlflow
    import pandas as pd

    from include.mlops.adapters.registry import mlflow_client
    from include.mlops.domain import drift

    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    mv = client.get_model_version(rt.model_name, version)
    run_id = str(mv.run_id)
    cache = reference_dir(rt, version)
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
        _cache_calibration(run_id, cache)
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
        read_calibration(cache / CALIBRATION_FILE),
    )


def _cache_calibration(run_id: str, cache: Path) -> None:
    """The version's drift calibration, if training stored one (a version trained before drift
    calibration existed, or with it off, has none and keeps the fixed thresholds)."""
    import mlflow

    try:
        src = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"reference/{CALIBRATION_FILE}")
    except Exception:
        return
    (cache / CALIBRATION_FILE).write_bytes(Path(src).read_bytes())


def read_calibration(path: Path) -> DriftCalibration | None:
    """The calibration stored at ``path``, or None when there is none."""
    from include.mlops.domain.drift_calibration import DriftCalibration

    if not path.exists():
        return None
    return DriftCalibration.from_dict(json.loads(path.read_text()))


def artifact_probe_scores(rt: Runtime, version: str, probes: pd.DataFrame) -> Any:
    """The probe set scored by ``version``'s registry artifact: computed by loading the artifact the
    first time, then kept beside the version's cached reference (a version's artifact never
    changes; loading it for every window was a second of each monitoring pass)."""
    import numpy as np
    import pandas as pd

    from include.mlops.adapters.model_artifacts import load_model_version

    key = int(pd.util.hash_pandas_object(probes[rt.spec.feature_names], index=False).sum()) & 0xFFFFFFFFFFFF
    cache = reference_dir(rt, version) / f"probe_scores-{key:012x}.npy"
    if cache.exists():
        return np.load(cache)
    model = load_model_version(rt.store, rt.spec, rt.model_name, version, tracking_uri=rt.settings.mlflow_tracking_uri)
    from include.mlops.domain.tasks import scores as task_scores

    scores = np.asarray(task_scores(rt.spec.task, model, probes[rt.spec.feature_names]), dtype=float)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, scores)
    tmp.replace(cache)
    return scores
