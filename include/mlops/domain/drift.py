"""Column and dataset drift of a monitoring window against precomputed reference statistics.

Why not run Evidently's ``DataDriftPreset`` on every window: it needs the full reference frame and
takes about two minutes for a million rows on two cores. Its verdicts are cheap to reproduce from
statistics computed once per model version at training time, so monitoring does the same tests here:

* :func:`reference_stats` summarises the training inputs (and the holdout scores) in a JSON-able
  dict: per column the row, null and distinct counts, mean, std, min, max, and the distribution,
  either exactly (value -> count for up to :data:`EXACT_VALUES_CAP` distinct values, and always
  for a reference of at most 1000 values) or as :data:`SKETCH_POINTS` equal-count chunk means;
  categories with their counts.
* :func:`column_drift` reads each column of the current window in full (vectorised numpy/pandas)
  and picks the test the way Evidently 0.7's ``DataDriftPreset`` does (``evidently.legacy.
  calculations.stattests.registry._get_default_stattest``), on the non-null, finite values:

  ===================  ==========================  ========================================
  reference values      numeric column              categorical column
  ===================  ==========================  ========================================
  <= 1000               ``ks`` (p <= 0.05) when      ``chisquare`` (p < 0.05) when > 2
                        > 5 distinct values, else    distinct values, else ``z`` (p < 0.05)
                        ``chisquare`` / ``z``
  > 1000                ``wasserstein`` normed by    ``jensenshannon`` (>= 0.1)
                        the reference std (>= 0.1)
                        when > 5 distinct values,
                        else ``jensenshannon``
  ===================  ==========================  ========================================

  "distinct values" counts reference and current together. A per-column override
  ``{column: {"method": ..., "threshold": ...}}`` replaces either (see :data:`METHODS`).
* :func:`dataset_drift` applies Evidently's rule: the dataset drifts when at least ``share`` of the
  tested columns drift.

Scores are exact (equal to Evidently's up to float rounding) whenever the reference distribution is
stored exactly; from a sketch, the normed Wasserstein distance is off by far less than 0.01
(``ColumnDrift.exact`` says which).

Edge cases never raise; the column's ``status`` says what happened:

* ``empty_window``: the window has no rows. Not drifted, not counted by :func:`dataset_drift`
  (no traffic is a separate alert, not drift).
* ``missing_column``: the window lacks the column. Drifted: the feature vanished from serving.
* ``all_null``: every value is null/NaN/inf while the reference has values. Drifted: the model now
  sees only missing values (a broken feed); the score is undefined (``None``).
* ``no_reference``: the reference has no usable value (or no statistics) for the column. Not
  drifted, not counted: there is nothing to compare with.

Nulls and +-inf are dropped before every test, as Evidently does; ``null_share`` reports them.
Categories never seen in training take part in the test (reference count 0) and are listed in
``unseen_categories``. A constant reference is normed by 0.001 like Evidently's Wasserstein.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.domain.spec import Spec

log = logging.getLogger(__name__)

STATS_FORMAT = "mlops.drift.reference_stats/1"
#: Evidently switches from statistical tests to distances above this many reference values.
SMALL_REFERENCE_VALUES = 1000
#: Numeric columns with at most this many distinct values (reference + current) are tested as categories.
FEW_VALUES = 5
#: Numeric reference distributions with at most this many distinct values are stored exactly.
EXACT_VALUES_CAP = 2000
#: Otherwise: this many equal-count chunk means (with their counts).
SKETCH_POINTS = 2000
#: Categories stored per categorical column; the rest are pooled into ``other`` (inexact tests).
CATEGORY_CAP = 10_000
#: Unseen categories listed per column.
UNSEEN_LIST_CAP = 20
OTHER_KEY = "__other__"
SCORE_COLUMN = "score"

Kind = Literal["numeric", "categorical"]
Status = Literal["ok", "empty_window", "missing_column", "all_null", "no_reference", "error"]
#: Statuses with no drift verdict: left out of :func:`dataset_drift`'s share.
UNDEFINED: frozenset[str] = frozenset({"empty_window", "no_reference", "error"})


@dataclass(frozen=True)
class Method:
    """A drift test as Evidently defines it: its default threshold and which way it points."""

    name: str
    kinds: frozenset[str]
    default_threshold: float
    #: p-values drift when small, distances when large.
    p_value: bool
    #: p-value tests only: ``p < threshold`` (chisquare, z) rather than ``p <= threshold`` (ks).
    strict: bool = False

    def drifted(self, score: float, threshold: float) -> bool:
        if math.isnan(score):
            return False
        if self.p_value:
            return score < threshold if self.strict else score <= threshold
        return score >= threshold


_NUM, _CAT = frozenset({"numeric"}), frozenset({"categorical"})
_BOTH = _NUM | _CAT
#: Methods an override may name (Evidently's names, defaults and allowed column kinds).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ks", _NUM, 0.05, p_value=True),
        Method("chisquare", _CAT, 0.05, p_value=True, strict=True),
        Method("z", _CAT, 0.05, p_value=True, strict=True),
        Method("wasserstein", _NUM, 0.1, p_value=False),
        Method("jensenshannon", _BOTH, 0.1, p_value=False),
        Method("psi", _BOTH, 0.1, p_value=False),
        Method("kl_div", _BOTH, 0.1, p_value=False),
    )
}


@dataclass
class ColumnDrift:
    """The drift verdict of one column, JSON-able through :meth:`to_dict`."""

    column: str
    kind: Kind
    #: Test used (``ks``, ``chisquare``, ``z``, ``wasserstein``, ``jensenshannon``, ``psi``, ``kl_div``),
    #: or the status when no test could run (``empty_window``, ``missing_column``, ``all_null``, ``no_reference``).
    method: str
    #: p-value or distance; ``None`` when undefined.
    score: float | None
    threshold: float | None
    drifted: bool
    #: Non-null, finite values tested, in the window and in the reference.
    current_rows: int
    reference_rows: int
    #: Share of the window's rows that are null, NaN or +-inf (``None`` for an empty window).
    null_share: float | None
    status: Status = "ok"
    #: ``p_value`` or ``distance`` (``None`` when no test ran).
    score_kind: str | None = None
    window_rows: int = 0
    reference_null_share: float = 0.0
    #: False when the score comes from the reference sketch rather than its exact distribution.
    exact: bool = True
    overridden: bool = False
    #: Categorical: current values never seen in the reference (most frequent first) and their share.
    unseen_categories: list[str] = field(default_factory=list)
    unseen_share: float | None = None
    #: Numeric: share of current values outside the reference's [min, max].
    out_of_range_share: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetDrift:
    """Evidently's dataset rule over column verdicts."""

    drifted: bool
    drifted_columns: int
    #: Columns with a verdict (undefined ones excluded).
    tested_columns: int
    share_drifted: float
    share_threshold: float
    drifted_names: list[str]
    undefined_names: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- reference statistics (training time) ---------------------------------------------------------
