from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import mlflow_backend_uri


@pytest.fixture(scope="session")
def airflow_db():
    """Migrate this session's throwaway Airflow metadata DB (set up in tests/conftest.py)."""
    airflow = Path(sys.executable).parent / "airflow"
    out = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.fixture(scope="session")
def flights(flights_cache):
    from tooling.flights import load_flights

    return load_flights(flights_cache)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server + registry (SQLite or the session's PostgreSQL backend, local
    artifacts) on a free port."""
    import os
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (root / "server.log").open("wb")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            mlflow_backend_uri(root),
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not become healthy in 120 s")
    yield {"url": url, "artifacts": root / "artifacts", "process": proc}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def mlflow_env(mlflow_server, monkeypatch):
    """Point the project's settings (and the mlflow client) at the test MLflow server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
    mlflow.set_tracking_uri(mlflow_server["url"])
    mlflow.set_registry_uri(mlflow_server["url"])
    return mlflow_server


@pytest.fixture
def model_name(request, monkeypatch):
    """A registered-model name unique to the test, so tests never see each other's versions."""
    import re
    import uuid

    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:60] + "_" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("MLOPS_MODEL_NAME", name)
    return name


def fill_pool(runtime, flights, start, end, first_batch_id: int = 900_000) -> list:
    """Write accepted-looking pool partitions for [start, end] straight from the flights table
    (the ingest path itself is tested in test_ingest.py; training tests only need a pool)."""
    from datetime import timedelta

    from include.mlops.steps.ingest import _write_pool
    from tooling.replay import day_frame

    days = []
    day, batch_id = start, first_batch_id
    while day <= end:
        df = day_frame(flights, runtime.spec, day)
        if len(df):
            _write_pool(df, runtime.spec, runtime.lake, batch_id, day)
            days.append(day)
        day += timedelta(days=1)
        batch_id += 1
    return days


@pytest.fixture
def spec_variant(tmp_path, monkeypatch):
    """Write a modified copy of the flights spec and point MLOPS_SPEC at it."""
    import yaml

    root = Path(__file__).resolve().parents[2]

    def make(name: str = "variant", **sections):
        raw = yaml.safe_load((root / "include/specs/flights.yaml").read_text())
        for section, values in sections.items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("MLOPS_SPEC", str(path))
        return path

    return make


@pytest.fixture
def ml_runtime(state, mlflow_env, model_name):
    """A runtime whose settings point at the test MLflow server and a per-test model name."""
    from include.mlops.runtime import load_runtime

    return load_runtime()
