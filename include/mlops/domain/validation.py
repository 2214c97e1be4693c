"""Great Expectations gate for labelled outcome batches, derived from the spec.

``build_suite(spec, day)`` turns the spec into a GX expectation suite: exact column set, types,
nulls, ranges, categories, unique entity ids, row-count bounds, freshness (every row's event time
on the batch's day), the target's raw outcome range and the spec's column relations.
``validate_frame`` runs it through an ephemeral GX context and turns each failed expectation into
a reason with a machine-readable code and a sentence a person understands.

GX core is called directly rather than through ``airflow-provider-great-expectations``: that
provider pins ``structlog<25.5`` and would hold Airflow back at 3.3.0 (see docs/architecture.md, "Choices").
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.domain.spec import Spec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

NUMERIC_TYPES = ["float64", "float32", "int64", "int32", "int16", "int8", "Float64", "Int64", "Int32"]
TEXT_TYPES = ["str"]  # object columns are checked row by row against Python type names
TIME_TYPES = ["datetime64", "datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]


@dataclass
class Reason:
    """Why a batch cannot be used: a code for machines, a message for people."""

    code: str
    message: str
    column: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckResult:
    """One expectation as run: what it checked and what it saw."""

    expectation: str
    column: str | None
    success: bool
    summary: str


@dataclass
class ValidationOutcome:
    passed: bool
    rows: int
    reasons: list[Reason]
    checks: list[CheckResult]
    gx_result: dict[str, Any]

    @property
    def reason_codes(self) -> list[str]:
        return sorted({r.code for r in self.reasons})


class BatchReadError(Exception):
    """A batch file that cannot be read as a table."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_parquet_metadata(source: Any, spec: Spec, name: str) -> None:
    """Refuse a parquet file from its footer alone, before any data page is read: more rows than
    the spec's ``batch.max_rows``, more uncompressed bytes than ``batch.max_uncompressed_bytes``
    (a compressed bomb), or row groups that do not add up. :class:`BatchReadError` says which."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(source).metadata
    except Exception as exc:  # not a parquet footer: the same verdict as a failed read
        raise BatchReadError("unreadable_file", f"{name} could not be read as parquet: {type(exc).__name__}: {exc}"[:500]) from None
    limit = spec.batch.max_rows
    if meta.num_rows > limit:
        raise BatchReadError(
            "row_count_out_of_bounds",
            f"{name} declares {meta.num_rows} rows in its parquet metadata; at most {limit} are accepted (not read)",
        )
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    if sum(g.num_rows for g in groups) != meta.num_rows:
        raise BatchReadError("unreadable_file", f"{name}: the row groups of its parquet metadata do not add up to its row count")
    uncompressed = sum(g.total_byte_size for g in groups)
    if uncompressed > spec.batch.max_uncompressed_bytes:
        raise BatchReadError(
            "file_too_large",
            f"{name} declares {uncompressed} bytes of uncompressed data in its parquet metadata; "
            f"at most {spec.batch.max_uncompressed_bytes} are accepted (not read)",
        )


def read_batch(path: Path, spec: Spec, data: bytes | None = None) -> pd.DataFrame:
    """Read a parquet or CSV batch (from ``data``, the file's bytes, when given); a parquet file's
    metadata is checked first (:func:`check_parquet_metadata`), a CSV file is read up to one row
    past ``batch.max_rows``. :class:`BatchReadError` when it is not a readable table."""
    import io

    import pandas as pd

    def source() -> Any:
        return io.BytesIO(data) if data is not None else path

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            check_parquet_metadata(source(), spec, path.name)
            df = pd.read_parquet(source())
        elif suffix == ".csv":
            df = pd.read_csv(source(), nrows=spec.batch.max_rows + 1)
            if len(df) > spec.batch.max_rows:
                raise BatchReadError("row_count_out_of_bounds", f"{path.name} has more than {spec.batch.max_rows} rows (not read further)")
            if spec.time_column in df.columns and df[spec.time_column].dtype == object:
                parsed = pd.to_datetime(df[spec.time_column], errors="coerce", format="mixed")
                if parsed.notna().sum() == df[spec.time_column].notna().sum():
                    df[spec.time_column] = parsed
        else:
            raise BatchReadError("unsupported_format", f"{path.name}: only .parquet and .csv batches are accepted")
    except BatchReadError:
        raise
    except Exception as exc:  # pyarrow / parser errors have many types; all mean "unreadable"
        raise BatchReadError(
            "unreadable_file", f"{path.name} could not be read as {suffix.lstrip('.')}: {type(exc).__name__}: {exc}"[:500]
        ) from None
    for col in df.columns:  # pandas/pyarrow string dtypes are checked as plain text columns
        if str(df[col].dtype) in ("string", "str", "large_string"):
            df[col] = df[col].astype(object)
    return df


_context: Any = None


def _gx() -> Any:
    """The GX module with this process's ephemeral context created (GX needs one for suites)."""
    global _context
    # No analytics calls from GX: this project runs without network access beyond package indexes.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    if _context is None:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        ctx.data_sources.add_pandas("label_batches").add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole")
        _context = ctx
    return gx


def build_suite(spec: Spec, day: date | None, *, training: bool = False, inputs: bool = False) -> Any:
    """The GX expectation suite of ``spec``: for one label batch (``day``: the batch's day); with
    ``training=True`` for an assembled training set (pool rows with the derived label); with
    ``inputs=True`` for a window of live model inputs (feature columns only: nulls, types, ranges,
    categories; no row count, ids or target)."""
    gx = _gx()
    E = gx.expectations
    name = "live_inputs" if inputs else "training_set" if training else "label_batch"
    # collected, then handed to the suite at once: ``add_expectation`` compares each new one with
    # every one already added (quadratic; a fifth of a batch's validation time)
    expectations: list[Any] = []
    add = expectations.append
    if training:
        add(E.ExpectTableColumnsToMatchSet(column_set=[*spec.batch_columns, spec.target.name], exact_match=True))
        add(E.ExpectTableRowCountToBeBetween(min_value=spec.training.min_rows, max_value=None))
        add(E.ExpectColumnValuesToNotBeNull(column=spec.target.name))
        if spec.task == "binary_classification":  # a regression target is the raw outcome (range-checked per batch)
            add(E.ExpectColumnValuesToBeInSet(column=spec.target.name, value_set=[0, 1]))
            add(
                E.ExpectColumnMeanToBeBetween(
                    column=spec.target.name, min_value=spec.training.positive_rate_min, max_value=spec.training.positive_rate_max
                )
            )
    elif not inputs:
        add(E.ExpectTableColumnsToMatchSet(column_set=spec.batch_columns, exact_match=True))
        add(E.ExpectTableRowCountToBeBetween(min_value=spec.batch.min_rows, max_value=spec.batch.max_rows))
    if not inputs:
        add(E.ExpectColumnValuesToNotBeNull(column=spec.entity_id))
        add(E.ExpectColumnValuesToBeUnique(column=spec.entity_id))
        add(E.ExpectColumnValuesToBeInTypeList(column=spec.entity_id, type_list=TEXT_TYPES + NUMERIC_TYPES))
        add(E.ExpectColumnValuesToNotBeNull(column=spec.time_column))
        add(E.ExpectColumnValuesToBeInTypeList(column=spec.time_column, type_list=TIME_TYPES))
    if day is not None and not inputs:
        start = datetime.combine(day, datetime.min.time())
        add(
            E.ExpectColumnValuesToBeBetween(
                column=spec.time_column, min_value=start, max_value=start + timedelta(days=1) - timedelta(microseconds=1)
            )
        )
    for f in spec.features:
        if f.nullable:
            if f.max_null_fraction < 1.0:
                add(E.ExpectColumnValuesToNotBeNull(column=f.name, mostly=max(1.0 - f.max_null_fraction, 1e-9)))
        else:
            add(E.ExpectColumnValuesToNotBeNull(column=f.name))
        if f.type == "categorical":
            add(E.ExpectColumnValuesToBeInTypeList(column=f.name, type_list=TEXT_TYPES))
            add(E.ExpectColumnValuesToBeInSet(column=f.name, value_set=list(f.categories or []), mostly=f.mostly))
        else:
            add(E.ExpectColumnValuesToBeInTypeList(column=f.name, type_list=NUMERIC_TYPES))
            if f.min is not None or f.max is not None:
                add(E.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.min, max_value=f.max, mostly=f.mostly))
    if not inputs:
        t = spec.target
        add(E.ExpectColumnValuesToNotBeNull(column=t.source_column))
        add(E.ExpectColumnValuesToBeInTypeList(column=t.source_column, type_list=NUMERIC_TYPES))
        if t.source_min is not None or t.source_max is not None:
            add(E.ExpectColumnValuesToBeBetween(column=t.source_column, min_value=t.source_min, max_value=t.source_max))
    for check in spec.checks:
        add(
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=check.a,
                column_B=check.b,
                or_equal=True,
                mostly=check.mostly,
                ignore_row_if="either_value_is_missing",
                meta={"reason_code": check.reason_code, "meaning": check.meaning},
            )
        )
    return gx.ExpectationSuite(name=f"{spec.name}.{name}", expectations=expectations)


