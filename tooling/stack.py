"""The embedded stack: start, stop and inspect every local service of the loop.

    python -m tooling.stack up | down | status | logs [SERVICE] [-f] | clean

Services (all on 127.0.0.1 by default, all state under ``MLOPS_HOME``, default ``.local/``):

* Airflow 3 as its four components (api-server, scheduler, dag-processor, triggerer): the same
  configuration ``airflow standalone`` uses (SQLite, LocalExecutor, simple auth manager), run as
  separate processes so each has its own log and health, nothing binds beyond loopback (the
  scheduler's and triggerer's log servers are skipped: logs are read from local files), and the
  commands are the ones the docker-compose services run;
* the MLflow tracking server and model registry (SQLite backend, local artifact root);
* the serving API (uvicorn running ``include.mlops.serving.app:create_app``), health-checked on
  ``GET /health``;
* the Evidently UI over the project's workspace.

``up`` is idempotent: services already running and healthy are left alone. When a service cannot
start (port taken, crash during start), ``up`` says which and why, shows the end of its log, and
stops what this invocation started. Standard library only, so ``down`` works without the venv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from include.mlops.settings import PROJECT_ROOT, Settings, get_settings

HOME_MARKER = ".mlops-home"
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class StackError(RuntimeError):
    """A service could not be started; the message says which, why and where its log is."""


@dataclass
class Service:
    name: str
    command: list[str]
    port: int | None
    health: Callable[[Settings], bool]
    url: str | None = None
    start_timeout: float = 120.0
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM


def load_dotenv(path: Path) -> None:
    """Read KEY=VALUE lines of ``.env`` into the environment (existing variables win)."""
    if not path.is_file():
        return
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip().strip("'\"")
        os.environ.setdefault(key.strip(), value)


def _http_json(url: str, timeout: float = 3.0) -> object | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URLs built here
            return json.loads(resp.read().decode() or "null")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            return 200 <= resp.status < 400
    except (urllib.error.URLError, OSError):
        return False


def _airflow_component_healthy(component: str) -> Callable[[Settings], bool]:
    def check(s: Settings) -> bool:
        data = _http_json(f"{s.airflow_url}/api/v2/monitor/health")
        if not isinstance(data, dict):
            return False
        part = data.get(component) or {}
        return isinstance(part, dict) and part.get("status") == "healthy"

    return check


def venv_bin() -> Path:
    return Path(sys.executable).parent


def airflow_env(s: Settings) -> dict[str, str]:
    """Airflow's configuration for the embedded stack (``airflow standalone``'s, on loopback)."""
    conn = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or s.airflow_db_url
    sqlite = {}
    if conn.startswith("sqlite") and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in os.environ:
        sqlite = {  # wait for a busy lock instead of failing after SQLite's 5 s (tooling/airflow_sqlite.py)
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "tooling.airflow_sqlite.CONNECT_ARGS",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "tooling.airflow_sqlite.CONNECT_ARGS",
        }
    return {
        **sqlite,
        "AIRFLOW_HOME": str(s.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(s.project_root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(s.project_root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", "8"),
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{s.airflow_url}/execution/",
        "AIRFLOW__API__HOST": s.host,
        "AIRFLOW__API__PORT": str(s.airflow_port),
        "AIRFLOW__API__BASE_URL": s.airflow_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn,
        # New and edited DAG files show up within 20 s, not the 5-minute default (the folder is
        # listed every 20 s and a file changed since its last parse goes first). An unchanged file
        # is parsed again every 3 minutes, for what it reads at parse time (the spec's monitoring
        # schedule): parsing all of them every 30 s cost a twentieth of a core on 2 cores.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": os.environ.get("AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL", "180"),
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": os.environ.get("AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL", "180"),
        # A task whose scheduler died (killed, crashed) is reset and run again within a minute
        # of the restart, not after Airflow's default five (tests/e2e/test_fault_scheduler.py).
        # A task's calls to the execution API wait 30 s, not 5: on 2 cores under load the API
        # server can be that slow, and a timed-out call fails the try.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": os.environ.get("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", "30"),
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": os.environ.get("AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL", "60"),
        **task_preload_env(),
        **task_threads_env(),
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
    }


# The libraries the loop's tasks import (about 10 s of imports on 2 cores, paid by every task
# process otherwise): the LocalExecutor's workers start from a forkserver that imported them once,
# and each task, forked from a worker, inherits them (Airflow 3.3's [scheduler] mp_start_method /
# mp_forkserver_preload). tooling.task_preload imports only third-party libraries (and
# quiets their import-time logging): the project's own code is imported fresh by every task, so
# an edit takes effect without a restart. MLOPS_AIRFLOW_PRELOAD="" turns it off.
TASK_PRELOAD = "airflow,airflow.executors.local_executor,airflow.sdk.execution_time.supervisor,tooling.task_preload"


def task_preload_env() -> dict[str, str]:
    modules = os.environ.get("MLOPS_AIRFLOW_PRELOAD", TASK_PRELOAD).strip()
    if not modules:
        return {}
    method = os.environ.get("AIRFLOW__SCHEDULER__MP_START_METHOD", "forkserver")  # yours wins (the preload needs forkserver)
    return {"AIRFLOW__SCHEDULER__MP_START_METHOD": method, "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": modules}


#: The thread pools of OpenBLAS (numpy, scipy) and OpenMP (scikit-learn's gradient boosting) in
#: each task process. Airflow already runs tasks side by side, one per core or more; a pool per
#: task on top of that only adds threads that spin while they wait for work (``make bench-threads``,
#: the other core busy: a training fit 13.25 CPU s with the default pools, 1.21 with one thread).
#: ``MLOPS_TASK_THREADS`` sets the size; OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS,
#: when set, win.
THREAD_POOL_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def task_threads_env() -> dict[str, str]:
    threads = os.environ.get("MLOPS_TASK_THREADS", "1").strip() or "1"
    if not threads.isdigit() or int(threads) < 1:
        raise ValueError(f"MLOPS_TASK_THREADS must be a whole number of threads, at least 1 (got {threads!r})")
    return {var: os.environ.get(var) or threads for var in THREAD_POOL_VARS}


def ensure_admin_token(s: Settings) -> Settings:
    """The serving API's admin token: from the environment, else the one under <home>/run, else a
    new random one written there (readable by the owner only)."""
    import dataclasses
    import secrets

    if s.serving_admin_token:
        return s
    path = s.admin_token_file
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return dataclasses.replace(s, serving_admin_token=token)


def base_env(s: Settings) -> dict[str, str]:
    """Environment every service and every Airflow task gets."""
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(s.project_root),
            "PATH": f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}",
            "MLOPS_HOME": str(s.home),
            "MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
            "MLOPS_SERVING_URL": s.serving_url,
            **({"MLOPS_SERVING_ADMIN_TOKEN": s.serving_admin_token} if s.serving_admin_token else {}),
            # No telemetry: nothing leaves this machine.
            "GX_ANALYTICS_ENABLED": "False",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "EVIDENTLY_DISABLE_TELEMETRY": "1",
            "SCARF_ANALYTICS": "false",
            # MLflow's background job runner (GenAI features) is not used by the loop.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            # A task that cannot reach MLflow fails within a minute and Airflow retries it, rather
            # than sitting in the client's default minutes of backoff.
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2"),
        }
    )
    env.update(airflow_env(s))
    return env


#: MLflow client settings of the serving API: fail a registry poll or a model download in seconds
#: (the poller simply tries again) instead of MLflow's default minutes of retries; no progress bars
#: in the service log. A value already in the environment wins.
SERVING_MLFLOW_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def serving_command(s: Settings) -> list[str]:
    """The serving API's command line (also what a container or a process manager runs)."""
    return [
        str(venv_bin() / "uvicorn"),
        "include.mlops.serving.app:create_app",
        "--factory",
        "--host",
        s.host,
        "--port",
        str(s.serving_port),
        "--workers",
        str(s.serving_workers),
        "--no-access-log",  # every request is in the inference log already
        "--timeout-graceful-shutdown",
        "10",  # in-flight requests finish, then the inference log drains (within `down`'s 20 s grace)
    ]


