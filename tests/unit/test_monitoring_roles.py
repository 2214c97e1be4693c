"""Which versions a monitoring window is judged for, and which may ask for a retrain."""

from __future__ import annotations

import pandas as pd

from include.mlops.monitoring import event_extra, serving_roles


def frame(rows):
    return pd.DataFrame(rows, columns=["model_version", "route", "status"])


def test_a_window_is_judged_for_the_versions_that_served_it_in_their_role():
    # v1 served as champion and v3 as canary; v3 was promoted before the window was judged
    f = frame([("1", "champion", "ok")] * 80 + [("3", "challenger", "ok")] * 20 + [(None, None, "rejected")] * 5)
    assert serving_roles(f, {"champion": "3"}) == [("1", "champion"), ("3", "challenger")]


def test_a_window_nobody_served_is_judged_for_the_current_aliases():
    assert serving_roles(frame([]), {"champion": "2", "challenger": "4"}) == [("2", "champion"), ("4", "challenger")]
    assert serving_roles(frame([(None, None, "rejected")]), {"champion": "2"}) == [("2", "champion")]


def summary(version, role, codes):
    return {
        "version": version,
        "role": role,
        "reason_codes": codes,
        "reasons": [f"{c}!" for c in codes],
        "window_start": "2013-03-15T00:00:00",
        "window_end": "2013-03-22T00:00:00",
        "drift": {"drifted": ["temp"], "share": 0.6},
        "quality": {"live": 0.6},
        "report": None,
    }


def test_only_the_current_champion_asks_for_a_retrain():
    result = {"summaries": [summary("1", "champion", ["dataset_drift"])], "current": {"champion": "3"}}
    assert event_extra(result, "drift_detected") is None  # v1 no longer serves: nothing to retrain for
    result["current"] = {"champion": "1"}
    extra = event_extra(result, "drift_detected")
    assert extra and extra["version"] == "1" and extra["reasons"] == ["dataset_drift!"]
    challenger = {"summaries": [summary("2", "challenger", ["dataset_drift"])], "current": {"champion": "1"}}
    assert event_extra(challenger, "drift_detected") is None
