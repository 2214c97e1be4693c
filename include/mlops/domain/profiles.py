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

import math
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
            **({"positive_rate": float((scores >= 0.5).mean()) if len(scores) else 0.0} if spec.task == "binary_classification" else {}),
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


# -- the learned batch profile -------------------------------------------------------------------
# What a normal label batch of this model looks like, learned from its accepted history: each
# accepted batch's summary statistics (``summarize_batch``, stored with the batch) are gathered by
# ``learn_batch_profile`` into a band per statistic (median +- k robust standard deviations, never
# narrower than the statistic's floor), and ``judge_batch`` names every statistic of a new batch
# outside its band. The floors were measured on the 2013 flights batches (a rolling 56-batch
# history, k = 6: no day of the year is flagged; see docs/architecture.md, "The data gate").

#: Robust standard deviation of a normal sample = 1.4826 x its median absolute deviation.
MAD_TO_SD = 1.4826
#: log10 orders of magnitude a numeric feature's typical size (median |x| of its non-zero values)
#: must move: a factor of ~30 (2013 flights: the widest normal day-to-day move is 1.2, a foggy day's
#: visibility or a cold day's dew point).
MAGNITUDE_FLOOR = 1.5
#: logit units the label rate must move (2013: the late rate of a storm day moves 2.7 from the
#: median of the weeks before; a batch of all-positive or all-negative labels moves 5 or more).
LABEL_RATE_FLOOR = 1.5
#: log10 factor a categorical's number of distinct values must grow by (2 = doubled).
CARDINALITY_FLOOR = 0.30103
#: The largest share of a batch's ids in a shape never seen in the accepted history.
ID_SHAPE_SHARE = 0.2
#: The largest share of a batch's rows with a category value never seen in the accepted history.
UNSEEN_CATEGORY_SHARE = 0.2
#: The join rate is judged once the history's median is at least this (before that the model's
#: predictions are not logged for these ids: no join to lose).
JOIN_RATE_ESTABLISHED = 0.2
#: Values kept per categorical feature in a batch summary (more: the value set is not judged).
MAX_PROFILE_VALUES = 200
MAX_ID_SHAPES = 50


def id_shape(value: str, limit: int = 64) -> str:
    """The format of one id: digits -> 9, letters -> A / a, other characters kept
    (``20130101-UA1545-EWR-0515`` -> ``99999999-AA9999-AAA-9999``)."""
    out = []
    for ch in value[:limit]:
        if ch.isascii() and ch.isdigit():
            out.append("9")
        elif ch.isascii() and ch.isalpha():
            out.append("A" if ch.isupper() else "a")
        else:
            out.append(ch if ch.isascii() else "?")
    return "".join(out) + ("+" if len(value) > limit else "")


def _magnitude(values: pd.Series) -> float | None:
    import numpy as np

    nonzero = values.dropna().astype(float).abs()
    nonzero = nonzero[(nonzero > 0) & np.isfinite(nonzero)]
    return float(np.log10(nonzero.median())) if len(nonzero) else None


def summarize_batch(df: pd.DataFrame, spec: Spec, join_rate: float | None) -> dict[str, Any]:
    """One batch's summary statistics, stored with it when accepted: the id formats, the join rate
    with logged predictions, the label rate, each numeric feature's typical magnitude and spread,
    each categorical's distinct values."""
    import numpy as np

    ids = df[spec.entity_id].astype(str)
    labels = spec.target.derive(df[spec.target.source_column])
    numeric: dict[str, Any] = {}
    categorical: dict[str, Any] = {}
    for f in spec.features:
        col = df[f.name]
        if f.type == "categorical":
            counts = col.dropna().astype(str).value_counts()
            categorical[f.name] = {
                "cardinality": int(len(counts)),
                "values": {str(k): int(v) for k, v in counts.head(MAX_PROFILE_VALUES).items()},
            }
        else:
            clean = col.dropna().astype(float)
            numeric[f.name] = {
                "magnitude": _magnitude(col),
                "std": float(clean.std(ddof=0)) if len(clean) else None,
                "quantiles": [float(v) for v in clean.quantile([0.01, 0.5, 0.99]).to_numpy()] if len(clean) else None,
            }
    return {
        "rows": int(len(df)),
        "id_shapes": {str(k): int(v) for k, v in ids.map(id_shape).value_counts().head(MAX_ID_SHAPES).items()},
        "join_rate": None if join_rate is None else float(join_rate),
        # a regressor's target is no rate (its outcome's range is checked by validation instead)
        "label_rate": float(np.mean(labels)) if len(df) and spec.task == "binary_classification" else None,
        "numeric": numeric,
        "categorical": categorical,
    }


