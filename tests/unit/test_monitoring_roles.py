"""Which versions a monitoring window is judged for, and which may ask for a retrain."""

from __future__ import annotations

import pandas as pd
import pytest

from include.mlops.steps.monitoring import event_extra, serving_roles

pytestmark = pytest.mark.unit


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


def test_a_day_exported_in_parts_reads_even_when_a_column_is_all_null_in_one_part(runtime):
    """The year demo's monitor failed on this: a weather column all null in one export part is
    typed null there, double in the other part, and pyarrow refused the cast."""
    from datetime import datetime

    from include.mlops.steps.monitoring import inference_dir, read_window

    folder = inference_dir(runtime) / "day=2013-08-29"
    folder.mkdir(parents=True)

    def part(ids, gusts):
        return pd.DataFrame(
            {
                "entity_id": ids,
                "event_time": [datetime(2013, 8, 29, 9)] * len(ids),
                "status": ["ok"] * len(ids),
                "model_version": ["9"] * len(ids),
                "wind_gust": gusts,
            }
        )

    part(["a", "b"], [None, None]).to_parquet(folder / "part-000000000001-000000000002.parquet", index=False)
    part(["c", "d"], [21.5, None]).to_parquet(folder / "part-000000000003-000000000004.parquet", index=False)
    df = read_window(runtime, datetime(2013, 8, 29), datetime(2013, 8, 30))
    assert list(df["entity_id"]) == ["a", "b", "c", "d"]
    assert str(df["wind_gust"].dtype) == "float64" and df["wind_gust"].notna().sum() == 1


def test_the_registry_artifacts_probe_scores_are_computed_once_per_version_and_probe_set(runtime, monkeypatch):
    """The consistency check compares the live API with the artifact's scores: the artifact is
    loaded the first time only, and again when the probe rows change."""
    import numpy as np

    from include.mlops.adapters import model_artifacts
    from include.mlops.domain.profiles import probe_frame
    from include.mlops.steps.monitoring import artifact_probe_scores

    loads = []

    class Model:
        def predict_proba(self, x):
            p = np.linspace(0.1, 0.9, len(x))
            return np.column_stack([1 - p, p])

    def load_model_version(store, spec, model, version, *, tracking_uri=None):  # the loop's one model loader
        loads.append(f"models:/{model}/{version}")
        return Model()

    monkeypatch.setattr(model_artifacts, "load_model_version", load_model_version)
    probes = probe_frame(runtime.spec)
    first = artifact_probe_scores(runtime, "7", probes)
    again = artifact_probe_scores(runtime, "7", probes)
    assert loads == [f"models:/{runtime.model_name}/7"]
    assert np.array_equal(first, again) and len(first) == len(probes)
    artifact_probe_scores(runtime, "7", probes.head(10))  # other probe rows: scored anew
    artifact_probe_scores(runtime, "8", probes)  # another version: its own artifact
    assert loads == [f"models:/{runtime.model_name}/7"] * 2 + [f"models:/{runtime.model_name}/8"]
