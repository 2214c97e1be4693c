"""What the ingest refuses before reading a file, and files whose validation crashes.

On the database the tests run against: SQLite by default, PostgreSQL with
``MLOPS_TEST_BACKEND=postgres`` (attempts are remembered in the ops store across runs).
"""

from __future__ import annotations

import os
from datetime import date

import pytest

from include.mlops.adapters.store import Store
from include.mlops.steps import ingest
from include.mlops.steps.ingest import discover, ingest_file, ingest_group
from tooling.replay import day_frame, write_day

pytestmark = pytest.mark.integration

OUTSIDE_MARKER = "OUTSIDE-LANDING-LINE-7f3a"


def run(rt, spec=None, store=None):
    """One ingest run over everything waiting in landing (what a DAG run does)."""
    results = []
    for path in discover(rt.lake):
        results += ingest_group([path.name], spec or rt.spec, store or rt.store, rt.lake, model=rt.model_name)
    return {r.file_name: r for r in results}


def everything_recorded(rt) -> str:
    """Every text the ingest left for people: reports, GX results, alerts, decisions, quarantine records."""
    parts = [p.read_text(errors="replace") for p in rt.lake.ingest_reports.glob("*") if p.is_file()]
    parts += [repr(a) for a in rt.store.list_alerts()]
    parts += [repr(d) for d in rt.store.list_decisions(rt.model_name)]
    parts += [repr(q) for q in rt.store.list_quarantine(rt.model_name)]
    return "\n".join(parts)


def test_a_symlink_is_quarantined_and_its_target_never_read(runtime, flights, tmp_path):
    outside = tmp_path / "outside" / "secret.csv"
    outside.parent.mkdir()
    frame = day_frame(flights, runtime.spec, date(2013, 1, 5))
    frame.assign(carrier=OUTSIDE_MARKER).to_csv(outside, index=False)  # would show up as an unknown category
    runtime.lake.landing.mkdir(parents=True, exist_ok=True)
    link = runtime.lake.landing / "outcomes_2013-01-05.csv"
    link.symlink_to(outside)
    dangling = runtime.lake.landing / "outcomes_2013-01-06.parquet"
    dangling.symlink_to(tmp_path / "nowhere.parquet")
    results = run(runtime)
    for name in (link.name, dangling.name):
        r = results[name]
        assert r.status == "quarantined" and r.reason_codes == ["symlink_refused"], r
        moved = runtime.lake.quarantine / f"{r.batch_id:06d}-{name}"
        assert moved.is_symlink()  # moved as a link, never followed
    assert OUTSIDE_MARKER not in everything_recorded(runtime)
    assert str(outside) not in everything_recorded(runtime)
    assert outside.read_text().count(OUTSIDE_MARKER) == len(frame)  # the target untouched
    assert runtime.store.count_ground_truth(runtime.model_name) == 0
    assert discover(runtime.lake) == []


def test_a_fifo_and_a_folder_are_quarantined_unread(runtime):
    runtime.lake.landing.mkdir(parents=True, exist_ok=True)
    fifo = runtime.lake.landing / "outcomes_2013-01-05.parquet"
    os.mkfifo(fifo)  # opening it for reading would block the worker forever
    folder = runtime.lake.landing / "outcomes_2013-01-06.parquet"
    folder.mkdir()
    (folder / "part-0.parquet").write_bytes(b"x")
    results = run(runtime)
    assert results[fifo.name].reason_codes == ["not_a_regular_file"]
    assert "named pipe" in results[fifo.name].messages[0]
    assert results[folder.name].reason_codes == ["not_a_regular_file"]
    assert "folder" in results[folder.name].messages[0]
    assert discover(runtime.lake) == []
    assert (runtime.lake.quarantine / f"{results[folder.name].batch_id:06d}-{folder.name}" / "part-0.parquet").is_file()


def _never_read(monkeypatch):
    """Fail the test if any data page of a batch is read."""
    import pandas as pd

    def refuse(*args, **kwargs):
        raise AssertionError("the batch's data was read")

    monkeypatch.setattr(pd, "read_parquet", refuse)
    monkeypatch.setattr(pd, "read_csv", refuse)


def _spec_with(spec, **batch):
    return spec.model_copy(update={"batch": spec.batch.model_copy(update=batch)})


