"""Fault: PostgreSQL goes down in the middle of an ingest and comes back.

The ops store lives on a real PostgreSQL cluster of the test's own (tests/pg.py). The server is
stopped at a chosen point of the ingest (after the batch was recorded and its pool partition
written, before the verdict is committed), so the ingest fails on a lost connection; the server
is started again and the ingest re-run as Airflow's retry would run it. The re-run must finish the
batch with no row lost or duplicated: ground truth, batch records, decisions and the pool hold
exactly one copy of the day.
"""

from __future__ import annotations

import signal
from datetime import date

import pandas as pd
import pytest
from sqlalchemy.exc import OperationalError

from include.mlops.steps import ingest
from include.mlops.steps.ingest import ingest_file
from tests.pg import TestCluster
from tooling.replay import day_frame, write_day

pytestmark = pytest.mark.integration

DAY = date(2013, 1, 9)


@pytest.fixture
def cluster():
    # durable commits: the crash case kills the server right after the tables are created
    # (fsync=off stays: the operating system, and its page cache, survive a server crash)
    pg = TestCluster(durable=True).start()
    yield pg
    pg.stop()


@pytest.fixture
def pg_runtime(cluster, tmp_path, monkeypatch):
    from include.mlops.runtime import load_runtime

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "home" / "lake"))
    monkeypatch.setenv("MLOPS_OPS_DB_URL", cluster.create_database("ops"))
    return load_runtime()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGQUIT], ids=["fast-shutdown", "crash"])
def test_postgres_restart_during_ingest_loses_and_duplicates_nothing(pg_runtime, cluster, flights, monkeypatch, how):
    rt = pg_runtime
    expected_rows = len(day_frame(flights, rt.spec, DAY))
    path = write_day(rt, flights, DAY)
    assert rt.store.count_ground_truth(rt.model_name) == 0  # the store is on PostgreSQL and reachable
    assert rt.settings.ops_db_url.startswith("postgresql")

    real_write_pool = ingest._write_pool
    stopped = {"n": 0}

    def write_then_lose_the_database(*args, **kwargs):
        out = real_write_pool(*args, **kwargs)
        if not stopped["n"]:
            stopped["n"] += 1
            cluster.stop_server(how)
        return out

    monkeypatch.setattr(ingest, "_write_pool", write_then_lose_the_database)
    with pytest.raises(OperationalError):
        ingest_file(path, rt.spec, rt.store, rt.lake, model=rt.model_name)
    assert stopped["n"] == 1
    assert path.exists()  # the delivery stays in landing until its verdict is committed

    cluster.start()  # same port, same data: the retry finds the server back
    again = ingest_file(path, rt.spec, rt.store, rt.lake, model=rt.model_name)
    assert again.status == "accepted", again
    assert rt.store.count_ground_truth(rt.model_name) == expected_rows
    batches = rt.store.list_batches(rt.model_name)
    assert [(b["file_name"], b["status"]) for b in batches] == [(path.name, "accepted")]
    assert len(rt.store.list_decisions(kind="ingest")) == 1
    pool = pd.read_parquet(rt.lake.pool_partition(DAY))
    assert len(pool) == expected_rows and pool[rt.spec.entity_id].is_unique
    assert not path.exists()