def _logit_rate(rate: float | None, rows: int) -> float | None:
    if rate is None or rows <= 0:
        return None
    p = (rate * rows + 0.5) / (rows + 1)  # never 0 or 1: an all-positive batch is far out, not infinite
    return math.log(p / (1 - p))


def _band(values: list[float | None], k: float, floor: float) -> dict[str, float] | None:
    """Median +- max(k robust SDs, floor) of the history's values (None: no value to learn from)."""
    import numpy as np

    xs = np.array([v for v in values if v is not None], dtype=float)
    if not len(xs):
        return None
    median = float(np.median(xs))
    sd = MAD_TO_SD * float(np.median(np.abs(xs - median)))
    width = max(k * sd, floor)
    return {"median": median, "sd": sd, "lo": median - width, "hi": median + width, "n": int(len(xs))}


def learn_batch_profile(history: list[dict[str, Any]], spec: Spec) -> dict[str, Any]:
    """The profile learned from the summaries of accepted batches (most recent first)."""
    k = spec.batch.profile.k
    numeric = {
        f.name: _band([h["numeric"].get(f.name, {}).get("magnitude") for h in history], k, MAGNITUDE_FLOOR)
        for f in spec.features
        if f.type != "categorical"
    }
    categorical: dict[str, Any] = {}
    for f in spec.features:
        if f.type != "categorical":
            continue
        seen = [h["categorical"].get(f.name) or {} for h in history]
        complete = all(s.get("cardinality", 0) <= MAX_PROFILE_VALUES for s in seen)
        cards = [math.log10(s["cardinality"]) if s.get("cardinality") else None for s in seen]
        categorical[f.name] = {
            "cardinality": _band(cards, k, CARDINALITY_FLOOR),
            "values": sorted({v for s in seen for v in (s.get("values") or {})}) if complete else None,
        }
    joins = [h.get("join_rate") for h in history]
    join = _band(joins, k, 0.0)
    if join is not None:  # a collapse is losing at least half of the usual join
        join["lo"] = min(join["lo"], join["median"] / 2)
    return {
        "batches": len(history),
        "id_shapes": sorted({s for h in history for s in h.get("id_shapes") or {}}),
        "join_rate": join,
        "label_rate": _band([_logit_rate(h.get("label_rate"), h.get("rows", 0)) for h in history], k, LABEL_RATE_FLOOR),
        "numeric": numeric,
        "categorical": categorical,
    }


def _fmt(band: dict[str, float]) -> str:
    return f"accepted history: median {band['median']:.3g}, normal range [{band['lo']:.3g}, {band['hi']:.3g}] over {band['n']} batches"


Finding = tuple[str, str, str | None, dict[str, Any]]  # code, message, column, details


def _judge_ids(summary: dict[str, Any], learned: dict[str, Any], spec: Spec) -> list[Finding]:
    shapes, known = summary.get("id_shapes") or {}, set(learned["id_shapes"])
    rows = max(summary.get("rows") or 0, 1)
    unseen = {s: n for s, n in shapes.items() if s not in known}
    share = sum(unseen.values()) / rows
    if not known or share <= ID_SHAPE_SHARE:
        return []
    example = max(unseen, key=lambda s: unseen[s])
    msg = (
        f"{share:.0%} of the {spec.entity_id} values have a format never seen in accepted batches (e.g. {example!r}; "
        f"accepted: {', '.join(repr(s) for s in sorted(known)[:3])}); at most {ID_SHAPE_SHARE:.0%} may"
    )
    return [("id_format_changed", msg, spec.entity_id, {"statistic": "unseen_id_format_share", "observed": share, "example": example})]


