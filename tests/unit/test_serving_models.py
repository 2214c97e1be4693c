"""Hot swap rules of the model manager: what serves when the registry changes or a load fails."""

from __future__ import annotations

import pytest

from include.mlops.adapters.registry import ServingConfig
from include.mlops.serving.metrics import ServingMetrics
from include.mlops.serving.models import ModelManager

pytestmark = pytest.mark.unit


class Registry:
    """What the registry says (the config function) and which versions can be loaded."""

    def __init__(self):
        self.config = ServingConfig("1", None, None, 0.2)
        self.broken: set[str] = set()
        self.loads: list[str] = []
        self.down = False

    def read(self) -> ServingConfig:
        if self.down:
            raise ConnectionError("registry unreachable")
        return self.config

    def load(self, version: str) -> object:
        self.loads.append(version)
        if version in self.broken:
            raise OSError(f"artifact of version {version} is corrupt")
        return {"model": version}


@pytest.fixture
def reg():
    return Registry()


@pytest.fixture
def manager(reg):
    return ModelManager("m", reg.read, loader=reg.load, metrics=ServingMetrics(), retry_failed_seconds=3600)


def test_loads_the_champion_and_swaps_atomically_on_an_alias_move(reg, manager):
    first = manager.poll()
    assert first.ready and first.champion.version == "1" and first.challenger is None
    reg.config = ServingConfig("2", None, None, 0.2)
    second = manager.poll()
    assert second.champion.version == "2" and manager.state is second
    assert first.champion.version == "1"  # a batch holding the old snapshot still sees one consistent state
    assert manager.poll() is second and reg.loads == ["1", "2"]  # no change: nothing reloaded, same state


def test_challenger_mode_and_share_follow_the_registry(reg, manager):
    reg.config = ServingConfig("1", "2", "canary", 0.25)
    state = manager.poll()
    assert (state.challenger.version, state.mode, state.canary_share) == ("2", "canary", 0.25)
    # Promotion: the challenger becomes champion without a reload (it is already in memory).
    reg.config = ServingConfig("2", None, None, 0.2)
    state = manager.poll()
    assert state.champion.version == "2" and state.challenger is None and state.mode is None
    assert reg.loads == ["1", "2"]
    # Rollback to the version that served before: still cached, no reload either.
    reg.config = ServingConfig("1", None, None, 0.2)
    assert manager.poll().champion.version == "1" and reg.loads == ["1", "2"]


def test_a_failed_load_keeps_the_last_good_model_and_is_reported(reg, manager):
    manager.poll()
    reg.broken.add("3")
    reg.config = ServingConfig("3", None, None, 0.2)
    state = manager.poll()
    assert state.champion.version == "1"
    health = manager.health()
    assert health["ready"] and health["serving"]["champion"] == "1" and health["registry"]["champion"] == "3"
    assert health["load_errors"][0]["version"] == "3" and "corrupt" in health["load_errors"][0]["error"]
    manager.poll()
    assert reg.loads.count("3") == 1  # not retried on every poll
    reg.broken.clear()
    assert manager.poll(force=True).champion.version == "3"  # /admin/reload retries now
    assert manager.health()["load_errors"] == []
    text = manager._metrics.render().decode()
    assert 'mlops_serving_model_loads_total{alias="champion",model="m",result="failure",version="3"} 1.0' in text
    assert 'mlops_serving_model_info{alias="champion",model="m",version="3"} 1.0' in text
    assert 'version="1"} 1.0' not in text.split("mlops_serving_model_info")[-1]


def test_a_probe_that_fails_counts_as_a_failed_load(reg):
    def probe(model):
        raise ValueError("predict_proba returned shape (1,)")

    manager = ModelManager("m", reg.read, loader=reg.load, probe=probe)
    state = manager.poll()
    assert state.champion is None and not state.ready
    assert "could not be loaded" in manager.unavailable_reason() and "shape (1,)" in manager.unavailable_reason()


def test_registry_outage_keeps_serving_and_no_champion_is_explained(reg, manager):
    manager.poll()
    reg.down = True
    assert manager.poll().champion.version == "1"
    assert "unreachable" in manager.health()["last_poll_error"]
    reg.down = False
    reg.config = ServingConfig(None, None, None, 0.2)
    assert manager.poll().champion is None
    assert manager.unavailable_reason() == "no champion model is serving: model 'm' has no 'champion' alias in the registry"


def test_poller_thread_picks_up_changes(reg):
    import time

    manager = ModelManager("m", reg.read, loader=reg.load, poll_seconds=0.05)
    manager.start()
    try:
        deadline = time.monotonic() + 5
        while manager.state.champion is None and time.monotonic() < deadline:
            time.sleep(0.01)
        reg.config = ServingConfig("2", None, None, 0.2)
        while manager.state.champion.version != "2" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert manager.state.champion.version == "2"
    finally:
        manager.stop()


def test_metrics_say_which_worker_answered():
    """With several uvicorn workers each has its own counters; the pid tells a scraper whose they are."""
    import os

    text = ServingMetrics().render().decode()
    assert f"mlops_serving_worker_pid {float(os.getpid())}" in text
