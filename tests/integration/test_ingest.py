"""Ingest on real 2013 batches against a temporary state folder (ops store + lake)."""

from __future__ import annotations

import shutil
from datetime import date

import pytest

from include.mlops.steps import ingest
from include.mlops.steps.ingest import discover, group_by_day, ingest_file, ingest_group
from tooling.replay import FAULTS, replay, write_day

pytestmark = pytest.mark.integration


def run_all(rt):
    results = []
    for group in group_by_day(discover(rt.lake)):
        results += ingest_group(group, rt.spec, rt.store, rt.lake, model=rt.model_name)
    return {r.file_name: r for r in results}


def pool_days(rt):
    return sorted(p.name.removeprefix("day=") for p in rt.lake.pool.glob("day=*") if any(p.iterdir()))


def test_week_plus_faults_leaves_exactly_the_good_days(runtime, flights):
    replay(runtime, date(2013, 1, 1), 7, ["celsius", "missing_column", "duplicate_batch"], source=flights)
    results = run_all(runtime)
    accepted = sorted(n for n, r in results.items() if r.status == "accepted")
    assert accepted == [f"outcomes_2013-01-0{d}.parquet" for d in range(1, 8)]
    assert results["outcomes_2013-01-08.parquet"].reason_codes == ["temperature_not_fahrenheit"]
    assert results["outcomes_2013-01-09.parquet"].reason_codes == ["missing_columns"]
    assert results["outcomes_2013-01-01-resend.parquet"].reason_codes == ["duplicate_batch"]
    assert pool_days(runtime) == [f"2013-01-0{d}" for d in range(1, 8)]
    # the pool holds every accepted row once, with the derived label; ground truth matches
    import pandas as pd

    pool = pd.read_parquet(runtime.lake.pool)
    assert len(pool) == sum(r.rows for r in results.values() if r.status == "accepted")
    assert pool["flight_id"].is_unique and set(pool["late"].unique()) <= {0, 1}
    assert runtime.store.count_ground_truth(runtime.model_name) == len(pool)
    # quarantine: files moved untouched, records with reasons, one alert and one decision each
    q = runtime.store.list_quarantine(runtime.model_name)
    assert len(q) == 3 and all(row["reasons"] and row["report_path"] for row in q)
    for row in q:
        assert (runtime.lake.quarantine / f"{row['batch_id']:06d}-{row['file_name']}").is_file()
    assert not list(discover(runtime.lake))
    assert len([a for a in runtime.store.list_alerts() if a["kind"] == "batch_quarantined"]) == 3
    decisions = runtime.store.list_decisions(runtime.model_name, "ingest")
    assert len(decisions) == 10 and all(d["reason_code"] for d in decisions)


@pytest.mark.parametrize("fault", sorted(set(FAULTS) - {"csv", "duplicate_batch"}))
def test_every_fault_is_quarantined_and_nothing_enters_the_pool(runtime, flights, fault):
    path = write_day(runtime, flights, date(2013, 2, 3), fault)
    result = ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert result.status == "quarantined" and result.reason_codes and result.messages
    assert pool_days(runtime) == []
    assert runtime.store.count_ground_truth(runtime.model_name) == 0
    assert (runtime.lake.quarantine / f"{result.batch_id:06d}-{path.name}").read_bytes()  # kept untouched
    report = runtime.lake.ingest_reports / f"batch-{result.batch_id:06d}.html"
    assert "QUARANTINED" in report.read_text()


def test_csv_delivery_is_accepted(runtime, flights):
    path = write_day(runtime, flights, date(2013, 2, 3), "csv")
    assert ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name).status == "accepted"


