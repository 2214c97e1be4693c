"""Reference profiles and the probe set.

A *reference profile* is computed once per model version at training time and stored with it in
MLflow (``reference/profile.json`` + ``reference/sample.parquet`` + holdout predictions): what
monitoring compares live traffic against, never recomputed from raw training data.

The *probe set* is a fixed, deterministic set of rows derived from the spec (values across every
feature's range and categories, some nulls where allowed). Every version's scores on it are stored
at training time; gates check they are sane and deterministic, and monitoring compares the live
serving API's answers with the registry artifact's on the same rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.domain.spec import Spec

QUANTILES = [i / 100 for i in range(101)]
PROBE_SEED = 20130101


def _numeric_profile(s: pd.Series) -> dict[str, Any]:
    clean = s.dropna().astype(float)
    out: dict[str, Any] = {"type": "numeric", "count": int(len(s)), "null_fraction": float(s.isna().mean()) if len(s) else 0.0}
    if len(clean):
        out.update(
            mean=float(clean.mean()),
            std=float(clean.std(ddof=0)),
            min=float(clean.min()),
            max=float(clean.max()),
            quantiles=[float(v) for v in clean.quantile(QUANTILES).to_numpy()],
        )
    return out


def _categorical_profile(s: pd.Series, top: int = 500) -> dict[str, Any]:
    shares = s.astype(object).where(s.notna(), None).value_counts(normalize=True, dropna=True).head(top)
    return {
        "type": "categorical",
        "count": int(len(s)),
        "null_fraction": float(s.isna().mean()) if len(s) else 0.0,
        "shares": {str(k): float(v) for k, v in shares.items()},
    }


def build_profile(spec: Spec, train_x: pd.DataFrame, holdout_scores: np.ndarray, holdout_labels: np.ndarray) -> dict[str, Any]:
    """Summary statistics of the training inputs and of the holdout predictions."""
    import numpy as np
    import pandas as pd

    features = {
        f.name: (_categorical_profile(train_x[f.name]) if f.type == "categorical" else _numeric_profile(train_x[f.name]))
        for f in spec.features
    }
    scores = pd.Series(np.asarray(holdout_scores, dtype=float))
    return {
        "rows": int(len(train_x)),
        "features": features,
        "prediction": {
            "score": _numeric_profile(scores),
            "positive_rate": float((scores >= 0.5).mean()) if len(scores) else 0.0,
        },
        "label_rate": float(np.mean(holdout_labels)) if len(holdout_labels) else 0.0,
    }


def probe_frame(spec: Spec, n: int | None = None, seed: int = PROBE_SEED) -> pd.DataFrame:
    """The spec's fixed probe rows: the same for every run, version and machine."""
    import numpy as np
    import pandas as pd

    rows = n or spec.deployment.probe_rows
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {spec.entity_id: [f"probe-{i:05d}" for i in range(rows)]}
    for f in spec.features:
        if f.type == "categorical":
            cats = list(f.categories or [])
            values: Any = [cats[i % len(cats)] for i in range(rows)]
            rng.shuffle(values)
        else:
            lo = f.min if f.min is not None else -1e3
            hi = f.max if f.max is not None else 1e3
            values = np.linspace(lo, hi, rows)
            rng.shuffle(values)
            values = np.round(values) if f.type == "integer" else values
        col = pd.Series(values, dtype=object if f.type == "categorical" else "int64" if f.type == "integer" else "float64")
        if f.nullable and f.type == "numeric":
            col[rng.random(rows) < min(f.max_null_fraction, 0.1)] = np.nan
        data[f.name] = col
    return pd.DataFrame(data)