def postgres_service(s: Settings) -> Service:
    from tooling import postgres

    return Service(
        "postgres",
        postgres.server_command(s.postgres_data_dir, s.host, s.postgres_port),
        s.postgres_port,
        lambda st: postgres.healthy(st.host, st.postgres_port, st.postgres_password or ""),
        url=f"postgresql://{s.host}:{s.postgres_port} (databases {', '.join(postgres.DATABASES)}; role mlops)",
        stop_signal=signal.SIGINT,  # "fast" shutdown: roll back open sessions, stop at once
    )


def services(s: Settings) -> list[Service]:
    airflow = str(venv_bin() / "airflow")
    return [*([postgres_service(s)] if s.backend == "postgres" else []), *_loop_services(s, airflow)]


def _loop_services(s: Settings, airflow: str) -> list[Service]:
    return [
        Service(
            "mlflow",
            [
                str(venv_bin() / "mlflow"),
                "server",
                "--artifacts-destination",
                str(s.mlflow_dir / "artifacts"),
                "--host",
                s.host,
                "--port",
                str(s.mlflow_port),
                "--workers",
                "2",
            ],
            s.mlflow_port,
            lambda st: _http_ok(f"{st.mlflow_url}/health"),
            url=s.mlflow_url,
            # `mlflow server` reads --backend-store-uri from here: its password stays out of the
            # process list, the service log and the pid file (which record the command line)
            env={"MLFLOW_BACKEND_STORE_URI": s.mlflow_backend_uri},
        ),
        Service(
            "serving",
            serving_command(s),
            s.serving_port,
            lambda st: _http_ok(f"http://{st.host}:{st.serving_port}/health"),
            url=f"http://{s.host}:{s.serving_port}",
            env={k: os.environ.get(k, v) for k, v in SERVING_MLFLOW_ENV.items()},
        ),
        Service(
            "airflow-api-server",
            [airflow, "api-server", "--host", s.host, "--port", str(s.airflow_port)],
            s.airflow_port,
            lambda st: isinstance(_http_json(f"{st.airflow_url}/api/v2/monitor/health"), dict),
            url=s.airflow_url,
        ),
        Service("airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"], None, _airflow_component_healthy("scheduler")),
        Service("airflow-dag-processor", [airflow, "dag-processor"], None, _airflow_component_healthy("dag_processor")),
        Service("airflow-triggerer", [airflow, "triggerer", "--skip-serve-logs"], None, _airflow_component_healthy("triggerer")),
        Service(
            "evidently-ui",
            [
                str(venv_bin() / "evidently"),
                "ui",
                "--workspace",
                str(s.evidently_workspace),
                "--host",
                s.host,
                "--port",
                str(s.evidently_port),
            ],
            s.evidently_port,
            lambda st: _http_ok(f"{st.evidently_url}/api/version") or _http_ok(st.evidently_url),
            url=s.evidently_url,
        ),
    ]


