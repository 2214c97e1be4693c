"""Shared fixtures. Airflow reads its configuration when first imported, so the test session's
Airflow home (a throwaway SQLite metadata DB under .local/pytest) is set here, before any test
module imports Airflow. Nothing here touches a running stack's state."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
(ROOT / ".local").mkdir(exist_ok=True)
# hypothesis (the serving fuzz test) keeps its caches under the ignored state folder, not ./.hypothesis
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(ROOT / ".local" / "hypothesis"))
_SESSION = Path(tempfile.mkdtemp(prefix="pytest-", dir=ROOT / ".local"))

# The databases under test: SQLite files (default) or, with MLOPS_TEST_BACKEND=postgres, a
# throwaway PostgreSQL cluster for the session (tests/pg.py) holding Airflow's metadata DB, the
# test MLflow server's backend store and one fresh ops-store database per test.
BACKEND = os.environ.get("MLOPS_TEST_BACKEND", "sqlite")
if BACKEND not in ("sqlite", "postgres"):
    raise RuntimeError(f"MLOPS_TEST_BACKEND={BACKEND!r}: sqlite or postgres")
PG = None
if BACKEND == "postgres":
    from tests.pg import TestCluster

    PG = TestCluster().start()

# Airflow: its own home and metadata DB for this test session; examples off; quiet.
os.environ["AIRFLOW_HOME"] = str(_SESSION / "airflow")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
    PG.create_database("airflow") if PG else f"sqlite:///{_SESSION / 'airflow' / 'airflow.db'}"
)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__USAGE_DATA_COLLECTION__ENABLED"] = "False"
# The project's state for tests that do not override it: never the developer's .local/ stack.
os.environ["MLOPS_HOME"] = str(_SESSION / "home")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
# A test talking to a server that is gone fails in seconds, not after MLflow's minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
os.environ.setdefault("DO_NOT_TRACK", "1")
for var in ("MLOPS_OPS_DB_URL", "MLOPS_LAKE", "MLOPS_SPEC", "MLOPS_MODEL_NAME", "MLFLOW_TRACKING_URI", "MLOPS_SERVING_URL"):
    os.environ.pop(var, None)
# One model unless a test asks for more (the tests of many models set MLOPS_SPECS to their own
# folder; the live stack tests run every spec of include/specs, as a user's `make demo` does).
os.environ["MLOPS_SPECS"] = "off"


def _unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Services a test does not start itself are unreachable, never a developer's running stack.
for var in ("MLOPS_AIRFLOW_PORT", "MLOPS_MLFLOW_PORT", "MLOPS_SERVING_PORT", "MLOPS_EVIDENTLY_PORT"):
    os.environ[var] = str(_unused_port())

SESSION_DIR = _SESSION


def pytest_unconfigure(config):
    if PG is not None:
        PG.stop()


def pytest_report_header(config):
    return f"databases: {BACKEND}" + (f" (throwaway cluster on 127.0.0.1:{PG.port})" if PG else "")


def ops_db_url(folder: Path) -> str:
    """URL of a fresh ops store for one test: a SQLite file in ``folder``, or a new database on
    the session's PostgreSQL."""
    return PG.create_database("ops") if PG else f"sqlite:///{folder / 'ops.db'}"


def mlflow_backend_uri(folder: Path) -> str:
    return PG.create_database("mlflow") if PG else f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="session")
def spec():
    from include.mlops.domain.spec import load_spec

    return load_spec(ROOT / "include/specs/flights.yaml")


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A fresh state folder (ops store + lake) for one test, through the same settings users set."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_OPS_DB_URL", ops_db_url(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "home" / "lake"))
    return tmp_path / "home"


@pytest.fixture
def runtime(state):
    from include.mlops.runtime import load_runtime

    return load_runtime()


@pytest.fixture(scope="session")
def flights_cache() -> Path:
    """Where the real flights table is cached once per machine (built from the installed package)."""
    return ROOT / ".local" / "cache"


def pytest_sessionfinish(session, exitstatus):
    """Remove this session's state unless MLOPS_KEEP_TEST_STATE=1 (to look at it after a failure)."""
    if os.environ.get("MLOPS_KEEP_TEST_STATE") != "1":
        shutil.rmtree(_SESSION, ignore_errors=True)
