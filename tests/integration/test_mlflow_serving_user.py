"""mlflow-init (docker-compose.yaml, deploy/mlflow/init_users.py) against a real MLflow server behind
its basic-auth app, configured by deploy/mlflow/basic_auth.ini as compose runs it: the serving
replicas' user reads the registry (models, aliases) and cannot change the loop's model (no version,
no alias, no delete); running it again sets the password from .env and keeps it so."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ADMIN, ADMIN_PW = "admin", "admin-password-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_auth(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow-auth")
    ini = (
        (ROOT / "deploy/mlflow/basic_auth.ini").read_text().replace("sqlite:////opt/mlflow-auth/basic_auth.db", f"sqlite:///{tmp}/auth.db")
    )
    (tmp / "auth.ini").write_text(ini)
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PW,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret",
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp}/mlflow.db",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    argv = [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth", "--artifacts-destination", str(tmp / "art")]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = (tmp / "server.log").open("ab")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=3):
                    break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp / "server.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _init(uri: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_TRACKING_USERNAME": ADMIN,
        "MLFLOW_TRACKING_PASSWORD": ADMIN_PW,
        "MLFLOW_SERVING_USERNAME": "serving",
        "MLFLOW_SERVING_PASSWORD": password,
    }
    return subprocess.run([sys.executable, str(ROOT / "deploy/mlflow/init_users.py")], env=env, capture_output=True, text=True, timeout=120)


def _client(uri: str, user: str, password: str, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_the_serving_user_reads_the_registry_and_cannot_change_it(mlflow_auth, monkeypatch):
    from mlflow.exceptions import MlflowException

    uri = mlflow_auth
    out = _init(uri, "serving-pw-1")
    assert out.returncode == 0 and "read-only user 'serving' created" in out.stdout, out.stdout + out.stderr
    admin = _client(uri, ADMIN, ADMIN_PW, monkeypatch)
    admin.create_registered_model("m")
    serving = _client(uri, "serving", "serving-pw-1", monkeypatch)
    assert [m.name for m in serving.search_registered_models()] == ["m"]
    assert serving.get_registered_model("m").name == "m"
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied|403"):
        serving.delete_registered_model("m")
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied|403"):
        serving.create_model_version("m", source="file:///tmp/not-a-model")
    # (without MLflow workspaces any user may create models of its own: they never hold the loop's aliases)
    # again, with a new password from .env: set, still read-only
    out = _init(uri, "serving-pw-2")
    assert out.returncode == 0 and "password set" in out.stdout, out.stdout + out.stderr
    serving = _client(uri, "serving", "serving-pw-2", monkeypatch)
    assert serving.get_registered_model("m").name == "m"
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied|403"):
        serving.set_registered_model_alias("m", "champion", "1")