# -- process bookkeeping ------------------------------------------------------------------------
def _pid_file(s: Settings, name: str) -> Path:
    return s.run_dir / f"{name}.pid"


def _log_file(s: Settings, name: str) -> Path:
    return s.logs_dir / f"{name}.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1].startswith("Z") is False
    except OSError:
        return True


def _start_ticks(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot): with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


def running_pid(s: Settings, name: str, reap: bool = False) -> int | None:
    """The pid of our running ``name`` service, or None (stale pid files are removed; with
    ``reap``, what the dead service's session left running is stopped first)."""
    path = _pid_file(s, name)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(info.get("pid", 0))
    if pid > 0 and _alive(pid) and _start_ticks(pid) == info.get("start_ticks"):
        return pid
    if reap and pid > 0:
        _kill_orphans(pid, info.get("start_ticks"))
    path.unlink(missing_ok=True)
    return None


def _session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` (a service's processes: each service starts its own session;
    Airflow's task supervisor moves tasks to their own process groups, not out of the session)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _kill_orphans(sid: int, leader_ticks: str | None) -> None:
    """A service whose main process died (killed, crashed) can leave children running in its
    session (the scheduler's LocalExecutor workers, a task): stop the ones started after it."""
    if leader_ticks is None:
        return
    orphans = []
    for p in _session_members(sid):
        ticks = _start_ticks(p)
        if ticks is not None and int(ticks) >= int(leader_ticks):  # not a newer process reusing the id
            orphans.append(p)
    for p in orphans:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    if orphans:
        _say(f"  stopped {len(orphans)} process(es) left behind by the service's main process (session {sid})")


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _who_listens(port: int) -> str:
    ss = shutil.which("ss")
    if not ss:
        return ""
    try:
        out = subprocess.run([ss, "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f" ({out.split('users:')[-1].strip()})" if "users:" in out else ""


def tail(path: Path, lines: int = 25) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log yet)"
    return "\n".join(data[-lines:])


def _start(s: Settings, svc: Service, env: dict[str, str]) -> int:
    log_path = _log_file(s, svc.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_fh:
        log_fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {redact(' '.join(svc.command))}\n".encode())
        log_fh.flush()
        proc = subprocess.Popen(
            svc.command,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**env, **svc.env},
            cwd=str(s.project_root),
            start_new_session=True,
        )
    _pid_file(s, svc.name).parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": proc.pid, "start_ticks": _start_ticks(proc.pid), "command": [redact(a) for a in svc.command]}
    write_private(_pid_file(s, svc.name), json.dumps(info))
    return proc.pid


def redact(text: str) -> str:
    """``text`` with the password of every URL that carries one (``scheme://user:<password>@host``) replaced by ``***``."""
    return re.sub(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@]*:)[^@\s/]+@", r"\1***@", text)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable by the owner only (whatever it was before)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _stop_pid(pid: int, grace: float = 20.0, sig: int = signal.SIGTERM) -> None:
    leader_ticks = _start_ticks(pid)
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        _reap(pid)
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    _kill_orphans(pid, leader_ticks)  # e.g. a task in its own process group, outliving its supervisor


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _say(msg: str) -> None:
    print(msg, flush=True)


def airflow_passwords_file(s: Settings) -> Path:
    """Where the simple auth manager keeps its users' passwords (Airflow's default location)."""
    default = s.airflow_home / "simple_auth_manager_passwords.json.generated"
    return Path(os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") or default)


def ensure_airflow_passwords(s: Settings) -> Path:
    """The Airflow users' passwords, owner-only: a random one for every configured user that has
    none yet (Airflow would generate it itself, but print it to its log and store it with the
    default umask, readable by everyone)."""
    import secrets

    path = airflow_passwords_file(s)
    try:
        known = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS") or "admin:admin"
    missing = {u.split(":")[0].strip(): secrets.token_urlsafe(12) for u in users.split(",") if u.split(":")[0].strip() not in known}
    if missing or not path.exists():
        write_private(path, json.dumps({**known, **missing}) + "\n")
    path.chmod(0o600)
    return path


def check_exposure(s: Settings) -> None:
    """Refuse to bind beyond loopback unless the services that can have a login have one.

    On a non-loopback ``MLOPS_HOST`` the stack needs: ``MLOPS_SERVING_API_KEY`` (``/predict``; the
    ``/admin/*`` token is always set, ``make up`` generates one), Airflow's login (not the simple
    auth manager's all-admins mode), and ``MLOPS_EXPOSE_UNAUTHENTICATED=on``: MLflow and the
    Evidently UI have no login in the local stack, so saying so is the operator's choice (behind a
    firewall or an authenticating proxy; docker-compose.yaml is the shape with MLflow's login)."""
    import ipaddress

    try:
        loopback = s.host == "localhost" or ipaddress.ip_address(s.host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return
    missing = []
    if not s.serving_api_key:
        missing.append("MLOPS_SERVING_API_KEY (else anyone who reaches the serving port can call /predict)")
    if (os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS") or "").strip().lower() in ("1", "true", "t", "yes", "on"):
        missing.append("Airflow's login (unset AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS)")
    if (os.environ.get("MLOPS_EXPOSE_UNAUTHENTICATED") or "").strip().lower() not in ("1", "true", "yes", "on"):
        missing.append("MLOPS_EXPOSE_UNAUTHENTICATED=on (MLflow and the Evidently UI have no login in the local stack)")
    if missing:
        raise StackError(
            f"MLOPS_HOST={s.host} is not a loopback address, and the stack binds every service to it without "
            f"authentication configured. Set {'; '.join(missing)}; or keep MLOPS_HOST=127.0.0.1 (the default). "
            "See docs/operating.md, 'Security as it is today'."
        )


def private_dirs(s: Settings) -> None:
    """The state folder and what holds secrets, pids, logs and Airflow's files: owner-only (the
    state folder stays traversable when the PostgreSQL cluster inside it runs as another user)."""
    as_other_user = s.backend == "postgres" and os.geteuid() == 0 and s.postgres_data_dir.is_relative_to(s.home)
    s.home.chmod(0o711 if as_other_user else 0o700)
    for d in (s.run_dir, s.logs_dir, s.airflow_home):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    for f in s.run_dir.iterdir():  # generated secrets and pid files
        if f.is_file() and not f.is_symlink():
            f.chmod(0o600)


def airflow_login(s: Settings) -> tuple[str, str] | None:
    path = airflow_passwords_file(s)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data:
        user, password = next(iter(data.items()))
        return str(user), str(password)
    return None


def _migrate_airflow(s: Settings, env: dict[str, str]) -> None:
    log_path = _log_file(s, "airflow-db-migrate")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _say("  airflow metadata database: migrating ...")
    with log_path.open("ab") as fh:
        rc = subprocess.run(
            [str(venv_bin() / "airflow"), "db", "migrate"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(s.project_root),
            timeout=600,
        ).returncode
    if rc != 0:
        raise StackError(f"`airflow db migrate` failed (exit {rc}); log: {log_path}\n{tail(log_path)}")


def _ensure_alias_pool(s: Settings, env: dict[str, str]) -> None:
    """The one-slot pool every alias-changing task runs in (``registry.ALIAS_POOL``); idempotent."""
    from include.mlops.adapters.registry import ALIAS_POOL

    log_path = _log_file(s, "airflow-db-migrate")
    with log_path.open("ab") as fh:
        rc = subprocess.run(
            [str(venv_bin() / "airflow"), "pools", "set", ALIAS_POOL, "1", "mlops-loop: tasks that change model aliases, one at a time"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(s.project_root),
            timeout=300,
        ).returncode
    if rc != 0:
        raise StackError(f"`airflow pools set {ALIAS_POOL}` failed (exit {rc}); log: {log_path}\n{tail(log_path)}")


def up(s: Settings) -> int:
    check_exposure(s)
    s.home.mkdir(parents=True, exist_ok=True)
    (s.home / HOME_MARKER).write_text("state folder of mlops-loop; `make clean` deletes it\n")
    for d in (s.airflow_home, s.mlflow_dir / "artifacts", s.logs_dir, s.run_dir, s.lake / "landing", s.evidently_workspace):
        d.mkdir(parents=True, exist_ok=True)
    if not (venv_bin() / "airflow").exists():
        raise StackError(f"airflow is not installed in {venv_bin()}: run `make up` (it bootstraps .venv) rather than this module directly")
    private_dirs(s)
    ensure_airflow_passwords(s)
    if s.backend == "postgres":
        s = ensure_postgres_password(s)
    s = ensure_admin_token(s)
    env = base_env(s)
    todo = services(s)
    # Ports first: a taken port stops everything before anything starts.
    for svc in todo:
        if running_pid(s, svc.name, reap=True) is None and svc.port is not None and not port_free(s.host, svc.port):
            raise StackError(
                f"{svc.name} cannot start: port {svc.port} on {s.host} is already in use{_who_listens(svc.port)}. "
                f"Stop that program, or choose another port (see .env.example), then run `make up` again."
            )
    started: list[str] = []
    try:
        loop = todo
        if s.backend == "postgres":
            _start_postgres(s, todo[0], env, started)
            loop = todo[1:]
        if running_pid(s, "airflow-api-server") is None:
            _migrate_airflow(s, env)
            _ensure_alias_pool(s, env)
        for svc in loop:
            pid = running_pid(s, svc.name)
            if pid is not None:
                _say(f"  {svc.name}: already running (pid {pid})")
                continue
            pid = _start(s, svc, env)
            started.append(svc.name)
            _say(f"  {svc.name}: started (pid {pid}), log {_log_file(s, svc.name)}")
        for svc in todo:
            _wait_healthy(s, svc)
    except (StackError, KeyboardInterrupt):
        signals = {svc.name: svc.stop_signal for svc in todo}
        for name in reversed(started):
            pid = running_pid(s, name)
            if pid is not None:
                _stop_pid(pid, sig=signals[name])
            _pid_file(s, name).unlink(missing_ok=True)
        if started:
            _say(f"stopped what this run started: {', '.join(started)}")
        raise
    _print_summary(s)
    return 0


def ensure_postgres_password(s: Settings) -> Settings:
    """The stack's PostgreSQL password: from the environment, else the one under <home>/run, else a
    new random one written there (owner-only); the settings are read again to use it."""
    import secrets

    if s.postgres_password:
        return s
    path = s.postgres_password_file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(24) + "\n")
    again = get_settings()
    if again.home != s.home or not again.postgres_password:
        raise StackError(f"could not read back the PostgreSQL password written to {path}")
    return again


def _start_postgres(s: Settings, svc: Service, env: dict[str, str], started: list[str]) -> None:
    """Create the cluster on first use, start the server, create the loop's databases."""
    from tooling import postgres

    try:
        if postgres.ensure_cluster(s.postgres_data_dir, s.postgres_password or "", _log_file(s, "postgres-initdb")):
            _say(f"  postgres: new cluster in {s.postgres_data_dir}")
        pid = running_pid(s, svc.name)
        if pid is None:
            pid = _start(s, svc, env)
            started.append(svc.name)
            _say(f"  {svc.name}: started (pid {pid}), log {_log_file(s, svc.name)}")
        else:
            _say(f"  {svc.name}: already running (pid {pid})")
        _wait_healthy(s, svc)
        created = postgres.ensure_databases(s.host, s.postgres_port, s.postgres_password or "")
    except postgres.PostgresError as exc:
        raise StackError(str(exc)) from exc
    if created:
        _say(f"  postgres: created databases {', '.join(created)}")


def _wait_healthy(s: Settings, svc: Service) -> None:
    deadline = time.monotonic() + svc.start_timeout
    while time.monotonic() < deadline:
        pid = running_pid(s, svc.name)
        if pid is None:
            log_path = _log_file(s, svc.name)
            raise StackError(f"{svc.name} exited during start-up. Last lines of {log_path}:\n{tail(log_path)}")
        if svc.health(s):
            _say(f"  {svc.name}: healthy")
            return
        time.sleep(1.0)
    log_path = _log_file(s, svc.name)
    raise StackError(f"{svc.name} did not become healthy within {svc.start_timeout:.0f}s. Last lines of {log_path}:\n{tail(log_path)}")


def _print_summary(s: Settings) -> None:
    login = airflow_login(s)
    _say("")
    _say("mlops-loop stack is up:")
    _say(f"  Airflow UI    {s.airflow_url}" + (f"   login: {login[0]}, password in {airflow_passwords_file(s)}" if login else ""))
    _say(f"  MLflow UI     {s.mlflow_url}")
    _say(f"  Serving API   http://{s.host}:{s.serving_port}   (POST /predict, GET /health, GET /metrics)")
    _say(f"  Evidently UI  {s.evidently_url}")
    if s.backend == "postgres":
        _say(f"  PostgreSQL    {s.host}:{s.postgres_port}   databases airflow, mlflow, ops; role mlops")
        _say(f"                password in {s.postgres_password_file}")
    _say(f"  state folder  {s.home}   (logs in {s.logs_dir})")
    _say("Next: `make replay ARGS='--start 2013-01-01 --days 7'` lands a week of label batches; watch ingest_outcomes in Airflow.")


def down(s: Settings) -> int:
    stopped = []
    for svc in reversed(services(s)):
        pid = running_pid(s, svc.name, reap=True)
        if pid is not None:
            _stop_pid(pid, sig=svc.stop_signal)
            stopped.append(svc.name)
        _pid_file(s, svc.name).unlink(missing_ok=True)
    _say(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def status(s: Settings) -> int:
    all_ok = True
    for svc in services(s):
        pid = running_pid(s, svc.name)
        healthy = pid is not None and svc.health(s)
        all_ok &= healthy
        state = "healthy" if healthy else ("running, not healthy" if pid else "stopped")
        _say(f"  {svc.name:22} {state:22} {('pid ' + str(pid)) if pid else '':10} {svc.url or ''}")
    login = airflow_login(s)
    if login and all_ok:
        _say(f"  Airflow login: {login[0]}, password in {airflow_passwords_file(s)}")
    return 0 if all_ok else 1


def logs(s: Settings, name: str | None, follow: bool, lines: int) -> int:
    known = [svc.name for svc in services(s)] + ["airflow-db-migrate"]
    if name and name not in known:
        _say(f"unknown service {name!r}; one of: {', '.join(known)}")
        return 2
    paths = [_log_file(s, n) for n in ([name] if name else known) if _log_file(s, n).exists()]
    if not paths:
        _say(f"no logs yet in {s.logs_dir}")
        return 0
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", *map(str, paths)])  # noqa: S606
    for p in paths:
        _say(f"==> {p} <==\n{tail(p, lines)}\n")
    return 0


def clean(s: Settings) -> int:
    down(s)
    if s.home.exists():
        inside_project = s.home.is_relative_to(s.project_root)
        if not inside_project and not (s.home / HOME_MARKER).exists() and any(s.home.iterdir()):
            _say(f"refusing to delete {s.home}: it has no {HOME_MARKER} marker, so it may not be this project's state folder")
            return 2
        shutil.rmtree(s.home)
        _say(f"deleted {s.home}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.stack", description="Run the embedded mlops-loop stack.")
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("up", help="start every service and wait until healthy")
    sub.add_parser("down", help="stop every service")
    sub.add_parser("status", help="show each service's state")
    p_logs = sub.add_parser("logs", help="show service logs")
    p_logs.add_argument("service", nargs="?")
    p_logs.add_argument("-f", "--follow", action="store_true")
    p_logs.add_argument("-n", "--lines", type=int, default=40)
    sub.add_parser("clean", help="stop everything and delete the state folder")
    args = parser.parse_args(argv)
    load_dotenv(PROJECT_ROOT / ".env")
    try:
        s = get_settings()
    except ValueError as exc:
        _say(f"error: {exc}")
        return 2
    try:
        if args.verb == "up":
            _say(f"starting the mlops-loop stack (state in {s.home}) ...")
            return up(s)
        if args.verb == "down":
            return down(s)
        if args.verb == "status":
            return status(s)
        if args.verb == "logs":
            return logs(s, args.service, args.follow, args.lines)
        return clean(s)
    except StackError as exc:
        _say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