def _batch_for(df: pd.DataFrame) -> Any:
    _gx()
    definition = _context.data_sources.get("label_batches").get_asset("batch").get_batch_definition("whole")
    return definition.get_batch(batch_parameters={"dataframe": df})


def _examples(values: list[Any] | None, n: int = 3) -> str:
    if not values:
        return ""
    shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in values[:n])
    return f" (e.g. {shown})"


def _fmt_range(lo: Any, hi: Any) -> str:
    return f"[{'-inf' if lo is None else lo}, {'+inf' if hi is None else hi}]"


def validate_frame(df: pd.DataFrame, spec: Spec, day: date | None, *, training: bool = False, inputs: bool = False) -> ValidationOutcome:
    """Run the spec's suite on ``df`` and explain every failure.

    A label batch or a window of inputs is first checked for pass/fail only (GX's ``BOOLEAN_ONLY``:
    no unexpected-value lists, about half the time); only a suite that fails is run again with
    ``SUMMARY`` to explain each failure with counts and examples. A training set is always run with
    ``SUMMARY``: its full result is logged with the model.
    """
    suite = build_suite(spec, day, training=training, inputs=inputs)
    batch = _batch_for(df)
    result = None if training else batch.validate(suite, result_format="BOOLEAN_ONLY")
    if result is None or not result.success:
        result = batch.validate(suite, result_format="SUMMARY")
    ctx = _Context(df, spec, day, training, present=set(map(str, df.columns)))
    reasons: list[Reason] = []
    checks: list[CheckResult] = []
    # Structural results first, so value checks on a missing or mistyped column are not reported twice.
    for r in sorted(result.results, key=lambda r: 0 if r.expectation_config.type in _STRUCTURAL else 1):
        seen = _Seen.of(r)
        found, summary = _explain(seen, ctx)
        reasons += found
        checks.append(CheckResult(seen.kind, seen.col, seen.success, summary))
    return ValidationOutcome(passed=not reasons, rows=len(df), reasons=reasons, checks=checks, gx_result=_to_json(result.to_json_dict()))