def _judge_join(summary: dict[str, Any], learned: dict[str, Any], spec: Spec) -> list[Finding]:
    band, rate = learned["join_rate"], summary.get("join_rate")
    if band is None or rate is None or band["median"] < JOIN_RATE_ESTABLISHED or rate >= band["lo"]:
        return []
    msg = (
        f"only {rate:.1%} of the batch's {spec.entity_id} values have a logged prediction (join rate); "
        f"{_fmt(band)}: the ids may not be this model's"
    )
    return [("join_rate_collapsed", msg, spec.entity_id, {"statistic": "join_rate", "observed": rate, "band": band})]


def _judge_labels(summary: dict[str, Any], learned: dict[str, Any], spec: Spec) -> list[Finding]:
    band = learned["label_rate"]
    value = _logit_rate(summary.get("label_rate"), summary.get("rows") or 0)
    if band is None or value is None or band["lo"] <= value <= band["hi"]:
        return []
    rate = summary["label_rate"]
    msg = f"label rate of {spec.target.name} is {rate:.1%} (logit {value:.2f}); {_fmt(band)} (logit)"
    return [
        (
            "label_rate_abnormal",
            msg,
            spec.target.name,
            {"statistic": "label_rate_logit", "observed": value, "label_rate": rate, "band": band},
        )
    ]


def _judge_features(summary: dict[str, Any], learned: dict[str, Any]) -> list[Finding]:
    found: list[Finding] = []
    for name, band in learned["numeric"].items():
        value = (summary["numeric"].get(name) or {}).get("magnitude")
        if band is None or value is None or band["lo"] <= value <= band["hi"]:
            continue
        factor = 10 ** (value - band["median"])
        msg = (
            f"column {name}: typical magnitude (log10 of the median |value|) is {value:.2f}, about x{factor:.3g} the usual; "
            f"{_fmt(band)}: a unit or scale change?"
        )
        found.append(("feature_scale_shift", msg, name, {"statistic": "log10_median_abs", "observed": value, "band": band}))
    for name, learned_cat in learned["categorical"].items():
        cat = summary["categorical"].get(name) or {}
        band, card = learned_cat["cardinality"], cat.get("cardinality")
        if band is not None and card and math.log10(card) > band["hi"]:
            msg = f"column {name}: {card} distinct values; {_fmt(band)} (log10 of the distinct count, usual {10 ** band['median']:.0f})"
            found.append(("category_set_blown_up", msg, name, {"statistic": "log10_distinct_values", "observed": card, "band": band}))
        known, values = learned_cat["values"], cat.get("values") or {}
        rows = sum(values.values()) if cat.get("cardinality", 0) <= MAX_PROFILE_VALUES else None
        if known is None or not rows:
            continue
        unseen = {v: n for v, n in values.items() if v not in set(known)}
        share = sum(unseen.values()) / rows
        if share > UNSEEN_CATEGORY_SHARE:
            example = max(unseen, key=lambda v: unseen[v])
            msg = f"column {name}: {share:.0%} of the rows hold values never seen in accepted batches (e.g. {example!r})"
            found.append(("unseen_categories", msg, name, {"statistic": "unseen_value_share", "observed": share}))
    return found


def judge_batch(summary: dict[str, Any], history: list[dict[str, Any]], spec: Spec) -> tuple[list[Finding], dict[str, Any]]:
    """The findings of a batch's summary against the profile learned from ``history`` (summaries of
    accepted batches, most recent first), and the verdict's details for the decision record."""
    settings = spec.batch.profile
    if not settings.enabled:
        return [], {"status": "disabled"}
    if len(history) < settings.min_batches:
        return [], {"status": "profile not yet learned", "batches": len(history), "needed": settings.min_batches}
    learned = learn_batch_profile(history, spec)
    findings = [
        *_judge_ids(summary, learned, spec),
        *_judge_join(summary, learned, spec),
        *_judge_labels(summary, learned, spec),
        *_judge_features(summary, learned),
    ]
    details = {"status": "judged", "batches": len(history), "k": settings.k, "findings": [f[0] for f in findings]}
    return findings, details