def reference_stats(
    df: pd.DataFrame,
    spec: Spec,
    *,
    score: Sequence[float] | np.ndarray | pd.Series | None = None,
) -> dict[str, Any]:
    """JSON-able statistics of the spec's features in ``df`` (and of the model's scores).

    Computed once per model version from the training inputs; ``score`` (the holdout predictions)
    defaults to ``df["score"]`` when that column exists. Raises ``ValueError`` when a feature is
    missing from ``df``: the reference of a model version must cover all of its inputs.
    """
    import pandas as pd

    missing = [f.name for f in spec.features if f.name not in df.columns]
    if missing:
        raise ValueError(f"reference frame lacks feature column(s): {', '.join(missing)}")
    columns: dict[str, Any] = {}
    for f in spec.features:
        columns[f.name] = _categorical_stats(df[f.name]) if f.type == "categorical" else _numeric_stats(df[f.name])
    if score is None and SCORE_COLUMN in df.columns:
        score = df[SCORE_COLUMN]
    if score is not None:
        columns[SCORE_COLUMN] = _numeric_stats(pd.Series(score))
    return {"format": STATS_FORMAT, "rows": int(len(df)), "columns": columns}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _numeric_stats(s: pd.Series) -> dict[str, Any]:
    import numpy as np

    values, rows = _numeric_values(s)
    values.sort()
    n = int(values.size)
    out: dict[str, Any] = {"kind": "numeric", "rows": rows, "nulls": rows - n, "count": n}
    if n == 0:
        out.update(distinct=0, exact=True, values=[], counts=[])
        return out
    uniq, counts = _runs(values)
    out.update(
        distinct=int(uniq.size),
        mean=_finite(float(values.mean())),
        std=_finite(float(values.std())),
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


def _categorical_stats(s: pd.Series) -> dict[str, Any]:
    counts, rows, nulls = _category_counts(s)
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


# -- reading current data -------------------------------------------------------------------------
def _numeric_values(s: pd.Series) -> tuple[np.ndarray, int]:
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


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _category_counts(s: pd.Series) -> tuple[dict[str, int], int, int]:
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


# -- method choice --------------------------------------------------------------------------------
def choose_method(kind: Kind, reference_rows: int, n_values: int) -> str:
    """Evidently 0.7's default test for a column (``DataDriftPreset`` without options).

    ``reference_rows``: non-null finite reference values; ``n_values``: distinct values of the
    reference and the current window together.
    """
    if reference_rows <= SMALL_REFERENCE_VALUES:
        if kind == "numeric" and n_values > FEW_VALUES:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if kind == "numeric" and n_values > FEW_VALUES:
        return "wasserstein"
    return "jensenshannon"


def _validate_overrides(
    overrides: Mapping[str, Mapping[str, Any]] | None, kinds: Mapping[str, Kind]
) -> dict[str, tuple[str | None, float | None]]:
    """``{column: {"method": ..., "threshold": ...}}`` checked: unknown methods/keys raise ``ValueError``."""
    out: dict[str, tuple[str | None, float | None]] = {}
    for column, ov in (overrides or {}).items():
        if not isinstance(ov, Mapping):
            raise ValueError(f"overrides[{column}] must be a mapping with 'method' and/or 'threshold', got {ov!r}")
        extra = set(ov) - {"method", "threshold"}
        if extra:
            raise ValueError(f"overrides[{column}] has unknown key(s) {sorted(extra)}; allowed: method, threshold")
        method = ov.get("method")
        threshold = ov.get("threshold")
        if method is not None:
            if method not in METHODS:
                raise ValueError(f"overrides[{column}].method {method!r} is not one of {sorted(METHODS)}")
            kind = kinds.get(column)
            if kind is not None and kind not in METHODS[method].kinds:
                raise ValueError(f"overrides[{column}].method {method!r} does not apply to a {kind} column")
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold) or threshold < 0:
                raise ValueError(f"overrides[{column}].threshold must be a finite number >= 0, got {threshold!r}")
            threshold = float(threshold)
        if column not in kinds:
            log.warning("drift override for %s ignored: not a monitored column", column)
            continue
        out[column] = (method, threshold)
    return out


