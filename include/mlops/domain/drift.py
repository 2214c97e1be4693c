"""Column and dataset drift of a monitoring window against precomputed reference statistics.

Why not run Evidently's ``DataDriftPreset`` on every window: it needs the full reference frame and
takes about two minutes for a million rows on two cores. Its verdicts are cheap to reproduce from
statistics computed once per model version at training time, so monitoring does the same tests here:

* :func:`reference_stats` summarises the training inputs (and the holdout scores) in a JSON-able
  dict: per column the row, null and distinct counts, mean, std, min, max, and the distribution,
  either exactly (value -> count for up to ``EXACT_VALUES_CAP`` distinct values, and always
  for a reference of at most 1000 values) or as ``SKETCH_POINTS`` equal-count chunk means;
  categories with their counts (the statistics and the tests' maths are in
  :mod:`include.mlops.domain.drift_statistics`).
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

  "distinct values" counts reference and current together. A per-column override (the spec's
  ``monitoring.drift_overrides``, :class:`~include.mlops.domain.spec.DriftOverride`) replaces
  either (see :data:`METHODS`).
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
from typing import TYPE_CHECKING, Any, Literal

from include.mlops.domain.drift_statistics import (
    binned_distance,
    categorical_stats,
    category_counts,
    count_test,
    numeric_score,
    numeric_stats,
    numeric_values,
    runs,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.domain.spec import DriftOverride, Spec

log = logging.getLogger(__name__)

STATS_FORMAT = "mlops.drift.reference_stats/1"
#: Evidently switches from statistical tests to distances above this many reference values.
SMALL_REFERENCE_VALUES = 1000
#: Numeric columns with at most this many distinct values (reference + current) are tested as categories.
FEW_VALUES = 5
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
        columns[f.name] = categorical_stats(df[f.name]) if f.type == "categorical" else numeric_stats(df[f.name])
    if score is None and SCORE_COLUMN in df.columns:
        score = df[SCORE_COLUMN]
    if score is not None:
        columns[SCORE_COLUMN] = numeric_stats(pd.Series(score))
    return {"format": STATS_FORMAT, "rows": int(len(df)), "columns": columns}


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


# -- the checks -----------------------------------------------------------------------------------
def column_drift(
    current: pd.DataFrame,
    stats: Mapping[str, Any],
    spec: Spec,
    overrides: Mapping[str, DriftOverride | Mapping[str, Any]] | None = None,
    *,
    columns: Sequence[str] | None = None,
    workers: int | None = None,
) -> list[ColumnDrift]:
    """Drift of every monitored column of ``current`` against the reference ``stats``.

    Columns: the spec's features, plus ``score`` when both the stats and the window have it (or
    exactly ``columns``). ``overrides``: per column, a :class:`~include.mlops.domain.spec.DriftOverride`
    (the spec's ``monitoring.drift_overrides``, validated when the spec loaded) or the same as a
    mapping ``{"method": name, "threshold": value}``; either key optional (a threshold alone keeps
    the default method). ``workers``: threads over columns (numpy's sorts release the GIL); default:
    up to 4, one per core.
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
    pinned = _typed_overrides(overrides, kinds)

    def one(name: str) -> ColumnDrift:
        ov = pinned.get(name)
        return _column(current, name, kinds[name], ref_cols.get(name), ov.method if ov else None, ov.threshold if ov else None)

    n_workers = max(1, min(workers or min(4, os.cpu_count() or 1), len(names)))
    if n_workers == 1:
        results = [one(n) for n in names]
    else:
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="drift") as pool:
            results = list(pool.map(one, names))
    drifted = [r.column for r in results if r.drifted]
    log.info("drift over %d rows: %d of %d columns drifted %s", len(current), len(drifted), len(results), drifted)
    return results


def _typed_overrides(
    overrides: Mapping[str, DriftOverride | Mapping[str, Any]] | None, monitored: Mapping[str, Kind]
) -> dict[str, DriftOverride]:
    """The overrides of the monitored columns as :class:`DriftOverride`: a spec's are typed already
    (passed through as they are); a mapping (e.g. a drift calibration's) is validated by that same
    model, which refuses an unknown method or key and a negative or non-finite threshold."""
    if not overrides:
        return {}
    from include.mlops.domain.spec import DriftOverride

    out: dict[str, DriftOverride] = {}
    for column, ov in overrides.items():
        typed = DriftOverride.model_validate(ov)
        if column not in monitored:
            log.warning("drift override for %s ignored: not a monitored column", column)
            continue
        out[column] = typed
    return out


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

    cur, window_rows = numeric_values(s)
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
    cv, cc = runs(cur)
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

    score = numeric_score(method, ref, rv, rc, cur, cv, cc.astype(np.float64))
    return _verdict(name, "numeric", method, threshold_override, score, overridden=overridden, exact=ref_exact, **common)


def _categorical_column(
    s: pd.Series, name: str, ref: Mapping[str, Any], method_override: str | None, threshold_override: float | None
) -> ColumnDrift:
    import numpy as np

    counts, window_rows, nulls = category_counts(s)
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
    score = count_test(method, ref_a, cur_a) if counted else binned_distance(method, ref_a / ref_rows, cur_a / cur_n)
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
