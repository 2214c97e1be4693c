from __future__ import annotations

import re
from pathlib import Path

import pytest

from include.mlops.settings import PROJECT_ROOT, VARIABLES, get_settings

pytestmark = pytest.mark.unit


def test_defaults_bind_loopback_and_keep_state_in_one_folder(tmp_path):
    s = get_settings({})
    assert s.host == "127.0.0.1"
    assert (s.airflow_port, s.mlflow_port, s.serving_port, s.evidently_port) == (8080, 5000, 8000, 8001)
    assert s.home == PROJECT_ROOT / ".local"
    for p in (s.airflow_home, s.mlflow_dir, s.logs_dir, s.run_dir, s.lake, s.evidently_workspace):
        assert p.is_relative_to(s.home)
    assert s.ops_db_url == f"sqlite:///{s.home / 'ops.db'}"
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5000"


def test_environment_overrides(tmp_path):
    s = get_settings(
        {
            "MLOPS_HOME": str(tmp_path),
            "MLOPS_MLFLOW_PORT": "5999",
            "MLOPS_OPS_DB_URL": "postgresql+psycopg2://u@localhost/ops",
            "MLOPS_LOG_LEVEL": "debug",
            "MLOPS_MODEL_NAME": "mine",
        }
    )
    assert s.home == tmp_path
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5999"
    assert s.ops_db_url.startswith("postgresql")
    assert s.log_level == "DEBUG"
    assert s.model_name_override == "mine"


def test_dags_may_reach_the_evidently_ui_elsewhere_than_the_browser_does():
    assert get_settings({}).evidently_dag_url == "http://127.0.0.1:8001"
    s = get_settings({"MLOPS_EVIDENTLY_URL": "http://evidently-ui:8001", "MLOPS_EVIDENTLY_PORT": "8101"})
    assert s.evidently_dag_url == "http://evidently-ui:8001"
    assert s.evidently_url == "http://127.0.0.1:8101"  # links in the status page and the demo summary


def test_postgres_backend_puts_every_store_on_the_stacks_cluster(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "postgres-password").write_text("s3cret\n")
    s = get_settings({"MLOPS_HOME": str(tmp_path), "MLOPS_BACKEND": "postgres", "MLOPS_POSTGRES_PORT": "6543"})
    base = "postgresql+psycopg2://mlops:s3cret@127.0.0.1:6543"
    assert (s.ops_db_url, s.mlflow_backend_uri, s.airflow_db_url) == (f"{base}/ops", f"{base}/mlflow", f"{base}/airflow")
    assert s.postgres_data_dir == tmp_path / "postgres"
    assert "s3cret" not in repr(s)


def test_explicit_urls_win_over_the_backend(tmp_path):
    s = get_settings(
        {
            "MLOPS_HOME": str(tmp_path),
            "MLOPS_BACKEND": "postgres",
            "MLOPS_POSTGRES_PASSWORD": "pw",
            "MLOPS_OPS_DB_URL": "postgresql+psycopg2://u:p@db.internal/ops",
            "MLOPS_MLFLOW_BACKEND_URI": "postgresql+psycopg2://u:p@db.internal/mlflow",
        }
    )
    assert s.ops_db_url == "postgresql+psycopg2://u:p@db.internal/ops"
    assert s.mlflow_backend_uri == "postgresql+psycopg2://u:p@db.internal/mlflow"
    assert s.airflow_db_url.endswith("mlops:pw@127.0.0.1:5433/airflow")


def test_sqlite_backend_is_the_default(tmp_path):
    s = get_settings({"MLOPS_HOME": str(tmp_path)})
    assert s.backend == "sqlite"
    assert s.mlflow_backend_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert s.airflow_db_url == f"sqlite:///{tmp_path / 'airflow' / 'airflow.db'}"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="MLOPS_BACKEND='mysql': choose one of sqlite, postgres"):
        get_settings({"MLOPS_BACKEND": "mysql"})


@pytest.mark.parametrize("value", ["eighty", "0", "70000"])
def test_bad_port_is_a_clear_error(value):
    with pytest.raises(ValueError, match="MLOPS_AIRFLOW_PORT"):
        get_settings({"MLOPS_AIRFLOW_PORT": value})


def test_reading_settings_creates_nothing(tmp_path):
    home = tmp_path / "not-yet"
    get_settings({"MLOPS_HOME": str(home)})
    assert not home.exists()


def test_every_variable_is_documented_in_env_example_and_readme():
    example = (PROJECT_ROOT / ".env.example").read_text()
    readme = (PROJECT_ROOT / "docs" / "configuration.md").read_text()  # the README links it
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    missing = [v for v in VARIABLES if v not in documented]
    assert not missing, f".env.example lacks {missing}"
    missing_readme = [v for v in VARIABLES if v not in readme]
    assert not missing_readme, f"docs/configuration.md lacks {missing_readme}"


def test_settings_module_reads_environment_in_one_place():
    """No other module of include/mlops reads a setting from the environment (passing the whole
    environment on to a child process is fine)."""
    offenders = []
    for path in Path(PROJECT_ROOT / "include/mlops").rglob("*.py"):
        if path.name in {"settings.py", "stack.py"}:
            continue
        if re.search(r"os\.environ\.get\(|os\.environ\[|os\.getenv\(", path.read_text()):
            offenders.append(path.name)
    assert not offenders
