"""The backtest's event-time bookkeeping on tiny synthetic data: when labels may be used, that no
decision ever depends on a label before it arrives, that the output is deterministic, and the pure
pieces monitoring and the gates share with it (calibrated drift judged by ``check_drift``, the
gates' comparisons)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from include.mlops.domain.spec import Spec, parse_spec
from include.mlops.steps.backtest import run_backtest
from include.mlops.steps.backtest.history import History
from include.mlops.steps.backtest.loop import monitoring_windows

pytestmark = pytest.mark.unit

CATS = ["a", "b", "c", "d"]


def tiny_spec(**monitoring: object) -> Spec:
    return parse_spec(
        {
            "name": "backtest_test",
            "source": {"kind": "files", "path": "/nonexistent"},
            "entity_id": "id",
            "time_column": "ts",
            "label_delay_hours": 24,
            "target": {"name": "y", "source_column": "raw_y", "op": ">", "value": 0},
            "features": [
                {"name": "x", "type": "numeric"},
                {"name": "w", "type": "numeric"},
                {"name": "c", "type": "categorical", "categories": CATS},
            ],
            "training": {"window_days": 21, "holdout_days": 7, "min_rows": 100, "min_holdout_rows": 50, "params": {"max_iter": 15}},
            "early_window": {"min_requests": 40},
            "promotion": {"min_labelled_rows": 60},
            "monitoring": {"window_hours": 168, "min_rows": 50, "min_labelled_rows": 50, **monitoring},
            "retraining": {"cooldown_days": 7, "min_new_rows": 100},
        }
    )


def tiny_history(days: int = 84, per_day: int = 60, seed: int = 3) -> pd.DataFrame:
    """A drifting synthetic workload: the relation between x and the label turns over the weeks."""
    rng = np.random.default_rng(seed)
    rows = []
    start = datetime(2021, 1, 1)
    for d in range(days):
        x = rng.normal(size=per_day) + 0.02 * d
        w = rng.normal(size=per_day)
        c = rng.choice(CATS, size=per_day)
        slope = 1.5 - d / days * 2.0
        raw = slope * x + 0.8 * w + (c == "a") + rng.normal(scale=1.0, size=per_day)
        minutes = np.sort(rng.integers(0, 24 * 60, size=per_day))
        for i in range(per_day):
            rows.append(
                {
                    "id": f"{d:03d}-{i:03d}",
                    "ts": start + timedelta(days=d, minutes=int(minutes[i])),
                    "x": x[i],
                    "w": w[i],
                    "c": c[i],
                    "raw_y": raw[i],
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return tiny_history()


@pytest.fixture(scope="module")
def result(raw: pd.DataFrame) -> dict:
    return run_backtest(tiny_spec(), raw)


def test_labels_of_a_day_are_usable_only_after_the_day_and_the_delay(raw):
    h = History.of(tiny_spec(), raw)
    d = date(2021, 1, 10)
    assert h.label_time(d) == datetime(2021, 1, 12)
    lo, hi = h.span(d, d)
    assert not h.labels_usable(lo, hi, datetime(2021, 1, 11, 23, 59)).any()
    assert h.labels_usable(lo, hi, datetime(2021, 1, 12)).all()
    assert h.labelled_days(datetime(2021, 1, 12))[-1] == d
    assert max(h.labelled_days(datetime(2021, 1, 12, 12))) == d


def test_history_days_are_contiguous_row_slices(raw):
    h = History.of(tiny_spec(), raw)
    lo, hi = h.span(date(2021, 1, 5), date(2021, 1, 6))
    ts = h.frame["ts"].iloc[lo:hi]
    assert hi - lo == 120 and ts.min() >= pd.Timestamp("2021-01-05") and ts.max() < pd.Timestamp("2021-01-07")
    assert h.labels.tolist() == (h.frame["raw_y"] > 0).astype(int).tolist()


def test_monitoring_windows_are_complete_consecutive_weeks():
    windows = monitoring_windows(date(2021, 2, 1), date(2021, 2, 20), 7)
    assert windows == [(date(2021, 2, 1), date(2021, 2, 7)), (date(2021, 2, 8), date(2021, 2, 14))]


def test_every_training_window_ends_with_labels_that_had_arrived(result, raw):
    h = History.of(tiny_spec(), raw)
    trainings = [d for d in result["loop"]["decisions"] if d["kind"] == "training" and d["outcome"] == "registered"]
    assert trainings, "the synthetic drift must make the loop retrain"
    for d in trainings:
        holdout_end = date.fromisoformat(d["window"]["holdout_end"])
        assert h.label_time(holdout_end) <= datetime.fromisoformat(d["at"])


def test_no_decision_changes_when_labels_not_yet_arrived_change(raw, result):
    """Flip the outcomes of the last 20 days: every decision made before those labels could
    arrive is identical (nothing read a label early)."""
    changed_from = date(2021, 1, 1) + timedelta(days=64)
    poisoned = raw.copy()
    late = pd.to_datetime(poisoned["ts"]) >= pd.Timestamp(changed_from)
    poisoned.loc[late, "raw_y"] = -poisoned.loc[late, "raw_y"]
    other = run_backtest(tiny_spec(), poisoned)
    arrives = datetime.combine(changed_from, datetime.min.time()) + timedelta(days=2)
    before = [d for d in result["loop"]["decisions"] if datetime.fromisoformat(d["at"]) < arrives]
    assert before and before == [d for d in other["loop"]["decisions"] if datetime.fromisoformat(d["at"]) < arrives]
    after = [d for d in result["loop"]["decisions"] if datetime.fromisoformat(d["at"]) >= arrives]
    assert after != [d for d in other["loop"]["decisions"] if datetime.fromisoformat(d["at"]) >= arrives]


def test_output_is_deterministic(raw, result):
    again = run_backtest(tiny_spec(), raw)
    strip = lambda r: json.dumps({k: v for k, v in r.items() if k != "timing"}, sort_keys=True, default=str)  # noqa: E731
    assert strip(again) == strip(result)


def test_every_policy_is_scored_on_the_same_rows_after_the_first_month(result):
    months = {name: list(v["months"]) for name, v in result["auc"].items()}
    assert set(months) == {"loop", "frozen", "weekly", "monthly", "weekly_newest", "oracle"}
    assert all(m == ["2021-02", "2021-03"] for m in months.values())
    assert result["history"]["scored_from"] == "2021-02-01"
    assert result["retrains"]["weekly"] == 7 and result["retrains"]["monthly"] == 1 and result["retrains"]["weekly_newest"] == 7
    # every other policy against the loop, with a day-block bootstrap interval, in the JSON and the table
    from include.mlops.steps.backtest.report import table

    assert set(result["versus_loop"]) == set(months) - {"loop"}
    for name, v in result["versus_loop"].items():
        diff = result["auc"]["loop"]["mean"] - result["auc"][name]["mean"]
        assert v["ci95"][0] <= v["ci95"][1] and v["ci95"][0] - 0.01 <= diff <= v["ci95"][1] + 0.01
    assert "loop - this [95% interval]" in table(result)
    # the oracle picks, each month, one of the models the weekly schedule trained before that month
    for month, key in result["oracle_choices"].items():
        holdout_end = key.split("holdout ")[1].rstrip(")").split("..")[1]
        assert holdout_end < f"{month}-01"


def test_blind_weekly_trains_on_the_newest_labels_that_had_arrived(raw):
    """The blind schedule's models end with the newest labelled day at each close (no week held
    back for a holdout, a week fresher than the loop's window) and never with a label not yet arrived."""
    from include.mlops.steps.backtest.baselines import schedule
    from include.mlops.steps.backtest.history import day_start
    from include.mlops.steps.backtest.models import Trainer

    h = History.of(tiny_spec(), raw)
    trainer = Trainer(h, references=False)
    serve_from = date(2021, 2, 1)
    first = trainer.fit(trainer.plan(h.labelled_days(day_start(serve_from))))
    planned = schedule(trainer, first, serve_from, 7)
    newest = schedule(trainer, first, serve_from, 7, newest=True)
    assert [s.since for s in newest] == [s.since for s in planned] and len(newest) == 8
    for seg, plan in zip(newest[1:], planned[1:], strict=True):
        w = seg.fitted.window
        answering_from = datetime.combine(seg.since, datetime.min.time())
        assert w.train_end == seg.since - timedelta(days=2)  # the close's day minus the 24 h label delay
        assert h.label_time(w.train_end) <= answering_from < h.label_time(w.train_end + timedelta(days=1))
        assert (w.train_end - w.train_start).days + 1 == 21 and seg.fitted.window.label.endswith("(no holdout)")
        assert w.train_end == plan.fitted.window.holdout_end  # the loop's window keeps that last week to evaluate on
        assert seg.fitted.train_rows == 21 * 60


def test_the_result_says_what_a_replay_cannot_judge(result):
    assert any("latency" in n for n in result["not_replayed"])
    counts = result["loop"]["counts"]
    assert counts["windows"] == 7 and counts.get("retrains", 0) >= 1
    assert result["loop"]["ledger"][0] == {"action": "deployed", "from": None, "to": "1"}


def test_with_calibration_each_version_carries_its_thresholds(raw):
    spec = tiny_spec(drift_calibration={"enabled": True, "chunk_days": 7, "min_chunks": 2})
    out = run_backtest(spec, raw)
    assert all(v["calibrated"] for v in out["loop"]["versions"].values())
