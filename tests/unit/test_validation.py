"""The GX gate on tiny synthetic batches: every kind of bad input gets its reason code."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from include.mlops.domain.validation import BatchReadError, read_batch, render_report, validate_frame
from tests.helpers import make_batch

pytestmark = pytest.mark.unit
DAY = date(2013, 3, 5)


@pytest.fixture
def good(spec) -> pd.DataFrame:
    return make_batch(spec, DAY, n=150)


def test_good_batch_passes(spec, good):
    out = validate_frame(good, spec, DAY)
    assert out.passed, [r.message for r in out.reasons]
    assert out.rows == 150
    assert len(out.checks) > 30 and all(c.success for c in out.checks)
    assert out.gx_result["success"] is True


def _celsius(df):
    df["temp"] = (df["temp"] - 32) * 5 / 9
    df["dewp"] = df["temp"] + 3  # a realistic Celsius day: dew point (in F) above the converted temp
    return df


def _nulls(df):
    df.loc[df.index[:5], "carrier"] = None
    return df


def _too_many_weather_nulls(df):
    df.loc[df.index[: len(df) // 2], "temp"] = np.nan
    return df


def _out_of_range(df):
    df.loc[df.index[:3], "distance"] = 99999.0
    return df


def _unknown_category(df):
    df.loc[df.index[:2], "dest"] = "XXX"
    return df


def _wrong_type(df):
    df["distance"] = df["distance"].map(lambda v: f"{v:.0f} mi")
    return df


def _outside_day(df):
    df.loc[df.index[:4], "sched_dep"] = pd.Timestamp("2013-03-07 10:00")
    return df


def _target_out_of_range(df):
    df.loc[df.index[:2], "arr_delay"] = 5000.0
    return df


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        (lambda df: df.drop(columns=["humid"]), "missing_columns", "missing column(s): humid"),
        (lambda df: df.assign(tail_number="N1"), "unexpected_columns", "tail_number"),
        (_wrong_type, "wrong_type", "column distance holds"),
        (_nulls, "too_many_nulls", "column carrier has 5 null value(s)"),
        (_too_many_weather_nulls, "too_many_nulls", "at most 20% is allowed"),
        (_out_of_range, "out_of_range", "column distance has 3 value(s)"),
        (_unknown_category, "unknown_category", "'XXX'"),
        (lambda df: pd.concat([df, df.head(3)], ignore_index=True), "duplicate_ids", "repeated id"),
        (lambda df: df.head(0), "empty_batch", "batch has 0 rows"),
        (lambda df: df.head(20), "row_count_out_of_bounds", "batch has 20 rows; expected 100 to 2000"),
        (_celsius, "temperature_not_fahrenheit", "probably not in Fahrenheit"),
        (_outside_day, "rows_outside_batch_day", "outside the batch's day 2013-03-05"),
        (_target_out_of_range, "out_of_range", "column arr_delay"),
    ],
    ids=[
        "missing_column",
        "extra_column",
        "wrong_type",
        "required_nulls",
        "nullable_over_share",
        "out_of_range",
        "unknown_category",
        "duplicate_ids",
        "empty",
        "too_few_rows",
        "celsius",
        "outside_day",
        "target_out_of_range",
    ],
)
def test_each_fault_is_explained(spec, good, fault, code, words):
    out = validate_frame(fault(good.copy()), spec, DAY)
    assert not out.passed
    assert code in out.reason_codes, out.reason_codes
    messages = " | ".join(r.message for r in out.reasons)
    assert words in messages, messages
    # one problem, one reason: a structural fault does not cascade into "could not be evaluated"
    assert "check_error" not in out.reason_codes


def test_missing_column_used_by_a_relation_is_reported_once(spec, good):
    out = validate_frame(good.drop(columns=["temp"]), spec, DAY)
    assert out.reason_codes == ["missing_columns"]


def test_a_few_nulls_in_a_nullable_feature_pass(spec, good):
    good.loc[good.index[:10], "pressure"] = np.nan
    assert validate_frame(good, spec, DAY).passed


def test_unreadable_and_unsupported_files(spec, tmp_path, good):
    truncated = tmp_path / "outcomes_2013-03-05.parquet"
    good.to_parquet(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(BatchReadError) as exc:
        read_batch(truncated, spec)
    assert exc.value.code == "unreadable_file"
    other = tmp_path / "outcomes_2013-03-05.xlsx"
    other.write_bytes(b"PK\x03\x04")
    with pytest.raises(BatchReadError) as exc:
        read_batch(other, spec)
    assert exc.value.code == "unsupported_format"


def test_csv_batches_are_read_with_their_time_column(spec, tmp_path, good):
    path = tmp_path / "outcomes_2013-03-05.csv"
    good.to_csv(path, index=False)
    df = read_batch(path, spec)
    assert str(df["sched_dep"].dtype).startswith("datetime64")
    assert validate_frame(df, spec, DAY).passed


def test_report_is_readable_html(spec, good):
    out = validate_frame(_celsius(good.copy()), spec, DAY)
    page = render_report("Label batch x.parquet", out.reasons, out.checks, {"rows": out.rows})
    assert "QUARANTINED" in page and "temperature_not_fahrenheit" in page and "<table>" in page
