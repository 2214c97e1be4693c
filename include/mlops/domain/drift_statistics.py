"""The numeric and categorical statistics behind :mod:`include.mlops.domain.drift`.

* Reference summaries (training time): :func:`numeric_stats` keeps a numeric column's distribution
  exactly (value -> count, up to :data:`EXACT_VALUES_CAP` distinct values) or as
  :data:`SKETCH_POINTS` equal-count chunk means; :func:`categorical_stats` keeps up to
  :data:`CATEGORY_CAP` categories with their counts.
* Reading a window's column: :func:`numeric_values` (finite float64 values), :func:`runs`
  (distinct values of a sorted array), :func:`category_counts`.
* The tests' maths, as Evidently 0.7 computes them: :func:`cdf_gap` (Wasserstein-1 area or the
  Kolmogorov-Smirnov D between weighted supports), :func:`count_test` (chi-squared, z),
  :func:`binned_distance` (Jensen-Shannon, PSI, KL divergence), :func:`sturges_edges`.

Which test runs on which column, and the verdicts, are :mod:`include.mlops.domain.drift`'s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

#: Numeric reference distributions with at most this many distinct values are stored exactly.
EXACT_VALUES_CAP = 2000
#: Otherwise: this many equal-count chunk means (with their counts).
SKETCH_POINTS = 2000
#: Categories stored per categorical column; the rest are pooled into ``other`` (inexact tests).
CATEGORY_CAP = 10_000


# -- reference summaries (training time) ---------------------------------------------------------
def finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def numeric_stats(s: pd.Series) -> dict[str, Any]:
    import numpy as np

    values, rows = numeric_values(s)
    values.sort()
    n = int(values.size)
    out: dict[str, Any] = {"kind": "numeric", "rows": rows, "nulls": rows - n, "count": n}
    if n == 0:
        out.update(distinct=0, exact=True, values=[], counts=[])
        return out
    uniq, counts = runs(values)
    out.update(
        distinct=int(uniq.size),
        mean=finite(float(values.mean())),
        std=finite(float(values.std())),
        min=float(values[0]),
        max=float(values[-1]),
    )
    if uniq.size <= EXACT_VALUES_CAP:
        out.update(exact=True, values=uniq.tolist(), counts=counts.tolist())
        return out
    # Equal-count chunks of the sorted values, each kept as (mean, count); neighbours with the same
    # mean (a point mass spread over several chunks) are merged.
    bounds = np.unique(np.linspace(0, n, SKETCH_POINTS + 1).round().astype(np.int64))
    starts, sizes = bounds[:-1], np.diff(bounds)
    means = np.add.reduceat(values, starts) / sizes
    means = np.clip(means, values[starts], values[bounds[1:] - 1])  # rounding must not leave a chunk
    keep = np.ones(means.size, dtype=bool)
    keep[1:] = means[1:] != means[:-1]
    idx = np.flatnonzero(keep)
    merged = np.add.reduceat(sizes, idx)
    out.update(exact=False, values=means[idx].tolist(), counts=merged.astype(np.int64).tolist())
    return out


def categorical_stats(s: pd.Series) -> dict[str, Any]:
    counts, rows, nulls = category_counts(s)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept, other = ordered[:CATEGORY_CAP], sum(c for _, c in ordered[CATEGORY_CAP:])
    if other:
        log.warning("column %s has %d categories: kept the %d most frequent, pooled the rest", s.name, len(ordered), CATEGORY_CAP)
    return {
        "kind": "categorical",
        "rows": rows,
        "nulls": nulls,
        "count": rows - nulls,
        "distinct": len(ordered),
        "exact": other == 0,
        "counts": dict(kept),
        "other": int(other),
    }


# -- reading a column ----------------------------------------------------------------------------
def numeric_values(s: pd.Series) -> tuple[np.ndarray, int]:
    """Finite float64 values of ``s`` (a copy) and the row count; non-numbers count as nulls."""
    import numpy as np
    import pandas as pd

    if not (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)):
        coerced = pd.to_numeric(s.astype(object) if isinstance(s.dtype, pd.CategoricalDtype) else s, errors="coerce")
        bad = int(coerced.isna().sum() - s.isna().sum())
        if bad:
            log.warning("column %s: %d non-numeric values treated as nulls", s.name, bad)
        s = coerced
    arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
    return arr[np.isfinite(arr)], int(arr.size)


def runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts of a sorted array (no second sort)."""
    import numpy as np

    n = sorted_values.size
    if n == 0:
        return sorted_values[:0], np.zeros(0, dtype=np.int64)
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=start[1:])
    idx = np.flatnonzero(start)
    return sorted_values[idx], np.diff(np.append(idx, n))


def category_counts(s: pd.Series) -> tuple[dict[str, int], int, int]:
    """Counts of the non-null values of ``s`` keyed by ``str(value)``, rows, nulls."""
    import numpy as np

    vc = s.value_counts(dropna=True, sort=False)
    vc = vc[vc.to_numpy() > 0]  # a pandas Categorical lists unused categories with count 0
    counts: dict[str, int] = {}
    for key, n in zip(vc.index, vc.to_numpy(dtype=np.int64), strict=True):
        if isinstance(key, float) and math.isinf(key):  # Evidently drops +-inf with the nulls
            continue
        k = str(key)
        counts[k] = counts.get(k, 0) + int(n)
    rows = int(len(s))
    return counts, rows, rows - sum(counts.values())