# -- the checks -----------------------------------------------------------------------------------
def column_drift(
    current: pd.DataFrame,
    stats: Mapping[str, Any],
    spec: Spec,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    columns: Sequence[str] | None = None,
    workers: int | None = None,
) -> list[ColumnDrift]:
    """Drift of every monitored column of ``current`` against the reference ``stats``.

    Columns: the spec's features, plus ``score`` when both the stats and the window have it (or
    exactly ``columns``). ``overrides``: ``{column: {"method": name, "threshold": value}}``, either
    key optional (a threshold alone keeps the default method). ``workers``: threads over columns
    (numpy's sorts release the GIL); default: up to 4, one per core.
    """
    if stats.get("format") != STATS_FORMAT:
        raise ValueError(f"unknown reference statistics format {stats.get('format')!r} (expected {STATS_FORMAT!r})")
    ref_cols: Mapping[str, Any] = stats.get("columns", {})
    if columns is None:
        names = list(spec.feature_names)
        if SCORE_COLUMN in ref_cols and SCORE_COLUMN in current.columns:
            names.append(SCORE_COLUMN)
    else:
        names = list(columns)
    kinds: dict[str, Kind] = {}
    for name in names:
        ref_kind = ref_cols.get(name, {}).get("kind")
        spec_kind: Kind | None = None
        if name in spec.feature_names:
            spec_kind = "categorical" if spec.feature(name).type == "categorical" else "numeric"
        if ref_kind is not None and spec_kind is not None and ref_kind != spec_kind:
            log.warning("column %s is %s in the spec but %s in the reference: using the reference's kind", name, spec_kind, ref_kind)
        kinds[name] = ref_kind or spec_kind or "numeric"
    checked = _validate_overrides(overrides, kinds)

    def one(name: str) -> ColumnDrift:
        method, threshold = checked.get(name, (None, None))
        return _column(current, name, kinds[name], ref_cols.get(name), method, threshold)

    n_workers = max(1, min(workers or min(4, os.cpu_count() or 1), len(names)))
    if n_workers == 1:
        results = [one(n) for n in names]
    else:
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="drift") as pool:
            results = list(pool.map(one, names))
    drifted = [r.column for r in results if r.drifted]
    log.info("drift over %d rows: %d of %d columns drifted %s", len(current), len(drifted), len(results), drifted)
    return results


