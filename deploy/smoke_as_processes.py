"""docker-compose.yaml's Airflow, MLflow, Redis and PostgreSQL services, run as local processes.

    .venv/bin/python deploy/smoke_as_processes.py        (KEEP=1 keeps the temp folder and its logs)

No Docker engine runs on the development machines, so this is how the compose configuration was
exercised: every command and environment below is read from docker-compose.yaml and interpolated
with freshly generated secrets (deploy/generate_env.py); only hosts, ports and paths are rewritten
to loopback and a temp folder, and each deviation is printed at the end. It runs PostgreSQL (the
test cluster of tests/pg.py, with deploy/postgres/initdb's SQL), Redis with the compose command,
deploy/airflow/init.sh (twice: it must be idempotent), MLflow with basic-auth, and the Airflow API
server, scheduler, DAG processor, triggerer and Celery worker; waits on the compose health checks;
checks the FAB login, MLflow's basic auth and a DAG run on the Celery worker; then stops everything.
Needs PostgreSQL's server and redis-server (Debian: apt-get install postgresql redis-server).
It also runs mlflow-init (the serving replicas' read-only MLflow user) and starts one serving
replica (the compose command, as the ops_serving role) against that MLflow. Not run: MinIO
(artifacts go to a folder), nginx with two serving replicas, the Evidently UI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pg import TestCluster  # noqa: E402
from tests.unit.test_compose import generate_env, interpolate, load_compose  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
TMP = Path(tempfile.mkdtemp(prefix="compose-smoke-"))
LOGS = TMP / "logs"
LOGS.mkdir()
PROCS: dict[str, subprocess.Popen] = {}
DEVIATIONS: list[str] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def start(name: str, argv: list[str], env: dict[str, str]) -> None:
    log = (LOGS / f"{name}.log").open("ab")
    PROCS[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    say(f"started {name}: {' '.join(argv)[:160]}")


def wait_until(what: str, check, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, p in PROCS.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited ({p.returncode}):\n{(LOGS / f'{name}.log').read_text()[-3000:]}")
        if check():
            say(f"healthy: {what}")
            return
        time.sleep(2)
    raise RuntimeError(f"{what} not healthy in {timeout}s")


def run_ok(argv: list[str], env: dict[str, str], timeout: float = 120) -> bool:
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, timeout=timeout, check=False).returncode == 0


def http(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})  # noqa: S310 - loopback URLs built here
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def main() -> int:
    compose_raw = load_compose()
    pg = TestCluster().start()
    say(f"postgres (tests/pg.py, tooling/postgres.py server command) on {pg.port}")
    try:
        return scenario(compose_raw, pg)
    finally:
        for p in reversed(list(PROCS.values())):  # the processes this script started, by their group
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in PROCS.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        pg.stop()
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(TMP, ignore_errors=True)
        else:
            say(f"kept {TMP}")


def scenario(compose_raw: dict, pg: TestCluster) -> int:
    secrets_env = {name: make() for name, (make, _) in generate_env.REQUIRED.items()}
    secrets_env["MLOPS_POSTGRES_PASSWORD"] = pg.password
    admin_pw = secrets_env["AIRFLOW_ADMIN_PASSWORD"]
    ports = {"redis": free_port(), "api": free_port(), "mlflow": free_port(), "serving": free_port(), "sched": free_port()}
    compose_env = {**secrets_env, "MLOPS_AIRFLOW_PORT": str(ports["api"]), "MLOPS_MLFLOW_PORT": str(ports["mlflow"])}
    compose = interpolate(compose_raw, compose_env)["services"]

    # the databases, with the compose init SQL (what the postgres image runs on a new volume)
    sql = ROOT / "deploy/postgres/initdb/10-databases.sql"
    role_env = {k: str(v) for k, v in compose["postgres"]["environment"].items() if k.endswith("_DB_PASSWORD")}
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "mlops", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-f", str(sql)],
        env={**os.environ, "PGPASSWORD": pg.password, **role_env},  # the roles' passwords, as the postgres container has them
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    say(f"init SQL: {out.stdout.strip()!r}")
    assert run_ok(["pg_isready", f"--port={pg.port}", *compose["postgres"]["healthcheck"]["test"][2:]], dict(os.environ))
    say("postgres healthcheck (compose's pg_isready) passes")

    rewrite = {
        "postgres:5432": f"127.0.0.1:{pg.port}",
        "redis:6379": f"127.0.0.1:{ports['redis']}",
        "airflow-api-server:8080": f"127.0.0.1:{ports['api']}",
        "mlflow:5000": f"127.0.0.1:{ports['mlflow']}",
        "serving-proxy:8000": f"127.0.0.1:{ports['serving']}",
    }

    def local(env: dict[str, str]) -> dict[str, str]:
        out = {}
        for k, v in env.items():
            v = str(v)
            for a, b in rewrite.items():
                v = v.replace(a, b)
            out[k] = v
        exact = {
            "AIRFLOW_HOME": str(TMP / "airflow-home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "PYTHONPATH": str(ROOT),
            "MLOPS_HOME": str(TMP / "state"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(ports["api"]),
        }
        out.update({k: v for k, v in exact.items() if k in out})
        # smoke-only: nothing binds beyond loopback on this shared machine
        out["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] = "127.0.0.1"
        out["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] = str(ports["sched"])
        return {"PATH": f"{VENV_BIN}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", **out}

    DEVIATIONS.append("hosts/ports/paths rewritten to loopback and temp folders; scheduler health server on loopback")

    # redis, with compose's command (password from the environment)
    r = compose["redis"]
    inner = r["command"][2] + f" --port {ports['redis']} --bind 127.0.0.1"
    DEVIATIONS.append("redis: --port/--bind appended")
    start("redis", [r["command"][0], r["command"][1], inner], {**os.environ, **{k: str(v) for k, v in r["environment"].items()}})
    redis_env = {**os.environ, **{k: str(v) for k, v in r["environment"].items()}}
    wait_until("redis (compose healthcheck)", lambda: run_ok(["sh", "-c", f"redis-cli -p {ports['redis']} ping | grep -q PONG"], redis_env))
    assert not run_ok(["sh", "-c", f"REDISCLI_AUTH= redis-cli -p {ports['redis']} ping | grep -q PONG"], {**os.environ}), (
        "redis without password"
    )
    say("redis refuses a client without the password")

    # airflow-init: the compose service's script, with its environment
    init_env = local(compose["airflow-init"]["environment"])
    init_env["OPS_STORE_INIT"] = str(ROOT / "deploy/postgres/ops_store_init.py")
    DEVIATIONS.append("airflow-init: the ops store init script from the project, not its compose mount")
    (TMP / "state").mkdir()
    out = subprocess.run(
        ["bash", "deploy/airflow/init.sh"], env=init_env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    say("airflow-init: " + out.stdout.strip().splitlines()[-1])
    out2 = subprocess.run(
        ["bash", "deploy/airflow/init.sh"], env=init_env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert out2.returncode == 0, out2.stdout[-2000:] + out2.stderr[-2000:]
    say("airflow-init again (idempotent): ok")

    # MLflow as compose runs it (basic-auth, PostgreSQL backend from MLFLOW_BACKEND_STORE_URI)
    m = compose["mlflow"]
    menv = local(m["environment"])
    ini = (
        (ROOT / "deploy/mlflow/basic_auth.ini")
        .read_text()
        .replace("sqlite:////opt/mlflow-auth/basic_auth.db", f"sqlite:///{TMP}/basic_auth.db")
    )
    (TMP / "basic_auth.ini").write_text(ini)
    menv["MLFLOW_AUTH_CONFIG_PATH"] = str(TMP / "basic_auth.ini")
    cmd = list(m["command"])
    cmd[cmd.index("--artifacts-destination") + 1] = str(TMP / "artifacts")
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    cmd[cmd.index("--port") + 1] = str(ports["mlflow"])
    DEVIATIONS.append("mlflow: artifacts in a local folder, not s3://… on MinIO; auth DB path in a temp copy of the ini")
    start("mlflow", cmd, menv)
    wait_until("mlflow (compose healthcheck /health)", lambda: http(f"http://127.0.0.1:{ports['mlflow']}/health")[0] == 200)

    # Airflow components with the compose commands
    aenv = local(compose["airflow-scheduler"]["environment"])
    hostname = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "from airflow.utils.net import get_hostname; print(get_hostname())"],
        env=aenv,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    api = f"http://127.0.0.1:{ports['api']}"
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"):
        deps = compose[name].get("depends_on", {})
        if "airflow-api-server" in deps:  # compose's order: after the API server is healthy
            wait_until("airflow-api-server (compose healthcheck)", lambda: http(f"{api}/api/v2/monitor/health")[0] == 200)
        cmd = list(compose[name]["command"])
        if "--host" in cmd:
            cmd[cmd.index("--host") + 1] = "127.0.0.1"
            cmd[cmd.index("--port") + 1] = str(ports["api"])
        if name == "airflow-worker":
            cmd.append("--skip-serve-logs")
            DEVIATIONS.append("airflow-worker: --skip-serve-logs (its log server would bind all interfaces)")
        start(name, cmd, {**local(compose[name]["environment"]), "HOSTNAME": hostname})
    wait_until("airflow-scheduler (compose healthcheck: its /health)", lambda: http(f"http://127.0.0.1:{ports['sched']}/health")[0] == 200)
    henv = {**aenv, "HOSTNAME": hostname}
    for name in ("airflow-dag-processor", "airflow-triggerer"):
        test = compose[name]["healthcheck"]["test"]
        wait_until(f"{name} (compose healthcheck: {test[1][:60]})", lambda t=test: run_ok(["sh", "-c", t[1]], henv, timeout=60))
    wtest = compose["airflow-worker"]["healthcheck"]["test"][1]
    wenv = {**henv, "HOSTNAME": socket.gethostname()}
    wait_until("airflow-worker (compose healthcheck: celery inspect ping)", lambda: run_ok(["sh", "-c", wtest], wenv, timeout=60))

    # FAB login
    user = compose["airflow-init"]["environment"]["AIRFLOW_ADMIN_USERNAME"]
    code, _ = http(f"{api}/auth/token", "POST", {"username": user, "password": "wrong-password"})
    assert code == 401, code
    code, _ = http(f"{api}/api/v2/dags")
    assert code == 401, code
    code, body = http(f"{api}/auth/token", "POST", {"username": user, "password": admin_pw})
    assert code == 201, (code, body)
    say("FAB auth manager: wrong password 401, no token 401, the admin from .env gets a token")

    # MLflow basic auth: no login 401, the loop's login (MLFLOW_TRACKING_USERNAME/PASSWORD) works
    mlf = f"http://127.0.0.1:{ports['mlflow']}"
    code, _ = http(f"{mlf}/api/2.0/mlflow/experiments/search?max_results=1")
    assert code == 401, code
    tenv = local(compose["airflow-worker"]["environment"])
    probe = (
        "import mlflow, tempfile, pathlib\n"
        "mlflow.set_experiment('compose-smoke')\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_param('p', 1)\n"
        "    d = pathlib.Path(tempfile.mkdtemp()) / 'a.txt'; d.write_text('x'); mlflow.log_artifact(str(d))\n"
        "print(run.info.artifact_uri)\n"
    )
    out = subprocess.run([str(VENV_BIN / "python"), "-c", probe], env=tenv, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    say(f"MLflow basic-auth: anonymous 401; the loop's env login logged a run and an artifact ({out.stdout.strip().splitlines()[-1]})")
    assert list((TMP / "artifacts").rglob("a.txt")), "artifact not proxied to the destination"

    # mlflow-init: the serving replicas' read-only MLflow user
    out = subprocess.run(
        [str(VENV_BIN / "python"), "deploy/mlflow/init_users.py"],
        env=local(compose["mlflow-init"]["environment"]),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    say(out.stdout.strip().splitlines()[-1])

    # one serving replica with the compose command and environment (registry polls log in to MLflow)
    s = compose["serving"]
    cmd = list(s["command"])
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    cmd[cmd.index("--port") + 1] = str(ports["serving"])
    start("serving", cmd, local(s["environment"]))
    srv = f"http://127.0.0.1:{ports['serving']}"
    wait_until("serving (compose healthcheck /health)", lambda: http(f"{srv}/health")[0] == 200)
    token = secrets_env["MLOPS_SERVING_ADMIN_TOKEN"]
    assert http(f"{srv}/admin/reload", "POST", {})[0] == 401
    code, body = http(f"{srv}/admin/reload", "POST", {}, {"Authorization": f"Bearer {token}"})
    assert code == 200, (code, body)
    say(f"serving: /admin/reload 401 without the token, 200 with it: {body[:160]}")
    time.sleep(5)  # a few more registry polls
    serving_log = (LOGS / "serving.log").read_text()
    assert "cannot read the registry" not in serving_log, serving_log[-2000:]
    say("serving: its registry polls log in to MLflow (no 'cannot read the registry' in its log)")

    # a DAG run on the Celery worker
    from include.mlops.adapters.airflow_api import AirflowClient

    client = AirflowClient(api, user, admin_pw)
    deadline = time.monotonic() + 180
    while True:
        try:
            client.dag("ingest_outcomes")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(3)
    run_id = client.trigger("ingest_outcomes")
    result = client.wait("ingest_outcomes", run_id, timeout=600)
    tis = client.task_instances("ingest_outcomes", run_id)
    say(f"ingest_outcomes {run_id}: {result.get('state')}; tasks: " + ", ".join(f"{t['task_id']}={t['state']}" for t in tis))
    worker_log = (LOGS / "airflow-worker.log").read_text()
    assert result.get("state") == "success", result
    assert "ingest_outcomes" in worker_log, "the Celery worker did not run the tasks"
    say("the tasks ran on the Celery worker (its log names the DAG)")
    say("deviations: " + "; ".join(DEVIATIONS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
