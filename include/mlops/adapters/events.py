"""The asset events that started a DAG run, as plain values.

Airflow hands a task ``context["triggering_asset_events"]``: a mapping of asset to the events
received since the run before. Every asset-triggered DAG of the loop reads it the same way, through
:func:`triggering_events`, and then asks what it needs: the first version named, every window in
order, or the events one by one with the asset that carried them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TriggerEvent:
    """One asset event: the asset's name and the event's extra (a JSON-able dict)."""

    asset: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TriggerEvents:
    """The events that started a run, oldest first (empty for a manual or scheduled run)."""

    events: tuple[TriggerEvent, ...] = ()

    def __iter__(self) -> Any:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def first(self, key: str) -> Any:
        """The value of ``key`` in the first event that carries a non-empty one, else None."""
        for event in self.events:
            value = event.extra.get(key)
            if value not in (None, ""):
                return value
        return None

    def extras(self) -> list[dict[str, Any]]:
        return [dict(e.extra) for e in self.events]


def triggering_events(context: Mapping[str, Any]) -> TriggerEvents:
    """Read ``triggering_asset_events`` from a task's context (Airflow 3: asset -> list of events)."""
    found: list[TriggerEvent] = []
    raw: Mapping[Any, Iterable[Any]] = context.get("triggering_asset_events") or {}
    for asset, events in raw.items():
        name = str(getattr(asset, "name", None) or asset)
        found.extend(TriggerEvent(name, dict(getattr(event, "extra", None) or {})) for event in events)
    return TriggerEvents(tuple(found))
