"""The learned batch profile, tried as a new user would: batches produced by the replay tool, then
damaged in ways the spec's checks let through. Each damaged batch is quarantined with a reason that
names the column and the statistic, and none of its rows reaches the pool or the ground truth; the
undamaged batch of the same day is accepted.

On the database the tests run against: SQLite by default, PostgreSQL with ``MLOPS_TEST_BACKEND=postgres``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert

from include.mlops.adapters.store import inference_log
from include.mlops.steps.ingest import ingest_file, ingest_group
from tooling.replay import day_frame, replay

pytestmark = pytest.mark.integration

FIRST = date(2013, 1, 1)
LEARNED_DAYS = 14  # the spec's batch.profile.min_batches
DAY = FIRST + timedelta(days=LEARNED_DAYS)


def log_predictions(rt, frame: pd.DataFrame) -> None:
    """The serving API scored every flight of the day (what the inference log holds before labels land)."""
    now = datetime(2026, 1, 1)
    records = [
        {
            "request_id": f"r-{e}",
            "entity_id": str(e),
            "model_name": rt.model_name,
            "model_version": "1",
            "route": "champion",
            "event_time": t.to_pydatetime(),
            "score": 0.2,
            "prediction": 0,
            "status": "ok",
            "created_at": now,
        }
        for e, t in zip(frame[rt.spec.entity_id], frame[rt.spec.time_column], strict=True)
    ]
    with rt.store.begin() as conn:
        conn.execute(insert(inference_log), records)


@pytest.fixture
def learned(runtime, flights):
    """Two weeks of accepted batches, each day's flights scored before its labels landed."""
    for i in range(LEARNED_DAYS + 1):
        log_predictions(runtime, day_frame(flights, runtime.spec, FIRST + timedelta(days=i)))
    paths = replay(runtime, FIRST, LEARNED_DAYS, notify=False, source=flights)
    for p in paths:
        [r] = ingest_group([p.name], runtime.spec, runtime.store, runtime.lake, model=runtime.model_name)
        assert r.status == "accepted", r
    return runtime


def deliver(rt, frame: pd.DataFrame, tag: str):
    path = rt.lake.landing / f"outcomes_{DAY}-{tag}.parquet"
    frame.to_parquet(path, index=False)
    return path


def loose(spec, **features):
    """The spec with some features' declared limits relaxed (a spec written without ranges)."""
    changed = [f.model_copy(update=features[f.name]) if f.name in features else f for f in spec.features]
    return spec.model_copy(update={"features": changed})


def _reformat_ids(df, rng):
    return df.assign(flight_id=[f"fl_{i:08x}" for i in rng.permutation(len(df))])


def _unlogged_ids(df, rng):
    return df.assign(flight_id=df["flight_id"].str.replace("2013", "2012", n=1))


def _all_late(df, rng):
    return df.assign(arr_delay=df["arr_delay"].abs() + 60.0)


def _humid_as_fraction(df, rng):
    return df.assign(humid=df["humid"] / 100)


def _distance_x1000(df, rng):
    return df.assign(distance=df["distance"] * 1000)


def _random_carriers(df, rng):
    """95% of the carriers replaced by random strings (a spec with ``mostly: 0.01`` lets it through)."""
    random = pd.Series([f"Z{v:06d}" for v in rng.integers(0, 10**6, len(df))], index=df.index)
    return df.assign(carrier=df["carrier"].where(df.index % 20 == 0, random))


