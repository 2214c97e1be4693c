from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from include.mlops.adapters.events import TriggerEvents, triggering_events

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class _Asset:  # what Airflow's Asset looks like to the reader: hashable, with a name
    name: str


def _context(mapping):
    return {"triggering_asset_events": mapping}


def test_a_manual_run_has_no_events():
    assert len(triggering_events({})) == 0
    assert len(triggering_events(_context(None))) == 0
    assert triggering_events({}).first("version") is None


def test_events_keep_their_asset_and_order_and_the_first_value_wins():
    drift = _Asset("drift_detected")
    decay = _Asset("performance_degraded")
    ctx = _context(
        {
            drift: [SimpleNamespace(extra={"version": "", "reasons": ["a"]}), SimpleNamespace(extra={"version": "3"})],
            decay: [SimpleNamespace(extra=None), SimpleNamespace(extra={"version": "4"})],
        }
    )
    events = triggering_events(ctx)
    assert [e.asset for e in events] == ["drift_detected", "drift_detected", "performance_degraded", "performance_degraded"]
    assert events.first("version") == "3"  # the empty string does not count as a value
    assert events.extras()[2] == {}
    assert isinstance(events, TriggerEvents)


def test_an_asset_without_a_name_is_named_by_its_string():
    assert [e.asset for e in triggering_events(_context({"uri://x": [SimpleNamespace(extra={})]}))] == ["uri://x"]
