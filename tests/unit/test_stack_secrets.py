"""The local stack keeps its secrets off command lines, logs and world-readable files, and does not
bind beyond loopback without authentication (issue 17, item 8). Nothing here starts a service:
the functions `make up` runs are called on a throwaway state folder."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from include.mlops.settings import get_settings
from tooling import postgres, stack

pytestmark = pytest.mark.unit

PW = "s3cret-Pw_123"


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pg_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres, "pg_bin", lambda name: f"/usr/lib/postgresql/15/bin/{name}")
    monkeypatch.setattr(postgres, "run_as_prefix", lambda: [])
    for var in (
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
        "MLOPS_EXPOSE_UNAUTHENTICATED",
    ):
        monkeypatch.delenv(var, raising=False)
    return get_settings({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_BACKEND": "postgres", "MLOPS_POSTGRES_PASSWORD": PW})


def test_no_service_gets_a_password_on_its_command_line(pg_settings):
    services = {svc.name: svc for svc in stack.services(pg_settings)}
    for svc in services.values():
        assert not any(PW in arg for arg in svc.command), svc.name
    mlflow = services["mlflow"]
    assert "--backend-store-uri" not in mlflow.command
    assert mlflow.env["MLFLOW_BACKEND_STORE_URI"] == pg_settings.mlflow_backend_uri and PW in mlflow.env["MLFLOW_BACKEND_STORE_URI"]


def test_the_start_line_and_pid_file_carry_no_password(pg_settings):
    svc = stack.Service("probe", [sys.executable, "-c", "pass", f"postgresql+psycopg2://mlops:{PW}@127.0.0.1:5433/x"], None, lambda s: True)
    pid = stack._start(pg_settings, svc, dict(os.environ))
    os.waitpid(pid, 0)
    log, pidfile = stack._log_file(pg_settings, "probe"), stack._pid_file(pg_settings, "probe")
    assert PW not in log.read_text() and "mlops:***@127.0.0.1" in log.read_text()
    assert PW not in pidfile.read_text() and json.loads(pidfile.read_text())["pid"] == pid
    assert _mode(pidfile) == 0o600


def test_redact_hides_every_url_password():
    assert (
        stack.redact(f"a postgresql://mlops:{PW}@h:1/db b redis://:{PW}@redis:6379/0")
        == "a postgresql://mlops:***@h:1/db b redis://:***@redis:6379/0"
    )
    assert stack.redact("http://127.0.0.1:5000 sqlite:////x/y.db") == "http://127.0.0.1:5000 sqlite:////x/y.db"


def test_airflow_passwords_are_generated_owner_only_and_kept(pg_settings):
    path = stack.ensure_airflow_passwords(pg_settings)
    assert _mode(path) == 0o600
    first = json.loads(path.read_text())
    assert set(first) == {"admin"} and len(first["admin"]) >= 12
    path.chmod(0o644)  # as an older `make up` (Airflow itself) left it
    assert stack.ensure_airflow_passwords(pg_settings) == path and _mode(path) == 0o600
    assert json.loads(path.read_text()) == first  # never changed once set
    assert stack.airflow_login(pg_settings) == ("admin", first["admin"])


def test_the_summary_says_where_the_airflow_password_is_not_what_it_is(pg_settings, capsys):
    stack.ensure_airflow_passwords(pg_settings)
    _, password = stack.airflow_login(pg_settings)
    stack._print_summary(pg_settings)
    out = capsys.readouterr().out
    assert password not in out and PW not in out
    assert f"login: admin, password in {stack.airflow_passwords_file(pg_settings)}" in out


def test_state_folders_and_secret_files_are_owner_only(pg_settings):
    pg_settings.run_dir.mkdir(parents=True)
    secret = pg_settings.run_dir / "serving-admin-token"
    secret.write_text("t\n")
    secret.chmod(0o644)
    stack.private_dirs(pg_settings)
    for d in (pg_settings.run_dir, pg_settings.logs_dir, pg_settings.airflow_home):
        assert _mode(d) == 0o700, d
    assert _mode(secret) == 0o600
    assert _mode(pg_settings.home) in (0o700, 0o711)  # 0o711: a root-run cluster's postgres user traverses it


# -- beyond loopback ---------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_nothing(host, monkeypatch):
    monkeypatch.delenv("MLOPS_EXPOSE_UNAUTHENTICATED", raising=False)
    stack.check_exposure(get_settings({"MLOPS_HOST": host}))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "myhost.example"])
def test_a_non_loopback_host_without_auth_is_refused_with_what_to_set(host, monkeypatch):
    monkeypatch.delenv("MLOPS_EXPOSE_UNAUTHENTICATED", raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", raising=False)
    with pytest.raises(stack.StackError) as info:
        stack.check_exposure(get_settings({"MLOPS_HOST": host}))
    message = str(info.value)
    assert f"MLOPS_HOST={host}" in message and "MLOPS_SERVING_API_KEY" in message and "MLOPS_EXPOSE_UNAUTHENTICATED=on" in message


def test_a_non_loopback_host_with_auth_configured_is_accepted(monkeypatch):
    monkeypatch.setenv("MLOPS_EXPOSE_UNAUTHENTICATED", "on")
    monkeypatch.delenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", raising=False)
    stack.check_exposure(get_settings({"MLOPS_HOST": "0.0.0.0", "MLOPS_SERVING_API_KEY": "k"}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")  # Airflow without a login
    with pytest.raises(stack.StackError, match="Airflow's login"):
        stack.check_exposure(get_settings({"MLOPS_HOST": "0.0.0.0", "MLOPS_SERVING_API_KEY": "k"}))


def test_up_refuses_before_it_creates_anything(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_EXPOSE_UNAUTHENTICATED", raising=False)
    s = get_settings({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_HOST": "0.0.0.0"})
    with pytest.raises(stack.StackError, match="not a loopback address"):
        stack.up(s)
    assert not (tmp_path / "home").exists()