def dataset_drift(results: Sequence[ColumnDrift], share: float = 0.5) -> DatasetDrift:
    """Evidently's rule: drift when drifted / tested columns >= ``share``; undefined columns don't count."""
    tested = [r for r in results if r.status not in UNDEFINED]
    drifted = [r.column for r in tested if r.drifted]
    frac = len(drifted) / len(tested) if tested else 0.0
    return DatasetDrift(
        drifted=bool(tested) and frac >= share,
        drifted_columns=len(drifted),
        tested_columns=len(tested),
        share_drifted=frac,
        share_threshold=share,
        drifted_names=drifted,
        undefined_names=[r.column for r in results if r.status in UNDEFINED],
    )


def _undefined(column: str, kind: Kind, status: Status, window_rows: int, ref: Mapping[str, Any] | None, note: str) -> ColumnDrift:
    ref_rows = int(ref.get("count", 0)) if ref else 0
    return ColumnDrift(
        column=column,
        kind=kind,
        method=status,
        score=None,
        threshold=None,
        drifted=status in ("missing_column", "all_null"),
        current_rows=0,
        reference_rows=ref_rows,
        null_share=(1.0 if status == "all_null" else None),
        status=status,
        window_rows=window_rows,
        reference_null_share=_share(int(ref.get("nulls", 0)), int(ref.get("rows", 0))) if ref else 0.0,
        note=note,
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _column(
    current: pd.DataFrame,
    name: str,
    kind: Kind,
    ref: Mapping[str, Any] | None,
    method_override: str | None,
    threshold_override: float | None,
) -> ColumnDrift:
    window_rows = int(len(current))
    if window_rows == 0:
        return _undefined(name, kind, "empty_window", 0, ref, "the window has no rows")
    if name not in current.columns:
        return _undefined(name, kind, "missing_column", window_rows, ref, "the window has no such column")
    if not ref or int(ref.get("count", 0)) == 0:
        return _undefined(name, kind, "no_reference", window_rows, ref, "the reference has no non-null value for this column")
    try:
        if kind == "categorical":
            return _categorical_column(current[name], name, ref, method_override, threshold_override)
        return _numeric_column(current[name], name, ref, method_override, threshold_override)
    except Exception as exc:  # a data problem must never take the whole monitoring pass down
        log.exception("drift of column %s failed", name)
        return _undefined(name, kind, "error", window_rows, ref, f"drift computation failed: {type(exc).__name__}: {exc}")


def _verdict(
    name: str,
    kind: Kind,
    method_name: str,
    threshold_override: float | None,
    score: float,
    *,
    overridden: bool,
    **extra: Any,
) -> ColumnDrift:
    method = METHODS[method_name]
    threshold = method.default_threshold if threshold_override is None else threshold_override
    score = float(score)
    return ColumnDrift(
        column=name,
        kind=kind,
        method=method_name,
        score=score if math.isfinite(score) else None,
        threshold=threshold,
        drifted=method.drifted(score, threshold),
        score_kind="p_value" if method.p_value else "distance",
        overridden=overridden,
        **extra,
    )


def _numeric_column(
    s: pd.Series, name: str, ref: Mapping[str, Any], method_override: str | None, threshold_override: float | None
) -> ColumnDrift:
    import numpy as np

    cur, window_rows = _numeric_values(s)
    ref_rows, ref_nulls = int(ref["count"]), int(ref.get("nulls", 0))
    common: dict[str, Any] = {
        "window_rows": window_rows,
        "reference_rows": ref_rows,
        "reference_null_share": _share(ref_nulls, int(ref.get("rows", ref_rows + ref_nulls))),
        "null_share": _share(window_rows - cur.size, window_rows),
        "current_rows": int(cur.size),
    }
    if cur.size == 0:
        return _undefined(name, "numeric", "all_null", window_rows, ref, "every value in the window is null, NaN or inf")
    cur.sort()
    cv, cc = _runs(cur)
    rv = np.asarray(ref["values"], dtype=np.float64)
    rc = np.asarray(ref["counts"], dtype=np.float64)
    ref_exact = bool(ref.get("exact", True))
    lo, hi = float(ref["min"]), float(ref["max"])
    outside = int(np.searchsorted(cur, lo, "left")) + int(cur.size - np.searchsorted(cur, hi, "right"))
    common["out_of_range_share"] = outside / cur.size

    ref_distinct = int(ref.get("distinct", rv.size))
    few = ref_distinct <= FEW_VALUES and cv.size <= FEW_VALUES
    # Only "more than FEW_VALUES or not" matters above the small-reference branch: skip the union then.
    n_values = int(np.union1d(rv, cv).size) if few else max(ref_distinct, int(cv.size))
    method = method_override or choose_method("numeric", ref_rows, n_values)
    overridden = method_override is not None or threshold_override is not None

    exact = ref_exact
    if method == "wasserstein":
        norm = max(float(ref.get("std") or 0.0), 0.001)
        score = _cdf_gap(rv, rc, cv, cc.astype(np.float64), "area") / norm
    elif method == "ks":
        if ref_exact:
            from scipy.stats import ks_2samp

            score = float(ks_2samp(np.repeat(rv, rc.astype(np.int64)), cur)[1])
        else:
            from scipy.stats import kstwo

            d = _cdf_gap(rv, rc, cv, cc.astype(np.float64), "max")
            score = float(kstwo.sf(d, round(ref_rows * cur.size / (ref_rows + cur.size))))
    else:
        if ref_distinct > 20 and method in ("jensenshannon", "psi", "kl_div"):
            # Evidently bins a many-valued numeric column with Sturges' rule over both samples.
            edges = _sturges_edges(min(lo, float(cur[0])), max(hi, float(cur[-1])), ref_rows + int(cur.size))
            ref_p = np.histogram(rv, edges, weights=rc)[0] / ref_rows
            cur_p = np.histogram(cv, edges, weights=cc)[0] / cur.size
        else:
            keys = np.union1d(rv, cv)
            ref_p = _aligned(keys, rv, rc)
            cur_p = _aligned(keys, cv, cc.astype(np.float64))
            if method in ("chisquare", "z"):
                score = _count_test(method, ref_p, cur_p)
                return _verdict(name, "numeric", method, threshold_override, score, overridden=overridden, exact=exact, **common)
            ref_p, cur_p = ref_p / ref_rows, cur_p / cur.size
        score = _binned_distance(method, ref_p, cur_p)
    return _verdict(name, "numeric", method, threshold_override, score, overridden=overridden, exact=exact, **common)


def _categorical_column(
    s: pd.Series, name: str, ref: Mapping[str, Any], method_override: str | None, threshold_override: float | None
) -> ColumnDrift:
    import numpy as np

    counts, window_rows, nulls = _category_counts(s)
    cur_n = window_rows - nulls
    ref_counts: dict[str, int] = dict(ref.get("counts", {}))
    if int(ref.get("other", 0)):
        ref_counts[OTHER_KEY] = int(ref["other"])
    ref_rows = int(ref["count"])
    if cur_n == 0:
        return _undefined(name, "categorical", "all_null", window_rows, ref, "every value in the window is null")
    unseen = sorted((k for k in counts if k not in ref_counts), key=lambda k: (-counts[k], k))
    keys = sorted(set(ref_counts) | set(counts))
    ref_a = np.array([ref_counts.get(k, 0) for k in keys], dtype=np.float64)
    cur_a = np.array([counts.get(k, 0) for k in keys], dtype=np.float64)
    method = method_override or choose_method("categorical", ref_rows, len(keys))
    counted = method in ("chisquare", "z")
    score = _count_test(method, ref_a, cur_a) if counted else _binned_distance(method, ref_a / ref_rows, cur_a / cur_n)
    return _verdict(
        name,
        "categorical",
        method,
        threshold_override,
        score,
        overridden=method_override is not None or threshold_override is not None,
        exact=bool(ref.get("exact", True)),
        window_rows=window_rows,
        reference_rows=ref_rows,
        reference_null_share=_share(int(ref.get("nulls", 0)), int(ref.get("rows", ref_rows))),
        null_share=_share(nulls, window_rows),
        current_rows=cur_n,
        unseen_categories=unseen[:UNSEEN_LIST_CAP],
        unseen_share=sum(counts[k] for k in unseen) / cur_n,
    )


# -- the maths ------------------------------------------------------------------------------------
def _cdf_gap(rv: np.ndarray, rc: np.ndarray, cv: np.ndarray, cc: np.ndarray, how: Literal["area", "max"]) -> float:
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


def _aligned(keys: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``counts`` of ``values`` (sorted, distinct) placed on ``keys`` (sorted superset), 0 elsewhere."""
    import numpy as np

    out = np.zeros(keys.size, dtype=np.float64)
    out[np.searchsorted(keys, values)] = counts
    return out


def _sturges_edges(lo: float, hi: float, n: int) -> np.ndarray:
    """``np.histogram_bin_edges(x, "sturges")`` from the size and range of ``x`` alone."""
    import numpy as np

    width = (hi - lo) / (np.log2(n) + 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    bins = int(np.ceil((hi - lo) / width)) if width else 1
    return np.linspace(lo, hi, bins + 1)


def _count_test(method: str, ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
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


def _binned_distance(method: str, ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    """Jensen-Shannon distance, PSI or KL divergence of two share vectors, as Evidently computes them."""
    import numpy as np

    if method == "jensenshannon":
        return _jensenshannon(ref_p, cur_p)
    ref_p, cur_p = _fill_zeroes(ref_p), _fill_zeroes(cur_p)
    if method == "psi":
        return float(np.sum((ref_p - cur_p) * np.log(ref_p / cur_p)))
    if method == "kl_div":
        from scipy.stats import entropy

        return float(entropy(ref_p, cur_p))
    raise ValueError(f"unknown binned method {method!r}")


def _jensenshannon(p: np.ndarray, q: np.ndarray) -> float:
    """scipy's ``distance.jensenshannon(p, q)`` (natural log) in numpy: importing scipy.spatial
    costs more than a whole pass over a small window."""
    import numpy as np

    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0)
        right = np.where(q > 0, q * np.log(q / m), 0.0)
    return float(np.sqrt(max(float(left.sum() + right.sum()), 0.0) / 2.0))


def _fill_zeroes(p: np.ndarray) -> np.ndarray:
    """Evidently's ``feel_zeroes``: empty bins get a tiny share so logarithms stay finite."""
    import numpy as np

    p = p.astype(np.float64, copy=True)
    nonzero = p[p != 0]
    if nonzero.size == 0:
        return p
    smallest = float(nonzero.min())
    p[p == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return p


# -- the window as the inference log keeps it for monitoring -------------------------------------
def window_files(root: str | Path, model: str, start: date | str, end: date | str) -> list[Path]:
    """Parquet parts of ``<root>/inference/<model>/day=YYYY-MM-DD/`` for the days ``start..end`` (inclusive)."""
    first = start if isinstance(start, date) else date.fromisoformat(start)
    last = end if isinstance(end, date) else date.fromisoformat(end)
    base = Path(root) / "inference" / model
    files: list[Path] = []
    day = first
    while day <= last:
        files.extend(sorted((base / f"day={day.isoformat()}").glob("part-*.parquet")))
        day += timedelta(days=1)
    return files


def read_window(
    root: str | Path,
    model: str,
    start: date | str,
    end: date | str,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
) -> pd.DataFrame:
    """The inference log of ``model`` for ``start..end`` as one frame, reading only ``columns``.

    ``categorical`` columns are read dictionary-encoded (pandas ``category``: one small integer per
    row instead of a Python string). Columns absent from every part are left out (the drift check
    reports them as ``missing_column``); parts whose schemas differ are unified.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = window_files(root, model, start, end)
    if not files:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns or []})
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    wanted = [c for c in columns if c in schema.names] if columns is not None else list(schema.names)
    dict_cols = []
    for c in categorical:
        if c in wanted and (pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type)):
            schema = schema.set(schema.get_field_index(c), pa.field(c, pa.dictionary(pa.int32(), schema.field(c).type)))
            dict_cols.append(c)
    table = pq.read_table([str(f) for f in files], columns=wanted, schema=schema, read_dictionary=dict_cols)
    return table.to_pandas(self_destruct=True)


def evidently_data_definition(spec: Spec, columns: Sequence[str]) -> Any:
    """Evidently ``DataDefinition`` with the spec's column kinds, so its reports test what we test.

    Evidently otherwise infers kinds from dtypes (an integer column with <= 10 values becomes
    categorical), which changes its choice of test.
    """
    from evidently import DataDefinition

    cat = {f.name for f in spec.features if f.type == "categorical"}
    return DataDefinition(
        numerical_columns=[c for c in columns if c not in cat],
        categorical_columns=[c for c in columns if c in cat],
    )
