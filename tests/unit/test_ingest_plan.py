from __future__ import annotations

from pathlib import Path

import pytest

from include.mlops.steps.ingest import chunk_groups, group_by_day, task_label

pytestmark = pytest.mark.unit


def test_groups_keep_days_whole_and_arrival_order():
    paths = [Path(n) for n in ["outcomes_2013-01-02.parquet", "outcomes_2013-01-01.parquet", "outcomes_2013-01-01-resend.parquet", "x.csv"]]
    assert group_by_day(paths) == [
        ["outcomes_2013-01-01.parquet", "outcomes_2013-01-01-resend.parquet"],
        ["outcomes_2013-01-02.parquet"],
        ["x.csv"],
    ]


@pytest.mark.parametrize(
    ("days", "max_chunks", "sizes"),
    [(0, 4, []), (1, 4, [1]), (5, 4, [2, 2, 1]), (7, 4, [2, 2, 2, 1]), (8, 4, [2, 2, 2, 2]), (30, 4, [8, 8, 8, 6]), (60, 4, [15] * 4)],
)
def test_chunks_never_exceed_the_limit_nor_split_a_day(days, max_chunks, sizes):
    groups = [[f"outcomes_2013-01-{d + 1:02d}.parquet", f"outcomes_2013-01-{d + 1:02d}-b.parquet"] for d in range(days)]
    chunks = chunk_groups(groups, max_chunks)
    assert [len(c) // 2 for c in chunks] == sizes
    assert [n for c in chunks for n in c] == [n for g in groups for n in g]


def test_task_label_lists_verdicts_or_summarizes():
    ok = {"file_name": "a.parquet", "status": "accepted", "reason_codes": [], "rows": 900}
    bad = {"file_name": "b.parquet", "status": "quarantined", "reason_codes": ["wrong_type"], "rows": 900}
    assert task_label([ok, bad], ["a.parquet", "b.parquet"]) == "a.parquet: accepted (900 rows); b.parquet: quarantined (wrong_type)"
    many = task_label([ok] * 30 + [bad], [])
    assert many.startswith("30 accepted, 1 quarantined: b.parquet (wrong_type)") and len(many) <= 240
    assert task_label([], ["c.parquet"]) == "c.parquet: already handled"
    handled = task_label([], [f"outcomes_2013-01-{d:02d}.parquet" for d in range(1, 32)])
    assert handled.endswith("...: already handled") and len(handled) <= 240  # Airflow's column holds 250


def test_gate_labels_fit_airflows_column():
    from include.mlops.steps.gates import GateResult, gates_label

    results = [GateResult("beats_champion", False, "worse", "x" * 300), GateResult("beats_champion", True, "ok", "fine")]
    label = gates_label(results)
    assert label.startswith("beats_champion: FAILED (xxx") and label.endswith("...") and len(label) <= 240
    assert gates_label(results[1:]) == "beats_champion: passed (fine)"