def test_rerun_after_a_crash_between_verdict_and_move_is_idempotent(runtime, flights, monkeypatch):
    path = write_day(runtime, flights, date(2013, 1, 5))
    real_move = ingest._move
    calls = {"n": 0}

    def crash_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk went away")
        return real_move(*args, **kwargs)

    monkeypatch.setattr(ingest, "_move", crash_once)
    with pytest.raises(OSError):
        ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert path.exists()  # the delivery is still in landing
    rows_after_crash = runtime.store.count_ground_truth(runtime.model_name)
    again = ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert again.status == "accepted" and again.resumed
    assert runtime.store.count_ground_truth(runtime.model_name) == rows_after_crash
    assert len(runtime.store.list_batches()) == 1
    assert len(runtime.store.list_decisions(kind="ingest")) == 1
    assert not path.exists()


def test_rerun_of_a_quarantine_adds_no_second_record(runtime, flights, monkeypatch):
    path = write_day(runtime, flights, date(2013, 1, 5), "celsius")
    real_move = ingest._move
    monkeypatch.setattr(ingest, "_move", lambda *a, **k: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    monkeypatch.setattr(ingest, "_move", real_move)
    again = ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert again.status == "quarantined" and again.resumed and again.reason_codes == ["temperature_not_fahrenheit"]
    assert len(runtime.store.list_quarantine()) == 1
    assert len(runtime.store.list_alerts()) == 1


def test_redelivered_accepted_file_is_a_duplicate(runtime, flights):
    path = write_day(runtime, flights, date(2013, 1, 5))
    saved = path.read_bytes()
    assert ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name).status == "accepted"
    path.write_bytes(saved)  # the producer sends the same file again
    dup = ingest_file(path, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert dup.status == "quarantined" and dup.reason_codes == ["duplicate_batch"]
    assert runtime.store.count_ground_truth(runtime.model_name) == len(flights[flights["sched_dep"].dt.date == date(2013, 1, 5)])


def test_second_batch_for_an_accepted_day_is_refused(runtime, flights):
    first = write_day(runtime, flights, date(2013, 1, 5))
    ingest_file(first, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    import pandas as pd

    df = pd.read_parquet(runtime.lake.archive)
    changed = runtime.lake.landing / "outcomes_2013-01-05-corrected.parquet"
    df.assign(arr_delay=df["arr_delay"] + 1).to_parquet(changed)
    result = ingest_file(changed, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert "duplicate_day" in result.reason_codes and "known_entity_ids" in result.reason_codes


def test_corrected_batch_for_a_quarantined_day_is_accepted(runtime, flights):
    bad = write_day(runtime, flights, date(2013, 1, 5), "celsius")
    assert ingest_file(bad, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name).status == "quarantined"
    good = write_day(runtime, flights, date(2013, 1, 5))
    assert ingest_file(good, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name).status == "accepted"


def test_stale_batch_is_refused(runtime, flights):
    ingest_file(write_day(runtime, flights, date(2013, 3, 1)), runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    old = ingest_file(write_day(runtime, flights, date(2013, 2, 1)), runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
    assert old.reason_codes == ["stale_batch"]


def test_a_backlog_validated_out_of_order_is_not_stale(runtime, flights):
    """Batches that arrived in day order are never stale, whatever order they are validated in."""
    import os

    early = write_day(runtime, flights, date(2013, 3, 1))
    late = write_day(runtime, flights, date(2013, 3, 20))
    os.utime(early, (1_000_000_000, 1_000_000_000))  # arrived first
    assert ingest_file(late, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name).status == "accepted"
    assert ingest_file(early, runtime.spec, runtime.store, runtime.lake, model=runtime.model_name).status == "accepted"


def test_files_being_written_and_markers_are_ignored(runtime, flights):
    (runtime.lake.landing / ".outcomes_2013-01-05.parquet.tmp-1").write_bytes(b"partial")
    (runtime.lake.landing / "_READY").touch()
    (runtime.lake.landing / "outcomes_2013-01-06.parquet.part").write_bytes(b"partial")
    assert discover(runtime.lake) == []
    shutil.rmtree(runtime.lake.landing)
    assert discover(runtime.lake) == []
