"""The real stack: `make up` on free loopback ports in a throwaway state folder, a replayed week of
2013 outcomes plus three faulty batches, ingest_outcomes triggered through Airflow's REST API,
the outcome checked in the ops store, then `make down`."""

from __future__ import annotations

import subprocess
import time
from datetime import date
from pathlib import Path

import pytest

from tests.e2e.stack_env import free_port, isolated_env, remove_postgres_folder, services_expected

pytestmark = pytest.mark.live
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("stack-home")
    env = isolated_env(home)
    up = subprocess.run(["make", "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    try:
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-2000:]
        assert "mlops-loop stack is up" in up.stdout and "login: admin, password in " in up.stdout
        yield env, home
    finally:
        down = subprocess.run(["make", "down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        remove_postgres_folder(env)
        assert down.returncode == 0, down.stdout + down.stderr


def test_make_up_is_harmless_twice_and_status_is_healthy(stack):
    env, _ = stack
    again = subprocess.run(["make", "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count("already running") == services_expected(env)
    status = subprocess.run(["make", "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert status.returncode == 0, status.stdout
    assert status.stdout.count("healthy") >= services_expected(env) and "not healthy" not in status.stdout


def test_secrets_are_owner_only_and_never_printed_or_on_a_command_line(stack):
    env, _ = stack
    from include.mlops.settings import get_settings
    from tooling.stack import airflow_login, airflow_passwords_file

    settings = get_settings(env)
    user, password = airflow_login(settings)
    status = subprocess.run(["make", "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert password not in status.stdout and f"login: {user}, password in " in status.stdout
    assert airflow_passwords_file(settings).stat().st_mode & 0o077 == 0
    for path in (settings.run_dir, settings.logs_dir, *settings.run_dir.iterdir()):
        assert path.stat().st_mode & 0o077 == 0, path
    secrets = [password, settings.postgres_password or "", settings.serving_admin_token or ""]
    for path in [*settings.logs_dir.glob("*.log"), *settings.run_dir.glob("*.pid")]:
        text = path.read_text(errors="replace")
        assert not any(secret and secret in text for secret in secrets), path


def test_port_taken_is_reported_and_nothing_is_left_running(stack, tmp_path):
    env, _ = stack
    other = {**env, "MLOPS_HOME": str(tmp_path / "other")}
    for var in ("MLOPS_MLFLOW_PORT", "MLOPS_SERVING_PORT", "MLOPS_EVIDENTLY_PORT", "MLOPS_POSTGRES_PORT"):
        other[var] = str(free_port())
    other["MLOPS_AIRFLOW_PORT"] = env["MLOPS_AIRFLOW_PORT"]  # taken by the running stack
    out = subprocess.run(["make", "up"], cwd=ROOT, env=other, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode != 0
    assert f"airflow-api-server cannot start: port {env['MLOPS_AIRFLOW_PORT']}" in out.stdout
    assert not list((tmp_path / "other" / "run").glob("*.pid"))


def test_replayed_week_is_ingested_through_the_rest_api(stack, flights_cache):
    env, home = stack
    from include.mlops.adapters.airflow_api import AirflowClient
    from include.mlops.runtime import load_runtime
    from include.mlops.settings import get_settings

    settings = get_settings(env)
    rt = load_runtime(settings)
    from tooling.flights import load_flights
    from tooling.replay import replay

    replay(rt, date(2013, 1, 1), 7, ["celsius", "missing_column", "duplicate_batch"], source=load_flights(flights_cache), notify=False)
    client = AirflowClient.for_home(settings.airflow_url, settings.airflow_home)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the dag-processor parses the DAG a few seconds after start
        try:
            if not client.dag("ingest_outcomes")["is_paused"]:
                break
        except Exception:
            pass
        time.sleep(2)
    run_id = client.trigger("ingest_outcomes")
    run = client.wait("ingest_outcomes", run_id, timeout=600)
    assert run["state"] == "success"
    # the DAG's own 10-minute schedule may have taken the batches first: the labels are on
    # whichever run ingested them
    labels = sorted(
        t.get("rendered_map_index") or ""
        for r in client.runs("ingest_outcomes")
        if client.wait("ingest_outcomes", r["dag_run_id"], timeout=600)["state"] == "success"
        for t in client.task_instances("ingest_outcomes", r["dag_run_id"])
        if t["task_id"] == "ingest_batches"
    )
    assert any("quarantined (temperature_not_fahrenheit)" in label for label in labels), labels

    batches = {b["file_name"]: b for b in rt.store.list_batches(rt.model_name)}
    accepted = sorted(n for n, b in batches.items() if b["status"] == "accepted")
    assert accepted == [f"outcomes_2013-01-0{d}.parquet" for d in range(1, 8)]
    quarantined = {n: b["reason_codes"] for n, b in batches.items() if b["status"] == "quarantined"}
    assert quarantined == {
        "outcomes_2013-01-08.parquet": ["temperature_not_fahrenheit"],
        "outcomes_2013-01-09.parquet": ["missing_columns"],
        "outcomes_2013-01-01-resend.parquet": ["duplicate_batch"],
    }
    pool_days = sorted(p.name for p in rt.lake.pool.glob("day=*"))
    assert pool_days == [f"day=2013-01-0{d}" for d in range(1, 8)]


def test_touching_the_landing_marker_triggers_ingest(stack, flights_cache):
    """The asset watcher: a producer writes a batch and touches _READY; a run starts by itself."""
    env, _ = stack
    from include.mlops.adapters.airflow_api import AirflowClient
    from include.mlops.runtime import load_runtime
    from include.mlops.settings import get_settings
    from tooling.flights import load_flights
    from tooling.replay import replay

    settings = get_settings(env)
    rt = load_runtime(settings)
    client = AirflowClient.for_home(settings.airflow_url, settings.airflow_home)
    before = {r["dag_run_id"] for r in client.runs("ingest_outcomes")}
    replay(rt, date(2013, 1, 10), 1, source=load_flights(flights_cache), notify=True)
    deadline = time.monotonic() + 180
    new: list[dict] = []
    while time.monotonic() < deadline and not new:
        new = [r for r in client.runs("ingest_outcomes") if r["dag_run_id"] not in before and r["run_type"] == "asset_triggered"]
        time.sleep(2)
    assert new, "touching _READY did not start ingest_outcomes"
    assert client.wait("ingest_outcomes", new[0]["dag_run_id"], timeout=300)["state"] == "success"
    assert not (rt.lake.landing / "_READY").exists()
    batches = {b["file_name"]: b["status"] for b in rt.store.list_batches(rt.model_name)}
    assert batches["outcomes_2013-01-10.parquet"] == "accepted"
