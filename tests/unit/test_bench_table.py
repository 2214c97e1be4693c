"""benchmarks/table.py: the backtest's rows, and rows carried over when a raw result is not on this machine."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.unit

BACKTEST = {
    "started": "2026-12-03T19:46:38+00:00",
    "threads": "1",
    "process": {"process_wall_s": 81.3, "cpu_s": 80.9, "max_rss_mb": 1210.4, "load_before": [1.1, 1.0, 0.9], "load_after": [1.3, 1.1, 0.9]},
    "timing": {"wall_seconds": 76.4, "fit_seconds": 44.2, "score_seconds": 19.4, "fits": 48},
    "anchor": {"fit_seconds": 44.2, "fits": 48, "budget_seconds": 300.0, "within_budget": True},
    "auc_mean": {"loop": 0.6857, "weekly": 0.6851, "frozen": 0.6376},
    "retrains": {"loop": 45, "weekly": 47},
}

PREVIOUS = """# Benchmarks

<!-- bench-table -->
Written 2026-11-27 13:17 UTC by `benchmarks/table.py` on 2 cores (Intel(R) Xeon(R) @ 2.50GHz), Python 3.11.7, load average 1.23.

| benchmark | what | figure | anchor | source |
|---|---|---|---|---|
| serving API | 8 clients | 819 req/s, p99 20.7 ms | 50 req/s (`mlflow models serve`) | `serving-20261127T014916Z.json` |
| load test | (no result: run `make bench-load`) |  |  | no run |
<!-- /bench-table -->

## Prose below
"""


def load():
    spec = importlib.util.spec_from_file_location("bench_table", ROOT / "benchmarks" / "table.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_table"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_backtest_rows_quote_the_run_beside_its_fits_and_the_budget():
    m = load()
    rows = m.backtest_rows(Path("backtest-20261203T194638Z.json"), BACKTEST)
    assert len(rows) == 2
    first, auc = rows
    assert first[0] == "backtest" and first[4] == "`backtest-20261203T194638Z.json`"
    assert first[2] == "whole 2013 replay: 81 s wall, 1210 MiB peak (81 CPU s; the replay itself 76 s)"
    assert first[3] == "fits alone: 44 s of it (48 fits); budget 300 s"
    assert "load 1.10 at start" in first[1] and "one thread" in first[1]
    assert auc[2] == "0.6857 (the loop, 45 retrains)"
    assert auc[3] == "0.6851 (retraining every 7 days, 47 retrains)"


def test_backtest_rows_without_auc_or_run():
    m = load()
    data = {k: v for k, v in BACKTEST.items() if k != "auc_mean"}
    assert len(m.backtest_rows(Path("backtest-x.json"), data)) == 1
    (row,) = m.backtest_rows(None, None)
    assert row[1] == "(no result: run `make bench-backtest`)" and row[4] == "no run"


def test_previous_rows_and_carry_over():
    m = load()
    previous = m.previous_rows(PREVIOUS)
    assert [r[0] for r in previous] == ["serving API", "load test"]
    new = [
        ["serving API", "(no result: run `make bench-serving`)", "", "", "no run"],
        ["load test", "(no result: run `make bench-load`)", "", "", "no run"],
        ["backtest", "x", "y", "z", "`backtest-1.json`"],
    ]
    machine = m.previous_machine(PREVIOUS)
    assert machine == "2 cores, Intel(R) Xeon(R) @ 2.50GHz"
    rows, carried = m.carry_over(new, previous, machine)
    assert carried == ["serving API"]  # the load test had no figure before either: its placeholder stays
    assert rows[0][:4] == previous[0][:4] and rows[1] == new[1] and rows[2] == new[2]
    marked = "`serving-20261127T014916Z.json`; carried over from a table written on 2 cores, Intel(R) Xeon(R) @ 2.50GHz"
    assert rows[0][4] == marked
    again, _ = m.carry_over(new, rows, "2 cores, AMD EPYC")  # carried twice: still the machine it was measured on
    assert again[0][4] == marked
    assert m.previous_rows("no table here") == []
    assert m.previous_machine("no table here") == "an unknown machine"


def test_main_writes_the_backtest_rows_and_keeps_the_others(tmp_path, monkeypatch):
    m = load()
    results = tmp_path / "results"
    results.mkdir()
    (results / "backtest-20261101T000000Z.json").write_text(json.dumps({**BACKTEST, "process": {**BACKTEST["process"], "max_rss_mb": 1.0}}))
    (results / "backtest-20261203T194638Z.json").write_text(json.dumps(BACKTEST))
    readme = tmp_path / "README.md"
    readme.write_text(PREVIOUS)
    monkeypatch.setattr(m, "HERE", tmp_path)
    assert m.main(["--readme", str(readme), "--demo-summary", str(tmp_path / "none.json")]) == 0
    text = readme.read_text()
    assert text.endswith("<!-- /bench-table -->\n\n## Prose below\n")
    rows = m.previous_rows(text)
    assert rows[0][2] == "819 req/s, p99 20.7 ms"  # carried over
    assert "The rows of serving API are carried over" in text
    assert rows[0][4].endswith("; carried over from a table written on 2 cores, Intel(R) Xeon(R) @ 2.50GHz")
    backtest = [r for r in rows if r[0] == "backtest"]
    assert backtest[0][2].startswith("whole 2013 replay: 81 s wall, 1210 MiB peak")  # the newest run
    assert backtest[0][4] == "`backtest-20261203T194638Z.json`"