@dataclass
class _Context:
    """What explaining one result needs besides the result: the frame, the spec, and the columns
    found with a wrong type so far (their value checks are skipped, not reported twice)."""

    df: pd.DataFrame
    spec: Spec
    day: date | None
    training: bool
    present: set[str]
    bad_type: set[str] = field(default_factory=set)


@dataclass
class _Seen:
    """One expectation's result, as the explanations read it."""

    kind: str
    kw: dict[str, Any]
    meta: dict[str, Any]
    res: dict[str, Any]
    success: bool
    errored: bool

    @classmethod
    def of(cls, r: Any) -> _Seen:
        errored = bool(r.exception_info and r.exception_info.get("raised_exception"))
        if not errored and isinstance(r.exception_info, dict):
            errored = any(isinstance(v, dict) and v.get("exception_traceback") for v in r.exception_info.values())
        cfg = r.expectation_config
        return cls(cfg.type, cfg.kwargs, cfg.meta or {}, r.result or {}, bool(r.success), errored)

    @property
    def col(self) -> str | None:
        return self.kw.get("column")

    @property
    def columns(self) -> list[str]:
        return [c for c in (self.col, self.kw.get("column_A"), self.kw.get("column_B")) if c is not None]

    @property
    def count(self) -> Any:
        return self.res.get("unexpected_count")

    @property
    def pct(self) -> Any:
        return self.res.get("unexpected_percent")

    @property
    def examples(self) -> str:
        return _examples(self.res.get("partial_unexpected_list"))


