"""Micro-batching and batch scoring, with real (tiny) scikit-learn pipelines."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import numpy as np
import pytest

from include.mlops.adapters.registry import ServingConfig
from include.mlops.serving.batching import MicroBatcher
from include.mlops.serving.models import ModelManager
from include.mlops.serving.routing import bucket
from include.mlops.serving.schema import Row
from include.mlops.serving.scoring import FrameBuilder, NoChampion, Scorer
from tests.helpers import make_batch

pytestmark = pytest.mark.unit


# -- the batcher ------------------------------------------------------------------------------------
class Recorder:
    """A process function that records each batch; it can hold the first batch until released."""

    def __init__(self, hold_first: bool = False, fail_on: str | None = None):
        self.batches: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_on = fail_on

    def __call__(self, jobs):
        self.batches.append([j.rows[0] for j in jobs])
        self.started.set()
        self.release.wait(10)
        if self.fail_on and any(j.rows[0] == self.fail_on for j in jobs):
            raise RuntimeError("boom")
        for j in jobs:
            j.result = [f"scored {r}" for r in j.rows]


async def _submit_while_busy(batcher: MicroBatcher, rec: Recorder, first: list[str], later: list[list[str]]):
    t_first = asyncio.ensure_future(batcher.submit(first))
    await asyncio.to_thread(rec.started.wait, 10)  # the first batch is being scored now
    t_later = [asyncio.ensure_future(batcher.submit(rows)) for rows in later]
    await asyncio.sleep(0.05)  # they are queued, not scored
    assert len(rec.batches) == 1
    rec.release.set()
    return await asyncio.gather(t_first, *t_later, return_exceptions=True)


def test_an_idle_batcher_scores_a_request_at_once_alone():
    rec = Recorder()

    async def go():
        b = MicroBatcher(rec, executor=ThreadPoolExecutor(1))
        return await b.submit(["a"]), await b.submit(["b"])

    assert asyncio.run(go()) == (["scored a"], ["scored b"])
    assert rec.batches == [["a"], ["b"]]


def test_requests_arriving_while_busy_are_scored_together_in_the_next_batch():
    rec = Recorder(hold_first=True)

    async def go():
        b = MicroBatcher(rec, executor=ThreadPoolExecutor(1))
        return await _submit_while_busy(b, rec, ["a"], [["b"], ["c"], ["d"]])

    results = asyncio.run(go())
    assert rec.batches == [["a"], ["b", "c", "d"]]
    assert results == [["scored a"], ["scored b"], ["scored c"], ["scored d"]]


def test_batches_hold_whole_requests_up_to_max_batch_rows():
    rec = Recorder(hold_first=True)

    async def go():
        b = MicroBatcher(rec, max_batch_rows=7, executor=ThreadPoolExecutor(1))
        return await _submit_while_busy(b, rec, ["a"], [["b"] * 3, ["c"] * 3, ["d"] * 3, ["e"] * 9])

    results = asyncio.run(go())
    assert rec.batches == [["a"], ["b", "c"], ["d"], ["e"]]  # 3+3 fit, +3 would not; 9 rows go alone
    assert results[4] == ["scored e"] * 9


def test_a_failing_batch_fails_its_requests_only_and_the_batcher_goes_on():
    rec = Recorder(hold_first=True, fail_on="c")

    async def go():
        b = MicroBatcher(rec, executor=ThreadPoolExecutor(1))
        first = await _submit_while_busy(b, rec, ["a"], [["b"], ["c"]])
        return first, await b.submit(["d"])

    (a, b, c), d = asyncio.run(go())
    assert a == ["scored a"] and isinstance(b, RuntimeError) and isinstance(c, RuntimeError) and d == ["scored d"]


def test_inline_mode_and_close_waits_for_queued_work_then_refuses_new():
    rec = Recorder()

    async def go():
        b = MicroBatcher(rec, executor=None)
        tasks = [asyncio.ensure_future(b.submit([x])) for x in "abc"]
        await asyncio.sleep(0)
        await b.close()
        assert all(t.done() for t in tasks)
        with pytest.raises(RuntimeError, match="closed"):
            await b.submit(["z"])
        return [t.result() for t in tasks]

    assert asyncio.run(go()) == [["scored a"], ["scored b"], ["scored c"]]
    assert rec.batches == [["a", "b", "c"]]


def test_the_clients_of_the_last_batch_are_waited_for_briefly_but_a_lone_client_never_waits():
    rec = Recorder()

    async def go():
        b = MicroBatcher(rec, executor=ThreadPoolExecutor(1), max_wait=0.2)
        for x in "abc":  # one client, one request after the other: never a wait
            await b.submit([x])
        assert b.waits == 0
        # Three clients answered together come back one by one: the batch waits for all three.
        await asyncio.gather(*(b.submit([x]) for x in ("d", "e", "f")))
        assert rec.batches[-1] == ["d", "e", "f"]

        async def later(x, delay):
            await asyncio.sleep(delay)
            return await b.submit([x])

        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(later("g", 0.0), later("h", 0.05), later("i", 0.1))
        assert rec.batches[-1] == ["g", "h", "i"] and loop.time() - started < 0.18  # woken by the third, not the timer
        # Only two come back: the batch goes after max_wait with what it has.
        started = loop.time()
        await asyncio.gather(later("j", 0.0), later("k", 0.02))
        assert rec.batches[-1] == ["j", "k"] and loop.time() - started >= 0.18
        # After an idle gap nobody is expected: no wait.
        await asyncio.sleep(10 * 0.2 + 0.1)
        waits = b.waits
        await b.submit(["l"])
        assert b.waits == waits

    asyncio.run(go())


def test_a_lone_request_is_scored_on_the_event_loop_and_concurrent_ones_on_the_predictor_thread():
    where: list[str] = []

    def process(jobs):
        where.append(threading.current_thread().name)
        for j in jobs:
            j.result = len(jobs)

    async def go():
        b = MicroBatcher(process, executor=ThreadPoolExecutor(1, thread_name_prefix="predict"), inline_when_alone=True)
        await b.submit(["a"])
        await asyncio.gather(b.submit(["b"]), b.submit(["c"]))
        return b.inline

    assert asyncio.run(go()) == 1
    assert where[0] == threading.current_thread().name and where[1].startswith("predict")


# -- scoring a batch ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(spec):
    import pandas as pd

    df = pd.concat([make_batch(spec, date(2013, 3, d), n=80, seed=1) for d in range(1, 4)], ignore_index=True)
    return df[spec.feature_names], spec.target.derive(df[spec.target.source_column]).astype(int), df[spec.entity_id]


@pytest.fixture(scope="module")
def fitted(spec, data):
    from sklearn.linear_model import LogisticRegression

    from include.mlops.domain.pipelines import default_pipeline

    X, y, _ = data
    a = default_pipeline(spec, {"max_iter": 5}).fit(X, y)
    b = default_pipeline(spec, {"max_iter": 5, "learning_rate": 0.5}).fit(X, y)
    broken = LogisticRegression().fit(np.array([[0.0, 1.0], [1.0, 0.0]]), [0, 1])  # expects 2 unnamed columns
    return {"1": a, "2": b, "9": broken}


def make_rows(spec, data, n):
    X, _, ids = data
    return [Row(str(ids.iloc[i]), None, tuple(X.iloc[i][spec.feature_names].tolist())) for i in range(n)]


def scorer_for(spec, fitted, champion, challenger=None, mode=None, share=0.5):
    manager = ModelManager("m", lambda: ServingConfig(champion, challenger, mode, share), loader=fitted.__getitem__)
    manager.poll()
    return Scorer(manager, FrameBuilder(spec), salt="m")


class FakeJob:
    def __init__(self, rows):
        self.rows, self.result, self.error = rows, None, None


def score(scorer, rows, split=(3,)):
    jobs, start = [], 0
    for end in [*split, len(rows)]:
        jobs.append(FakeJob(rows[start:end]))
        start = end
    scorer(jobs)
    return jobs


def test_champion_only_scores_every_row_and_splits_results_back_per_request(spec, data, fitted):
    rows = make_rows(spec, data, 10)
    jobs = score(scorer_for(spec, fitted, "1"), rows)
    outs = jobs[0].result + jobs[1].result
    assert len(jobs[0].result) == 3 and len(jobs[1].result) == 7
    expected = fitted["1"].predict_proba(data[0].iloc[:10])[:, 1]
    assert [o.score for o in outs] == pytest.approx(list(expected), abs=1e-12)
    assert {(o.version, o.route, o.status) for o in outs} == {("1", "champion", "ok")}
    assert [o.prediction for o in outs] == [int(s >= 0.5) for s in expected]
    assert all(o.extra is None for o in outs)


def test_canary_sends_the_hashed_share_to_the_challenger(spec, data, fitted):
    rows = make_rows(spec, data, 200)
    jobs = score(scorer_for(spec, fitted, "1", "2", "canary", 0.3), rows)
    outs = [o for j in jobs for o in j.result]
    X = data[0].iloc[:200]
    for i, (row, o) in enumerate(zip(rows, outs, strict=True)):
        to_challenger = bucket(row.entity_id, "m") < 0.3
        assert (o.route, o.version) == (("challenger", "2") if to_challenger else ("champion", "1"))
        assert o.score == pytest.approx(fitted[o.version].predict_proba(X.iloc[[i]])[0, 1], abs=1e-12)
    share = sum(o.route == "challenger" for o in outs) / len(outs)
    assert 0.15 < share < 0.45


def test_shadow_answers_with_the_champion_and_attaches_the_challengers_score(spec, data, fitted):
    rows = make_rows(spec, data, 12)
    outs = [o for j in score(scorer_for(spec, fitted, "1", "2", "shadow"), rows) for o in j.result]
    assert {(o.route, o.version) for o in outs} == {("champion", "1")}
    shadow = fitted["2"].predict_proba(data[0].iloc[:12])[:, 1]
    assert [(o.extra.route, o.extra.version) for o in outs] == [("shadow", "2")] * 12
    assert [o.extra.score for o in outs] == pytest.approx(list(shadow), abs=1e-12)


def test_a_failing_challenger_never_fails_the_request(spec, data, fitted):
    rows = make_rows(spec, data, 50)
    canary = [o for j in score(scorer_for(spec, fitted, "1", "9", "canary", 0.5), rows) for o in j.result]
    assert {(o.route, o.version, o.status) for o in canary} == {("champion", "1", "ok")}
    failed = [o.extra for o in canary if o.extra is not None]
    assert failed and all(e.status == "error" and e.route == "challenger" and "challenger failed" in e.error for e in failed)
    assert len(failed) == sum(bucket(r.entity_id, "m") < 0.5 for r in rows)
    shadow = [o for j in score(scorer_for(spec, fitted, "1", "9", "shadow"), rows) for o in j.result]
    assert {o.status for o in shadow} == {"ok"} and {o.extra.status for o in shadow} == {"error"}


def test_a_failing_champion_gives_error_outcomes_and_no_champion_raises(spec, data, fitted):
    rows = make_rows(spec, data, 4)
    outs = [o for j in score(scorer_for(spec, fitted, "9"), rows) for o in j.result]
    assert {(o.status, o.version) for o in outs} == {("error", "9")} and all(o.score is None for o in outs)
    assert "model failed to score" in outs[0].error
    jobs = score(scorer_for(spec, fitted, None), rows)
    assert all(isinstance(j.error, NoChampion) for j in jobs)
    assert "no 'champion' alias" in str(jobs[0].error)


def test_frame_builder_types(spec):
    frames = FrameBuilder(spec)
    base = list(frames.probe_row(spec))
    idx = {n: i for i, n in enumerate(spec.feature_names)}
    other = list(base)
    other[idx["temp"]] = None
    df = frames.frame([Row("a", None, tuple(base)), Row("b", None, tuple(other))])
    assert list(df.columns) == spec.feature_names
    assert df["carrier"].dtype == object and df["sched_hour"].dtype == np.int64 and df["distance"].dtype == np.float64
    assert np.isnan(df["temp"].iloc[1])
