"""Limits checked before a batch's data is read: parquet metadata (rows, uncompressed bytes, row
groups) and the CSV row cap (domain.validation)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.mlops.domain.validation import BatchReadError, check_parquet_metadata, read_batch

pytestmark = pytest.mark.unit


def parquet_bytes(table: pa.Table, **kw) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def limited(spec, **batch):
    return spec.model_copy(update={"batch": spec.batch.model_copy(update=batch)})


def test_rows_declared_in_the_metadata_are_refused_before_reading(spec, tmp_path, monkeypatch):
    data = parquet_bytes(pa.table({"a": pa.array([0] * 5000, pa.int8())}))
    with pytest.raises(BatchReadError) as err:
        check_parquet_metadata(io.BytesIO(data), spec, "b.parquet")
    assert err.value.code == "row_count_out_of_bounds" and "declares 5000 rows" in err.value.message
    import pandas as pd

    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: pytest.fail("data read"))
    with pytest.raises(BatchReadError, match="declares 5000 rows"):
        read_batch(tmp_path / "b.parquet", spec, data)


def test_uncompressed_bytes_declared_in_the_metadata_are_refused(spec):
    data = parquet_bytes(pa.table({"blob": ["A" * 200_000]}), compression="zstd")
    assert len(data) < 5_000
    with pytest.raises(BatchReadError) as err:
        check_parquet_metadata(io.BytesIO(data), limited(spec, max_uncompressed_bytes=100_000), "b.parquet")
    assert err.value.code == "file_too_large" and "uncompressed" in err.value.message
    check_parquet_metadata(io.BytesIO(data), spec, "b.parquet")  # within the default limit


def test_a_file_without_a_parquet_footer_is_unreadable(spec):
    data = parquet_bytes(pa.table({"a": [1, 2, 3]}))
    with pytest.raises(BatchReadError) as err:
        check_parquet_metadata(io.BytesIO(data[: len(data) // 2]), spec, "b.parquet")
    assert err.value.code == "unreadable_file"


def test_a_csv_is_read_to_one_row_past_the_limit(spec, tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("a\n" + "1\n" * 50)
    with pytest.raises(BatchReadError) as err:
        read_batch(path, limited(spec, min_rows=1, max_rows=10))
    assert err.value.code == "row_count_out_of_bounds" and "more than 10 rows" in err.value.message
    assert len(read_batch(path, spec)) == 50


def test_read_batch_reads_the_bytes_it_is_given(spec, tmp_path):
    data = parquet_bytes(pa.table({"a": [1, 2, 3]}))
    df = read_batch(tmp_path / "not-on-disk.parquet", spec, data)
    assert df["a"].tolist() == [1, 2, 3]
