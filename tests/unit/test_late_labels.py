"""Late labels, the pure parts: which quality each consumer reads (a window's verdict or its newest
revision of that verdict), the decay a revision shows that the verdict missed, the JSON-safe
values stored, and the status page's cell (from a real SQLite ops store)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

from include.mlops.steps.monitoring.revision import (
    DECAY_REVISED,
    Revision,
    current_quality,
    decay_missed,
    first_quality,
    json_safe,
    latest_verdicts,
    live_of,
    revised_summary,
)

T0 = datetime(2013, 2, 8)
T1 = T0 + timedelta(days=7)


def verdict(id_: int, live: float | None, rows: int, *, version: int = 3, end: datetime = T1, codes: list[str] | None = None) -> dict:
    quality = {"labelled_rows": rows, "metric": "roc_auc", "holdout": 0.75, "status": "measured" if live is not None else "waiting"}
    if live is not None:
        quality["live"] = live
    return {
        "id": id_,
        "kind": "monitor",
        "version": version,
        "window_start": end - timedelta(days=7),
        "window_end": end,
        "outcome": "healthy",
        "inputs": {"role": "champion", "reason_codes": codes or ["healthy"], "quality": quality},
        "created_at": T1 + timedelta(hours=id_),
    }


def revision(decision_id: int, live: float | None, rows: int, *, version: str = "3", end: datetime = T1, code: str | None = None) -> dict:
    quality = {"labelled_rows": rows, "metric": "roc_auc", "holdout": 0.75, "status": "measured", "live": live}
    return {
        "decision_id": decision_id,
        "version": version,
        "window_start": end - timedelta(days=7),
        "window_end": end,
        "labelled_rows": rows,
        "value": live,
        "quality": quality,
        "reason_code": code,
        "decayed": int(code is not None),
        "revised_at": T1 + timedelta(days=1),
    }


def keyed(*revs: dict) -> dict:
    return {(r["version"], r["window_start"], r["window_end"]): r for r in revs}


def test_a_window_reads_its_newest_revision_of_its_own_verdict():
    d = verdict(1, 0.71, 400)
    assert live_of(d, {}) == 0.71 and current_quality(d, {})["labelled_rows"] == 400
    revs = keyed(revision(1, 0.69, 1400))
    assert live_of(d, revs) == 0.69
    assert current_quality(d, revs)["labelled_rows"] == 1400
    assert first_quality(d)["labelled_rows"] == 400  # the verdict itself is untouched
    # judged again (force): a revision of the old verdict no longer applies
    again = {**verdict(2, 0.70, 1300)}
    assert live_of(again, revs) == 0.70
    # another version's window of the same span is another window
    assert live_of(verdict(3, 0.8, 500, version=4), revs) == 0.8


def test_no_value_is_nan_and_a_window_without_quality_is_not_revisable():
    assert math.isnan(live_of(verdict(1, None, 120), {}))
    assert math.isnan(live_of(verdict(1, 0.7, 400), keyed(revision(1, None, 410))))  # a revision with no value yet
    too_few_rows = {**verdict(1, 0.7, 400), "inputs": {"role": "champion", "quality": {}}}
    assert first_quality(too_few_rows) is None and current_quality(too_few_rows, {}) is None


def test_latest_verdicts_keep_the_newest_decision_per_window_oldest_window_first():
    later = T1 + timedelta(days=1)
    ds = [verdict(5, 0.7, 400, end=later), verdict(1, 0.7, 400), verdict(3, 0.72, 410), verdict(4, 0.6, 300, version=4)]
    ds.append({**verdict(6, 0.7, 1), "version": None})  # not a window verdict
    found = latest_verdicts(ds)
    assert [(k[0], k[2], d["id"]) for k, d in found.items()] == [("3", T1, 3), ("4", T1, 4), ("3", later, 5)]


def test_a_decay_only_the_late_labels_show_is_reported_once_missed(spec):
    mon = spec.monitoring  # decay: more than 0.05 below the holdout value
    late = {"labelled_rows": 1400, "metric": "roc_auc", "holdout": 0.75, "status": "measured", "live": 0.66}
    reason = decay_missed(["healthy"], late, mon, version="3")
    assert reason is not None and "0.6600 on 1400 labelled predictions vs 0.7500" in reason
    assert decay_missed(["quality_decay", "dataset_drift"], late, mon) is None  # the verdict saw it
    assert decay_missed(["healthy"], {**late, "live": 0.72}, mon) is None  # within the allowed drop
    assert decay_missed(["healthy"], {**late, "live": None, "status": "waiting_for_labels"}, mon) is None


def test_stored_values_are_json_safe():
    import numpy as np

    raw = {"live": float("nan"), "x": [float("inf"), np.float64(0.5), np.int64(3)], "ok": 1.5, "s": "roc_auc"}
    safe = json_safe(raw)
    assert safe == {"live": None, "x": [None, 0.5, 3], "ok": 1.5, "s": "roc_auc"}
    json.dumps(safe, allow_nan=False)


def test_revised_summary_overlays_the_value_and_says_what_the_verdict_had():
    d = verdict(1, 0.71, 400)
    summary = {"version": "3", "quality": {**d["inputs"]["quality"], "trend_test": {"windows": 3}, "estimated": {"value": 0.8}}}
    assert revised_summary(summary, d, {}) is summary
    out = revised_summary(summary, d, keyed(revision(1, 0.64, 1400, code=DECAY_REVISED)))
    q = out["quality"]
    assert (q["live"], q["labelled_rows"]) == (0.64, 1400)
    assert q["trend_test"] == {"windows": 3} and q["estimated"] == {"value": 0.8}  # the rest of the verdict kept
    assert q["revised"] == {
        "first_live": 0.71,
        "first_labelled_rows": 400,
        "revised_at": "2013-02-16T00:00:00",
        "reason_code": DECAY_REVISED,
        "decayed": True,
    }
    json.dumps(out)


def test_a_revision_reads_as_one_line():
    r = Revision("3", T0.isoformat(), T1.isoformat(), "champion", "roc_auc", 400, 1400, 0.71, 0.64, DECAY_REVISED)
    assert r.line() == "v3 2013-02-08T00:00..2013-02-15T00:00: roc_auc 0.7100 on 400 -> 0.6400 on 1400 labelled rows (decay_revised)"
    assert (
        Revision("3", T0.isoformat(), T1.isoformat(), "", "roc_auc", 100, 120, None, None)
        .line()
        .endswith("- on 100 -> - on 120 labelled rows")
    )


def test_the_status_page_shows_the_revised_value_and_its_labelled_rows(runtime, tmp_path):
    from include.mlops.ui.status_page import as_json, gather, render

    rt = runtime
    summaries = []
    for i, live in enumerate((0.71, 0.73)):
        end = T1 + timedelta(days=i)
        path = rt.lake.root / "reports" / rt.model_name / "monitoring" / "v3" / f"w{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        quality = {"labelled_rows": 400 + i, "metric": "roc_auc", "holdout": 0.75, "status": "measured", "live": live}
        summary = {"model": rt.model_name, "version": "3", "role": "champion", "window_start": (end - timedelta(days=7)).isoformat(),
                   "window_end": end.isoformat(), "rows": 900, "outcome": "healthy", "reason_codes": ["healthy"], "reasons": [],
                   "drift": {"columns": {}}, "quality": quality, "report": None}  # fmt: skip
        Path(path).write_text(json.dumps(summary))
        summaries.append(
            rt.store.record_decision(
                rt.model_name,
                "monitor",
                "healthy",
                "healthy",
                version=3,
                window_start=end - timedelta(days=7),
                window_end=end,
                inputs={"summary": str(path), "role": "champion", "quality": quality},
            )  # fmt: skip
        )
    key = ("3", T1 - timedelta(days=7), T1)
    late = {"labelled_rows": 1400, "metric": "roc_auc", "holdout": 0.75, "status": "measured", "live": 0.64}
    rt.store.record_window_quality(rt.model_name, key, decision_id=summaries[0], quality=late, decayed=True, reason_code=DECAY_REVISED)

    status = gather(rt)
    first, second = status.windows
    assert first["quality"]["live"] == 0.64 and first["quality"]["revised"]["first_live"] == 0.71
    assert "revised" not in second["quality"]
    page = render(status)
    assert "0.640<br><span class=small>revised, 1400 labelled</span>" in page
    assert "title='at the verdict: 0.710 on 400 labelled'" in page and "<td class=cbad" in page
    assert "0.730<br><span class=small>401 labelled</span>" in page
    json.dumps(as_json(status))
