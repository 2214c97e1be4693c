"""Every asset of the loop, defined once per model. Producers declare them as ``outlets``,
consumers as ``schedule``, so the Airflow asset graph *is* the loop.

:func:`loop_assets` gives one model's set (:class:`LoopAssets`). The default model keeps the names
and URIs a single-model deployment always had (``model_deployed``, ``mlops://loop/model_deployed``);
every other model's are prefixed with its name (``<model>.model_deployed``,
``mlops://loop/<model>/model_deployed``), so one model's events never start another model's DAGs.
Code that announces an event by name (the demo's replay) builds it as ``entry.prefix + <asset>``.

Imported by DAG files at parse time; nothing runs at import, and :func:`loop_assets` reads the
settings (the lake folder) only when it is not given the lake.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.providers.standard.triggers.file import DirectoryFileDeleteTrigger
from airflow.sdk import Asset, AssetWatcher

from include.mlops.adapters.lake import READY_MARKER, landing_dir
from include.mlops.settings import get_settings

if TYPE_CHECKING:
    from include.mlops.catalog import ModelEntry

#: How often the triggerer looks for the landing marker (seconds).
LANDING_POKE_SECONDS = 2.0


@dataclass(frozen=True)
class LoopAssets:
    """One model's assets; each attribute is named after its asset's unprefixed name."""

    #: what the asset names start with ("" for the default model, else ``"<model>."``)
    prefix: str
    #: New label batches in the model's landing folder. The watcher fires when a producer touches
    #: ``<landing>/_READY`` (and deletes the marker, never a batch).
    label_batches_landed: Asset
    training_pool: Asset
    ground_truth: Asset
    batch_quarantined: Asset
    retrain_requested: Asset
    candidate_registered: Asset
    model_deployed: Asset
    candidate_refused: Asset
    early_window_passed: Asset
    model_promoted: Asset
    model_rolled_back: Asset
    #: Announced by whoever knows a window of traffic is complete (the demo's replay, after a day's
    #: requests): POST /api/v2/assets/events with extra {"window_start": ..., "window_end": ...}.
    inference_window_closed: Asset
    drift_detected: Asset
    performance_degraded: Asset

    def step_name(self, asset_name: str) -> str:
        """An asset's name without the model prefix (``second.drift_detected`` -> ``drift_detected``):
        what the steps call the asset that carried an event."""
        return asset_name.removeprefix(self.prefix) if self.prefix else asset_name


_GROUPS = {
    "data": ("training_pool", "ground_truth", "batch_quarantined"),
    "model": (
        "retrain_requested",
        "candidate_registered",
        "model_deployed",
        "candidate_refused",
        "early_window_passed",
        "model_promoted",
        "model_rolled_back",
    ),
    "monitoring": ("inference_window_closed", "drift_detected", "performance_degraded"),
}


def _assets(prefix: str, uri_base: str, landing: Path) -> LoopAssets:
    landed = Asset(
        name=f"{prefix}label_batches_landed",
        uri=f"file://{landing}",
        group="data",
        watchers=[
            AssetWatcher(
                name=f"{prefix}landing_ready_marker",
                trigger=DirectoryFileDeleteTrigger(directory=str(landing), filename=READY_MARKER, poke_interval=LANDING_POKE_SECONDS),
            )
        ],
    )
    named = {
        name: Asset(name=f"{prefix}{name}", uri=f"{uri_base}/{name}", group=group) for group, names in _GROUPS.items() for name in names
    }
    return LoopAssets(prefix=prefix, label_batches_landed=landed, **named)


def loop_assets(entry: ModelEntry | None = None, lake_root: Path | None = None) -> LoopAssets:
    """The assets of ``entry``'s loop (``None``: the default model's); its landing watcher watches
    ``entry.landing(lake_root)`` (default: the settings' lake)."""
    lake = lake_root or get_settings().lake
    if entry is None or entry.default:
        return _assets("", "mlops://loop", landing_dir(lake) if entry is None else entry.landing(lake))
    return _assets(entry.prefix, f"mlops://loop/{entry.name}", entry.landing(lake))


def monitoring_schedule(entry: ModelEntry | None = None) -> str:
    """monitor_model's cron, from the model's spec (``None``: the default model's; a light YAML read
    at parse time; a broken spec shows as the DAG's import error, which is where a person will look)."""
    if entry is not None:
        return entry.spec.monitoring.schedule
    from include.mlops.domain.spec import load_spec

    return load_spec(get_settings().spec_path).monitoring.schedule