Explained = tuple[list[Reason], str]  # the reasons a result gives, and its summary in the report


def _explain(s: _Seen, ctx: _Context) -> Explained:
    """The reasons one result gives and its summary: skipped when a column it reads is missing or
    mistyped, else explained by the kind of expectation that failed."""
    if s.kind == "expect_table_columns_to_match_set":
        return _explain_columns(s)
    if any(c not in ctx.present for c in s.columns):
        return [], "skipped: column missing"
    if any(c in ctx.bad_type for c in s.columns):
        return [], "skipped: wrong type"
    if s.errored:
        return [Reason("check_error", f"{s.kind} on {s.col or 'the batch'} could not be evaluated", column=s.col)], "could not be evaluated"
    if s.success:
        return [], "ok" if s.count in (None, 0) else f"ok ({s.count} exceptions within the allowed share)"
    explain = _EXPLAIN.get(s.kind)
    if explain is None:  # an expectation added to the suite without an explanation here
        return [Reason("expectation_failed", f"{s.kind} failed on {s.col or 'the batch'}", column=s.col)], "failed"
    return explain(s, ctx)


def _explain_columns(s: _Seen) -> Explained:
    mism = (s.res.get("details") or {}).get("mismatched") or {}
    miss, extra = sorted(mism.get("missing") or []), sorted(mism.get("unexpected") or [])
    reasons = []
    if miss:
        reasons.append(Reason("missing_columns", f"missing column(s): {', '.join(miss)}", details={"columns": miss}))
    if extra:
        reasons.append(
            Reason("unexpected_columns", f"unexpected column(s) not in the spec: {', '.join(extra)}", details={"columns": extra})
        )
    return reasons, "columns match the spec" if s.success else f"missing {miss or '-'}, unexpected {extra or '-'}"


def _explain_row_count(s: _Seen, ctx: _Context) -> Explained:
    n = s.res.get("observed_value", len(ctx.df))
    code = "empty_batch" if n == 0 else "row_count_out_of_bounds"
    lo, hi = s.kw.get("min_value"), s.kw.get("max_value")
    bounds = f"at least {lo}" if hi is None else f"{lo} to {hi}"
    what = "training set" if ctx.training else "batch"
    return [Reason(code, f"{what} has {n} rows; expected {bounds}", details={"rows": n})], f"{n} rows"


def _explain_type(s: _Seen, ctx: _Context) -> Explained:
    col = str(s.col)
    ctx.bad_type.add(col)
    observed = s.res.get("observed_value") or str(ctx.df[col].dtype)
    want = "a date-time" if col == ctx.spec.time_column else "text" if s.kw.get("type_list") == TEXT_TYPES else "a number"
    return [Reason("wrong_type", f"column {col} holds {observed} values{s.examples}; expected {want}", column=col)], f"type {observed}"


def _explain_nulls(s: _Seen, ctx: _Context) -> Explained:
    mostly = s.kw.get("mostly") or 1.0
    if mostly >= 1.0:
        msg = f"column {s.col} has {s.count} null value(s) ({s.pct:.1f}%); it may have none"
    else:
        msg = f"column {s.col} is {s.pct:.1f}% null; at most {100 * (1 - mostly):.0f}% is allowed"
    details = {"null_count": s.count, "null_percent": s.pct}
    return [Reason("too_many_nulls", msg, column=s.col, details=details)], f"{s.count} nulls"


