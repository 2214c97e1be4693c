"""The training run's dataset inputs: digest and schema computed the fast way are exactly MLflow's
own, and the batch-id tag fits MLflow's limit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.mlops.steps.training_datasets import MAX_INPUT_TAG, batch_ids_tag, dataset_digest, dataset_schema

pytestmark = pytest.mark.unit


def frame(n: int = 500) -> pd.DataFrame:
    """The training frame's kinds of columns: strings (one with gaps), integers, floats with NaN,
    a boolean, a timestamp and the 0/1 label."""
    rng = np.random.default_rng(0)
    temp = rng.normal(50, 20, n)
    temp[::7] = np.nan
    gappy = rng.choice(["EWR", "JFK", "LGA"], n).astype(object)
    gappy[::11] = None
    return pd.DataFrame(
        {
            "carrier": rng.choice(["AA", "B6", "DL"], n).astype(object),
            "origin": gappy,
            "distance": rng.integers(100, 5000, n),
            "temp": temp,
            "wind_gust": np.full(n, np.nan),
            "weekend": rng.random(n) > 0.7,
            "time_hour": pd.date_range("2013-03-01", periods=n, freq="h"),
            "delayed": rng.integers(0, 2, n),
        }
    )


@pytest.mark.parametrize("df", [frame(), frame(3), frame(500).iloc[:0]], ids=["rows", "few", "empty"])
def test_digest_and_schema_are_mlflows_own(df):
    from mlflow.data.digest_utils import compute_pandas_digest
    from mlflow.types.utils import _infer_schema

    assert dataset_digest(df) == compute_pandas_digest(df)
    assert dataset_schema(df).to_dict() == _infer_schema(df).to_dict()


def test_a_changed_frame_has_another_digest():
    df = frame()
    other = df.copy()
    other.loc[3, "temp"] = 1.0
    assert dataset_digest(df) != dataset_digest(other)


def test_batch_ids_tag_is_complete_when_it_fits_and_bounded_when_not():
    assert batch_ids_tag([1, 2, 30]) == "1,2,30"
    many = list(range(100_000, 100_400))
    tag = batch_ids_tag(many)
    assert len(tag) <= MAX_INPUT_TAG
    assert tag.startswith("100000,100001,") and tag.endswith("100399 (400 batches)")
