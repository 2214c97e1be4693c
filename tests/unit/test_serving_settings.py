from __future__ import annotations

import pytest

from include.mlops.settings import get_settings

pytestmark = pytest.mark.unit


def test_serving_defaults_and_overrides():
    s = get_settings({})
    assert (s.serving_workers, s.serving_poll_seconds, s.serving_max_body_bytes, s.serving_max_rows, s.serving_batch_wait_ms) == (
        1,
        2.0,
        1 << 20,
        1000,
        3.0,
    )
    s = get_settings(
        {
            "MLOPS_SERVING_WORKERS": "2",
            "MLOPS_SERVING_POLL_SECONDS": "0.5",
            "MLOPS_SERVING_MAX_BODY_BYTES": "2048",
            "MLOPS_SERVING_MAX_ROWS": "10",
            "MLOPS_SERVING_BATCH_WAIT_MS": "0",
        }
    )
    assert (s.serving_workers, s.serving_poll_seconds, s.serving_max_body_bytes, s.serving_max_rows, s.serving_batch_wait_ms) == (
        2,
        0.5,
        2048,
        10,
        0.0,
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MLOPS_SERVING_WORKERS", "two", "positive integer"),
        ("MLOPS_SERVING_WORKERS", "0", "greater than 0"),
        ("MLOPS_SERVING_POLL_SECONDS", "-1", "greater than 0"),
        ("MLOPS_SERVING_MAX_ROWS", "1.5", "positive integer"),
        ("MLOPS_SERVING_BATCH_WAIT_MS", "-2", "must not be negative"),
        ("MLOPS_SERVING_BATCH_WAIT_MS", "soon", "must be a number"),
        ("MLOPS_SERVING_DIRECT_INPUT", "maybe", "must be on or off"),
    ],
)
def test_bad_serving_settings_are_clear_errors(name, value, message):
    with pytest.raises(ValueError, match=message) as info:
        get_settings({name: value})
    assert name in str(info.value)


def test_direct_input_is_on_by_default_and_can_be_turned_off():
    assert get_settings({}).serving_direct_input is True
    for off in ("off", "0", "false", "OFF"):
        assert get_settings({"MLOPS_SERVING_DIRECT_INPUT": off}).serving_direct_input is False
    for on in ("on", "1", "true"):
        assert get_settings({"MLOPS_SERVING_DIRECT_INPUT": on}).serving_direct_input is True