def _explain_range(s: _Seen, ctx: _Context) -> Explained:
    rng = _fmt_range(s.kw.get("min_value"), s.kw.get("max_value"))
    if s.col == ctx.spec.time_column:
        msg = f"{s.count} row(s) have {s.col} outside the batch's day {ctx.day}{s.examples}"
        reason = Reason("rows_outside_batch_day", msg, column=s.col, details={"count": s.count})
    else:
        msg = f"column {s.col} has {s.count} value(s) ({s.pct:.1f}%) outside {rng}{s.examples}"
        reason = Reason("out_of_range", msg, column=s.col, details={"count": s.count, "range": rng})
    return [reason], f"{s.count} outside {rng}"


def _explain_set(s: _Seen, ctx: _Context) -> Explained:
    msg = f"column {s.col} has {s.count} value(s) not among the spec's categories{s.examples}"
    return [Reason("unknown_category", msg, column=s.col, details={"count": s.count})], f"{s.count} unknown"


def _explain_unique(s: _Seen, ctx: _Context) -> Explained:
    msg = f"column {s.col} has {s.count} rows with a repeated id{s.examples}"
    return [Reason("duplicate_ids", msg, column=s.col, details={"count": s.count})], f"{s.count} duplicated"


def _explain_mean(s: _Seen, ctx: _Context) -> Explained:
    observed = s.res.get("observed_value")
    msg = f"share of positive {s.col} is {observed:.3f}; expected {s.kw.get('min_value')} to {s.kw.get('max_value')}"
    return [Reason("label_rate_out_of_bounds", msg, column=s.col, details={"observed": observed})], f"mean {observed:.3f}"


def _explain_pair(s: _Seen, ctx: _Context) -> Explained:
    a, b = s.kw.get("column_A"), s.kw.get("column_B")
    meaning = s.meta.get("meaning") or ""
    msg = f"{a} < {b} in {s.pct:.1f}% of rows" + (f": {meaning}" if meaning else "")
    code = s.meta.get("reason_code") or "column_relation_violated"
    return [Reason(code, msg, column=a, details={"a": a, "b": b, "violating_percent": s.pct})], f"{s.pct:.1f}% violate {a} >= {b}"


#: How a failed expectation of each kind is explained.
_EXPLAIN: dict[str, Callable[[_Seen, _Context], Explained]] = {
    "expect_table_row_count_to_be_between": _explain_row_count,
    "expect_column_values_to_be_in_type_list": _explain_type,
    "expect_column_values_to_not_be_null": _explain_nulls,
    "expect_column_values_to_be_between": _explain_range,
    "expect_column_values_to_be_in_set": _explain_set,
    "expect_column_values_to_be_unique": _explain_unique,
    "expect_column_mean_to_be_between": _explain_mean,
    "expect_column_pair_values_a_to_be_greater_than_b": _explain_pair,
}


_STRUCTURAL = {"expect_table_columns_to_match_set", "expect_column_values_to_be_in_type_list", "expect_table_row_count_to_be_between"}


def _to_json(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def render_report(title: str, reasons: list[Reason], checks: list[CheckResult], facts: dict[str, Any]) -> str:
    """A self-contained HTML page: verdict, reasons, then every check that ran."""
    esc = html.escape
    verdict = "QUARANTINED" if reasons else "ACCEPTED"
    color = "#b42318" if reasons else "#067647"
    fact_rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in facts.items())
    reason_items = "".join(f"<li><code>{esc(r.code)}</code> {esc(r.message)}</li>" for r in reasons) or "<li>none</li>"
    check_rows = "".join(
        f"<tr class={'ok' if c.success else 'bad'}><td>{'pass' if c.success else 'FAIL'}</td>"
        f"<td>{esc(c.expectation)}</td><td>{esc(c.column or '')}</td><td>{esc(c.summary)}</td></tr>"
        for c in checks
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left}}tr.bad td{{background:#fef3f2}}
h1 span{{color:{color}}}</style></head><body>
<h1>{esc(title)}: <span>{verdict}</span></h1>
<table>{fact_rows}</table>
<h2>Reasons</h2><ul>{reason_items}</ul>
<h2>Great Expectations checks</h2>
<table><tr><th>result</th><th>expectation</th><th>column</th><th>observed</th></tr>{check_rows}</table>
<p>The full Great Expectations result is in the JSON file beside this report.</p>
</body></html>
"""
