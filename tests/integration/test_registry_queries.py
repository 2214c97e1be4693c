"""The ops store's registry tables (schema v5): model digests and the per-model alias lock, on
SQLite and, with MLOPS_TEST_BACKEND=postgres, on PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect, text

from include.mlops.adapters import registry
from include.mlops.adapters.registry import AliasConflict
from include.mlops.adapters.store import Store, get_engine, migrate
from tests.conftest import ops_db_url

pytestmark = pytest.mark.integration
M = "m"


@pytest.fixture
def store(tmp_path):
    return Store.open(ops_db_url(tmp_path))


def test_many_threads_racing_for_the_lock_one_holder_at_a_time(store):
    inside: list[int] = []
    overlaps: list[int] = []
    guard = threading.Lock()
    barrier = threading.Barrier(6)

    def worker(i: int) -> None:
        barrier.wait()
        with registry.alias_lock(store, M, wait=60):
            with guard:
                inside.append(i)
                if len(inside) > 1:
                    overlaps.append(i)
            threading.Event().wait(0.05)
            with guard:
                inside.remove(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert overlaps == [] and inside == []
    assert store.alias_lock_holder(M) is None


def test_the_lock_is_exclusive_renewable_and_expires(store):
    assert store.try_alias_lock(M, "a", 60)
    assert not store.try_alias_lock(M, "b", 60)
    assert store.try_alias_lock(M, "a", 60)  # the holder renews
    assert store.try_alias_lock("other-model", "b", 60)  # per model
    assert not store.release_alias_lock(M, "b")
    assert store.release_alias_lock(M, "a")
    assert store.try_alias_lock(M, "b", -1)  # a lease already over: anyone may take it
    assert store.try_alias_lock(M, "c", 60)
    assert store.alias_lock_holder(M)["owner"] == "c"
    with pytest.raises(AliasConflict) as busy, registry.alias_lock(store, M, wait=0.3):
        pass
    assert busy.value.reason_code == "alias_busy" and "c" in str(busy.value)


def test_a_digest_is_recorded_once(store):
    row = store.record_model_digest(M, "3", "a" * 64, "model.skops", ["x.y"], "training r1")
    assert (row["sha256"], row["trusted_types"], row["recorded_by"]) == ("a" * 64, ["x.y"], "training r1")
    assert store.record_model_digest(M, "3", "a" * 64, "model.skops", []) == row  # the same again: the first record
    with pytest.raises(ValueError, match="refusing to replace"):
        store.record_model_digest(M, "3", "b" * 64, "model.skops", [])
    assert store.model_digest(M, "3")["sha256"] == "a" * 64
    assert store.model_digest(M, "4") is None


def test_a_v4_database_gets_the_registry_tables(tmp_path, monkeypatch):
    from include.mlops.adapters.store import schema

    # only the migrations up to v5 (later ones belong to other changes and are tested with them)
    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] <= 5])
    monkeypatch.setattr(schema, "LATEST_VERSION", 5)
    engine = get_engine(ops_db_url(tmp_path / "v4"))
    migrate(engine)
    with engine.begin() as conn:  # take the database back to v4, as a deployment made before this change
        conn.execute(text("DROP TABLE alias_locks"))
        conn.execute(text("DROP TABLE model_digests"))
        conn.execute(text("DELETE FROM schema_version"))
        conn.execute(text("INSERT INTO schema_version (version, description, applied_at) VALUES (4, 'v4', CURRENT_TIMESTAMP)"))
    assert migrate(engine) == 5
    assert {"model_digests", "alias_locks"} <= set(inspect(engine).get_table_names())
    s = Store(engine)
    assert s.try_alias_lock(M, "a", 60)
    assert s.record_model_digest(M, "1", "c" * 64, "model.skops", [])["sha256"] == "c" * 64
