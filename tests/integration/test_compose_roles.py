"""docker-compose.yaml's PostgreSQL roles, on a real (throwaway) PostgreSQL: the init SQL the postgres
image runs (deploy/postgres/initdb/), then airflow-init's ops store step as the owner
(deploy/postgres/ops_store_init.py), then the serving API's store calls as the serving role.

The serving role can do what serving does (check the schema version, write the inference log and
its journal checkpoints, replay a journal, read a model digest) and nothing else (no labels, no
decisions, no ledger, no reading the log back, no DDL); no role reaches another store's database.
Needs PostgreSQL's server and psql (Debian: apt-get install postgresql)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from tooling import postgres

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INIT_SQL = ROOT / "deploy" / "postgres" / "initdb" / "10-databases.sql"
PASSWORDS = {
    "AIRFLOW_DB_PASSWORD": "pw-airflow",
    "MLFLOW_DB_PASSWORD": "pw-mlflow",
    "OPS_DB_PASSWORD": "pw-ops",
    "SERVING_DB_PASSWORD": "pw-serving",
}


def _psql() -> str | None:
    try:
        postgres.pg_bin("initdb")
        return postgres.pg_bin("psql")
    except postgres.PostgresError:
        return shutil.which("psql")


@pytest.fixture(scope="module")
def cluster():
    if _psql() is None:
        pytest.skip("PostgreSQL's server and psql are not installed")
    from tests.pg import TestCluster

    pg = TestCluster().start()
    try:
        yield pg
    finally:
        pg.stop()


def _run_init_sql(pg) -> subprocess.CompletedProcess[str]:
    argv = [_psql(), "-h", pg.host, "-p", str(pg.port), "-U", postgres.ROLE, "-d", "postgres", "-f", str(INIT_SQL)]
    return subprocess.run(
        argv, env={**os.environ, "PGPASSWORD": pg.password, **PASSWORDS}, capture_output=True, text=True, timeout=60, check=False
    )


def _url(pg, role: str, password: str, database: str) -> str:
    return f"postgresql+psycopg2://{role}:{password}@{pg.host}:{pg.port}/{database}"


@pytest.fixture(scope="module")
def roles(cluster):
    for _ in range(2):  # the image runs it once; by hand on an older volume it must be harmless again
        out = _run_init_sql(cluster)
        assert out.returncode == 0, out.stdout + out.stderr
    ops_url = _url(cluster, "ops", PASSWORDS["OPS_DB_PASSWORD"], "ops")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLOPS_OPS_DB_URL": ops_url}
    for _ in range(2):  # airflow-init runs at every `docker compose up`
        out = subprocess.run(
            [sys.executable, str(ROOT / "deploy" / "postgres" / "ops_store_init.py")], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "role ops_serving may" in out.stdout
    return cluster, ops_url, _url(cluster, "ops_serving", PASSWORDS["SERVING_DB_PASSWORD"], "ops")


def _rec(i: int) -> dict:
    t0 = datetime(2013, 3, 1, tzinfo=UTC)
    return {
        "request_id": f"r{i}",
        "entity_id": f"e{i}",
        "model_name": "m",
        "model_version": "1",
        "route": "champion",
        "event_time": t0 + timedelta(hours=i),
        "features": {"x": i},
        "score": 0.5,
        "prediction": 1,
        "latency_ms": 1.0,
        "status": "ok",
        "error": None,
        "created_at": t0,
    }


def test_the_serving_role_does_what_serving_does(roles):
    from include.mlops.adapters.store import Store

    _, ops_url, serving_url = roles
    store = Store.open(serving_url)  # the schema is current: only read
    store.append_inference([_rec(0)])  # one record: INSERT ... RETURNING id
    store.append_inference([_rec(1), _rec(2)], journal_marks={"a.jsonl": 2})
    store.checkpoint_journal({"b.jsonl": 1})
    assert store.replay_journal_segment("a.jsonl", [_rec(1), _rec(2), _rec(3)]) == 1
    store.forget_journal_segments(["b.jsonl"])
    assert store.prune_journal([]) == ["a.jsonl"]
    assert store.model_digest("m", "1") is None
    owner = Store.open(ops_url)
    assert [r[0] for r in owner.inference_rows("m", ["request_id"])] == ["r0", "r1", "r2", "r3"]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT request_id FROM inference_log",  # the log is written, never read back
        "SELECT * FROM ground_truth",
        "SELECT * FROM alerts",
        "INSERT INTO decisions (model_name) VALUES ('m')",
        "DELETE FROM deployment_ledger",
        "UPDATE model_digests SET sha256 = 'x'",
        "DELETE FROM inference_log",
        "CREATE TABLE evil (x int)",
        "DROP TABLE log_journal",
    ],
)
def test_the_serving_role_can_do_nothing_else(roles, statement):
    _, _, serving_url = roles
    engine = create_engine(serving_url)
    try:
        with pytest.raises(ProgrammingError, match="permission denied|must be owner"), engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "role, database",
    [("ops_serving", "airflow"), ("ops_serving", "mlflow"), ("airflow", "ops"), ("mlflow", "airflow"), ("ops", "mlflow")],
)
def test_no_role_reaches_another_stores_database(roles, role, database):
    pg, _, _ = roles
    password = {
        "airflow": "AIRFLOW_DB_PASSWORD",
        "mlflow": "MLFLOW_DB_PASSWORD",
        "ops": "OPS_DB_PASSWORD",
        "ops_serving": "SERVING_DB_PASSWORD",
    }
    engine = create_engine(_url(pg, role, PASSWORDS[password[role]], database))
    try:
        with pytest.raises(OperationalError, match="permission denied"), engine.connect():
            pass
    finally:
        engine.dispose()


@pytest.mark.parametrize("role", ["airflow", "mlflow", "ops"])
def test_each_store_role_owns_its_database_and_is_no_superuser(roles, role):
    pg, _, _ = roles
    password = PASSWORDS[f"{role.upper()}_DB_PASSWORD"]
    engine = create_engine(_url(pg, role, password, role))
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS probe (x int)"))  # its own schema: migrations work
            conn.execute(text("DROP TABLE probe"))
            flags = conn.execute(text("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user")).one()
        assert tuple(flags) == (False, False, False)
    finally:
        engine.dispose()