DAMAGES = {
    # name: (damage, reason code, words the reason must hold, features relaxed in the spec)
    "ids_reformatted": (_reformat_ids, "id_format_changed", ["flight_id", "format"], {}),
    "ids_match_no_prediction": (_unlogged_ids, "join_rate_collapsed", ["flight_id", "join rate"], {}),
    "labels_all_late": (_all_late, "label_rate_abnormal", ["late", "label rate"], {}),
    "humid_percent_to_fraction": (_humid_as_fraction, "feature_scale_shift", ["humid", "magnitude"], {}),
    "distance_x1000": (_distance_x1000, "feature_scale_shift", ["distance", "magnitude"], {"distance": {"max": None}}),
    "carrier_random_strings": (_random_carriers, "category_set_blown_up", ["carrier", "distinct values"], {"carrier": {"mostly": 0.01}}),
}


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_a_damaged_batch_is_quarantined_by_the_profile(learned, flights, name):
    rt = learned
    damage, code, words, relaxed = DAMAGES[name]
    spec = loose(rt.spec, **relaxed)
    rows_before = rt.store.count_ground_truth(rt.model_name)
    pool_before = len(pd.read_parquet(rt.lake.pool))
    frame = damage(day_frame(flights, rt.spec, DAY), np.random.default_rng(7))
    result = ingest_file(deliver(rt, frame, name), spec, rt.store, rt.lake, model=rt.model_name)
    assert result.status == "quarantined" and code in result.reason_codes, result
    [q] = [q for q in rt.store.list_quarantine(rt.model_name) if q["batch_id"] == result.batch_id]
    reason = next(r for r in q["reasons"] if r["code"] == code)
    assert all(w in reason["message"] for w in words), reason["message"]
    assert reason["details"]["statistic"]
    assert rt.store.count_ground_truth(rt.model_name) == rows_before
    assert len(pd.read_parquet(rt.lake.pool)) == pool_before
    assert not list(rt.lake.pool.glob(f"day={DAY}/*"))
    decision = [d for d in rt.store.list_decisions(rt.model_name, "ingest") if d["subject"].startswith(f"batch #{result.batch_id} ")]
    assert decision[0]["inputs"]["profile"]["status"] == "judged"


def test_the_undamaged_batch_is_accepted_and_judged(learned, flights):
    rt = learned
    result = ingest_file(deliver(rt, day_frame(flights, rt.spec, DAY), "good"), rt.spec, rt.store, rt.lake, model=rt.model_name)
    assert result.status == "accepted", result.messages
    decision = rt.store.list_decisions(rt.model_name, "ingest")[-1]
    assert decision["inputs"]["profile"]["status"] == "judged"
    assert decision["inputs"]["profile"]["batches"] == LEARNED_DAYS
    assert decision["inputs"]["profile"]["join_rate"] == 1.0
    stored = rt.store.get_batch(result.batch_id)["profile"]
    assert stored["join_rate"] == 1.0 and stored["numeric"]["distance"]["magnitude"] > 2


def test_history_accepted_before_summaries_were_stored_is_summarized_from_the_pool(learned, flights):
    """Batches accepted by an older version (no stored summary) are summarized once from their pool file."""
    rt = learned
    from include.mlops.adapters.store import batches

    with rt.store.begin() as conn:
        conn.execute(batches.update().values(profile=None))
    result = ingest_file(
        deliver(rt, _all_late(day_frame(flights, rt.spec, DAY), None), "late"), rt.spec, rt.store, rt.lake, model=rt.model_name
    )
    assert "label_rate_abnormal" in result.reason_codes
    assert all(b["profile"] is not None for b in rt.store.list_batches(rt.model_name) if b["status"] == "accepted")


def test_the_profile_can_be_switched_off(learned, flights):
    rt = learned
    spec = rt.spec.model_copy(
        update={"batch": rt.spec.batch.model_copy(update={"profile": rt.spec.batch.profile.model_copy(update={"enabled": False})})}
    )
    frame = _all_late(day_frame(flights, rt.spec, DAY), None)
    result = ingest_file(deliver(rt, frame, "late"), spec, rt.store, rt.lake, model=rt.model_name)
    assert result.status == "accepted"
    assert rt.store.list_decisions(rt.model_name, "ingest")[-1]["inputs"]["profile"] == {"status": "disabled"}


@pytest.mark.parametrize(("fault", "codes"), [("truncated", ["unreadable_file"]), ("celsius", ["temperature_not_fahrenheit"])])
def test_the_demo_drills_keep_their_reasons_once_the_profile_judges(learned, flights, fault, codes):
    """The demo's corrupted and Celsius batches land after the profile has learned: they are
    quarantined with the spec's reasons alone (the profile judges only batches the spec accepts),
    and the corrected re-send of the day is accepted."""
    from tooling.replay import write_day

    rt = learned
    bad = ingest_file(write_day(rt, flights, DAY, fault), rt.spec, rt.store, rt.lake, model=rt.model_name)
    assert bad.status == "quarantined" and bad.reason_codes == codes
    good = ingest_file(write_day(rt, flights, DAY), rt.spec, rt.store, rt.lake, model=rt.model_name)
    assert good.status == "accepted"