# -- the tests' maths ------------------------------------------------------------------------------
def cdf_gap(rv: np.ndarray, rc: np.ndarray, cv: np.ndarray, cc: np.ndarray, how: Literal["area", "max"]) -> float:
    """Between two weighted, sorted supports: the area between the CDFs (Wasserstein-1) or their
    largest gap (Kolmogorov-Smirnov D); the same formula as scipy's ``_cdf_distance``."""
    import numpy as np

    support = np.concatenate([rv, cv])
    support.sort(kind="stable")  # two sorted runs: a linear merge
    fr = np.concatenate([[0.0], np.cumsum(rc)]) / rc.sum()
    fc = np.concatenate([[0.0], np.cumsum(cc)]) / cc.sum()
    at = support[:-1] if how == "area" else support
    gap = np.abs(fr[np.searchsorted(rv, at, "right")] - fc[np.searchsorted(cv, at, "right")])
    if how == "area":
        return float(np.dot(gap, np.diff(support)))
    return float(gap.max()) if gap.size else 0.0


def aligned(keys: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``counts`` of ``values`` (sorted, distinct) placed on ``keys`` (sorted superset), 0 elsewhere."""
    import numpy as np

    out = np.zeros(keys.size, dtype=np.float64)
    out[np.searchsorted(keys, values)] = counts
    return out


def sturges_edges(lo: float, hi: float, n: int) -> np.ndarray:
    """``np.histogram_bin_edges(x, "sturges")`` from the size and range of ``x`` alone."""
    import numpy as np

    width = (hi - lo) / (np.log2(n) + 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    bins = int(np.ceil((hi - lo) / width)) if width else 1
    return np.linspace(lo, hi, bins + 1)


def numeric_score(
    method: str, ref: Mapping[str, Any], rv: np.ndarray, rc: np.ndarray, cur: np.ndarray, cv: np.ndarray, cc: np.ndarray
) -> float:
    """The ``method`` score of a window's numeric column against its reference summary ``ref``
    (:func:`numeric_stats`): ``rv``/``rc`` the reference values and counts, ``cur`` the window's
    sorted finite values, ``cv``/``cc`` their distinct values and counts (float64)."""
    import numpy as np

    ref_rows, ref_exact = int(ref["count"]), bool(ref.get("exact", True))
    if method == "wasserstein":
        norm = max(float(ref.get("std") or 0.0), 0.001)
        return cdf_gap(rv, rc, cv, cc, "area") / norm
    if method == "ks":
        if ref_exact:
            from scipy.stats import ks_2samp

            return float(ks_2samp(np.repeat(rv, rc.astype(np.int64)), cur)[1])
        from scipy.stats import kstwo

        d = cdf_gap(rv, rc, cv, cc, "max")
        return float(kstwo.sf(d, round(ref_rows * cur.size / (ref_rows + cur.size))))
    if int(ref.get("distinct", rv.size)) > 20 and method in ("jensenshannon", "psi", "kl_div"):
        # Evidently bins a many-valued numeric column with Sturges' rule over both samples.
        lo, hi = float(ref["min"]), float(ref["max"])
        edges = sturges_edges(min(lo, float(cur[0])), max(hi, float(cur[-1])), ref_rows + int(cur.size))
        ref_p = np.histogram(rv, edges, weights=rc)[0] / ref_rows
        cur_p = np.histogram(cv, edges, weights=cc)[0] / cur.size
        return binned_distance(method, ref_p, cur_p)
    keys = np.union1d(rv, cv)
    ref_p, cur_p = aligned(keys, rv, rc), aligned(keys, cv, cc)
    if method in ("chisquare", "z"):
        return count_test(method, ref_p, cur_p)
    return binned_distance(method, ref_p / ref_rows, cur_p / cur.size)


def count_test(method: str, ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """p-value of Evidently's chi-squared or two-proportion z test from counts aligned on sorted keys."""
    import warnings

    import numpy as np

    n1, n2 = float(ref_counts.sum()), float(cur_counts.sum())
    if method == "chisquare":
        from scipy.stats import chisquare

        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(chisquare(cur_counts, ref_counts * (n2 / n1))[1])
    # z: Evidently codes the first (sorted) value as 0 and everything else as 1.
    ref_seen, cur_seen = ref_counts > 0, cur_counts > 0
    if ref_seen.sum() == 1 and cur_seen.sum() == 1 and bool((ref_seen & cur_seen).any()):
        return 1.0
    from scipy.stats import norm

    p1 = (n1 - ref_counts[0]) / n1
    p2 = (n2 - cur_counts[0]) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    denom = math.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    if denom == 0:
        return float("nan")
    return float(2 * (1 - norm.cdf(abs((p1 - p2) / denom))))


def binned_distance(method: str, ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    """Jensen-Shannon distance, PSI or KL divergence of two share vectors, as Evidently computes them."""
    import numpy as np

    if method == "jensenshannon":
        return jensenshannon(ref_p, cur_p)
    ref_p, cur_p = fill_zeroes(ref_p), fill_zeroes(cur_p)
    if method == "psi":
        return float(np.sum((ref_p - cur_p) * np.log(ref_p / cur_p)))
    if method == "kl_div":
        from scipy.stats import entropy

        return float(entropy(ref_p, cur_p))
    raise ValueError(f"unknown binned method {method!r}")


def jensenshannon(p: np.ndarray, q: np.ndarray) -> float:
    """scipy's ``distance.jensenshannon(p, q)`` (natural log) in numpy: importing scipy.spatial
    costs more than a whole pass over a small window."""
    import numpy as np

    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0)
        right = np.where(q > 0, q * np.log(q / m), 0.0)
    return float(np.sqrt(max(float(left.sum() + right.sum()), 0.0) / 2.0))


def fill_zeroes(p: np.ndarray) -> np.ndarray:
    """Evidently's ``feel_zeroes``: empty bins get a tiny share so logarithms stay finite."""
    import numpy as np

    p = p.astype(np.float64, copy=True)
    nonzero = p[p != 0]
    if nonzero.size == 0:
        return p
    smallest = float(nonzero.min())
    p[p == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return p
