"""Small synthetic data shaped by the spec, for tests that must not depend on the real dataset."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.spec import Spec


def make_batch(spec: Spec, day: date, n: int = 150, seed: int = 0) -> pd.DataFrame:
    """``n`` valid outcome rows for ``day``: every value inside the spec's ranges and categories."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed + day.toordinal())
    start = pd.Timestamp(day) + pd.Timedelta(hours=5)
    times = [start + pd.Timedelta(minutes=int(m)) for m in np.sort(rng.integers(0, 17 * 60, n))]
    data: dict[str, object] = {
        spec.entity_id: [f"{day:%Y%m%d}-T{i:05d}" for i in range(n)],
        spec.time_column: times,
    }
    for f in spec.features:
        if f.type == "categorical":
            cats = list(f.categories or [])
            data[f.name] = [cats[i % len(cats)] for i in rng.integers(0, len(cats), n)]
        elif f.type == "integer":
            lo, hi = int(f.min if f.min is not None else 0), int(f.max if f.max is not None else 10)
            data[f.name] = rng.integers(lo, hi + 1, n).astype("int64")
        else:
            lo, hi = float(f.min if f.min is not None else 0.0), float(f.max if f.max is not None else 1.0)
            data[f.name] = rng.uniform(lo + 0.25 * (hi - lo), lo + 0.75 * (hi - lo), n)
    df = pd.DataFrame(data)
    for check in spec.checks:  # make the declared relations hold
        df[check.b] = np.minimum(df[check.b], df[check.a] - 1.0).clip(lower=spec.feature(check.b).min)
    t = spec.target
    lo, hi = t.source_min if t.source_min is not None else -50, t.source_max if t.source_max is not None else 100
    df[t.source_column] = rng.uniform(max(lo, -40), min(hi, 90), n).round()
    return df[spec.batch_columns]


def days(start: date, count: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(count)]


def weak_pipeline(spec: Spec, params: dict) -> object:
    """A deliberately poor model for refusal tests: logistic regression on distance alone."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([("pre", ColumnTransformer([("d", "passthrough", ["distance"])])), ("clf", LogisticRegression())])