def test_an_oversized_file_is_quarantined_by_its_size_unread(runtime, flights, monkeypatch):
    path = write_day(runtime, flights, date(2013, 1, 5))
    spec = _spec_with(runtime.spec, max_file_bytes=path.stat().st_size - 1)
    _never_read(monkeypatch)
    result = ingest_file(path, spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert result.status == "quarantined" and result.reason_codes == ["file_too_large"]
    assert "max_file_bytes" in result.messages[0]


def test_a_compressed_bomb_is_refused_by_its_metadata(runtime, monkeypatch):
    """A small file declaring a huge uncompressed size, or far more rows than a batch may have, is
    refused from its parquet footer: no data page is decompressed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    runtime.lake.landing.mkdir(parents=True, exist_ok=True)
    bomb = runtime.lake.landing / "outcomes_2013-01-05.parquet"
    rows = 3_000_000  # zeros: about 30 KB compressed, 24 MB as int64
    pq.write_table(pa.table({"flight_id": pa.array(range(rows), pa.int64()), "x": pa.array([0] * rows, pa.int64())}), bomb)
    assert bomb.stat().st_size < runtime.spec.batch.max_file_bytes
    wide = runtime.lake.landing / "outcomes_2013-01-06.parquet"
    blob = "A" * 5_000_000  # one row of a string that compresses to nothing
    pq.write_table(pa.table({"flight_id": ["x"], "blob": [blob]}), wide, compression="zstd")
    spec = _spec_with(runtime.spec, max_uncompressed_bytes=1_000_000)
    _never_read(monkeypatch)
    results = run(runtime, spec)
    assert results[bomb.name].reason_codes == ["row_count_out_of_bounds"]
    assert f"declares {rows} rows" in results[bomb.name].messages[0]
    assert results[wide.name].reason_codes == ["file_too_large"]
    assert "uncompressed" in results[wide.name].messages[0]


def test_a_csv_row_bomb_is_read_only_to_one_row_past_the_limit(runtime, flights):
    frame = day_frame(flights, runtime.spec, date(2013, 1, 5))
    runtime.lake.landing.mkdir(parents=True, exist_ok=True)
    path = runtime.lake.landing / "outcomes_2013-01-05.csv"
    import pandas as pd

    big = pd.concat([frame] * 5, ignore_index=True)  # ~4,500 rows, spec max_rows 2,000
    big.to_csv(path, index=False)
    result = ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert result.reason_codes == ["row_count_out_of_bounds"] and "more than 2000 rows" in result.messages[0]


def test_a_file_that_crashes_validation_is_retried_then_quarantined(runtime, flights, monkeypatch):
    """Attempts are remembered in the ops store across runs (a fresh Store each run); the file stays
    in landing until the last attempt, and the other files of its chunk are ingested meanwhile."""
    bad = write_day(runtime, flights, date(2013, 1, 5))
    good = write_day(runtime, flights, date(2013, 1, 6))
    real = ingest.validate_frame

    def crash_on_the_5th(df, spec, day, **kw):
        if day == date(2013, 1, 5):
            raise RuntimeError("boom: GX blew up")
        return real(df, spec, day, **kw)

    monkeypatch.setattr(ingest, "validate_frame", crash_on_the_5th)
    limit = runtime.spec.batch.max_validation_attempts
    assert limit == 3
    for attempt in range(1, limit):
        store = Store.open(runtime.settings.ops_db_url)  # a new run
        results = ingest_group([bad.name, good.name], runtime.spec, store, runtime.lake, model=runtime.model_name)
        by_name = {r.file_name: r for r in results}
        assert by_name[bad.name].status == "deferred" and by_name[bad.name].reason_codes == ["validation_crashed"]
        assert bad.exists()
        if attempt == 1:
            assert by_name[good.name].status == "accepted"  # not blocked by the crashing file
        assert store.get_batch(by_name[bad.name].batch_id)["attempts"] == attempt
    alerts = [a for a in runtime.store.list_alerts() if a["kind"] == "batch_validation_crashed"]
    assert len(alerts) == 1 and alerts[0]["count"] == limit - 1
    [last] = ingest_group([bad.name], runtime.spec, Store.open(runtime.settings.ops_db_url), runtime.lake, model=runtime.model_name)
    assert last.status == "quarantined" and last.reason_codes == ["validation_crashed"]
    assert "boom: GX blew up" in last.messages[0] and f"{limit} attempt" in last.messages[0]
    assert not bad.exists() and (runtime.lake.quarantine / f"{last.batch_id:06d}-{bad.name}").is_file()
    assert len(runtime.store.list_batches(runtime.model_name)) == 2  # one record per delivery, reused by every attempt


def test_a_file_that_kills_its_worker_is_quarantined_after_the_attempts(runtime, flights):
    """An attempt is counted before validating: a worker killed by the batch (out of memory) leaves
    no error, and the next run after the last attempt quarantines the file without trying again."""
    path = write_day(runtime, flights, date(2013, 1, 5))
    from include.mlops.steps.ingest_guard import open_delivery

    sha = open_delivery(path, runtime.spec).sha
    batch_id = runtime.store.create_batch(runtime.model_name, path.name, sha, None, None)
    for _ in range(runtime.spec.batch.max_validation_attempts):
        runtime.store.start_attempt(batch_id)  # three runs that died mid-validation
    result = ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert result.batch_id == batch_id and result.reason_codes == ["validation_crashed"]
    assert "worker died" in result.messages[0]
    assert runtime.store.count_ground_truth(runtime.model_name) == 0


def test_a_regular_batch_is_read_from_the_bytes_that_were_hashed(runtime, flights):
    path = write_day(runtime, flights, date(2013, 1, 5))
    import hashlib

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    result = ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert result.status == "accepted"
    assert runtime.store.get_batch(result.batch_id)["content_sha256"] == sha
    assert runtime.store.get_batch(result.batch_id)["attempts"] == 0  # counts only attempts that crashed or died
    decision = runtime.store.list_decisions(runtime.model_name, "ingest")[-1]
    assert decision["inputs"]["profile"]["status"] == "profile not yet learned"
    assert "profile not yet learned (0 of 14" in (runtime.lake.ingest_reports / f"batch-{result.batch_id:06d}.html").read_text()


def test_failures_after_validation_are_not_counted_against_the_file(runtime, flights, monkeypatch):
    """A run that validated the file and then failed for another reason (the disk, the pool write)
    does not use up its attempts: after more failed runs than attempts, the file is still accepted."""
    path = write_day(runtime, flights, date(2013, 1, 5))
    real = ingest._write_pool

    def broken_pool(*args, **kwargs):
        raise RuntimeError("pool volume went away")

    monkeypatch.setattr(ingest, "_write_pool", broken_pool)
    for _ in range(runtime.spec.batch.max_validation_attempts + 1):
        with pytest.raises(RuntimeError, match="pool volume"):
            ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    monkeypatch.setattr(ingest, "_write_pool", real)
    result = ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert result.status == "accepted" and runtime.store.get_batch(result.batch_id)["attempts"] == 0
