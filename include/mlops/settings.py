"""Deployment settings: every one from an environment variable, with a default.

This is the one place the project reads its deployment environment. Nothing happens at import:
call :func:`get_settings` (cheap, re-reads the environment each time) where a setting is needed.

The model's own contract (features, thresholds, policies) is not here: it lives in the spec file
(see :mod:`include.mlops.spec`); :attr:`Settings.spec_path` only says which spec to use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: Every variable this module reads, with its default and meaning (rendered into .env.example and
#: the README; a unit test keeps the three in step).
VARIABLES: dict[str, tuple[str, str]] = {
    "MLOPS_HOME": (".local", "state folder: databases, lake, logs, pids (git-ignored); relative to the project"),
    "MLOPS_SPEC": ("include/specs/flights.yaml", "spec file of the monitored model; relative to the project"),
    "MLOPS_MODEL_NAME": ("<spec name>", "registered model name in MLflow (defaults to the spec's name)"),
    "MLOPS_HOST": ("127.0.0.1", "interface every local service binds to"),
    "MLOPS_AIRFLOW_PORT": ("8080", "Airflow API server and UI"),
    "MLOPS_MLFLOW_PORT": ("5000", "MLflow tracking server and registry"),
    "MLOPS_SERVING_PORT": ("8000", "the model serving API"),
    "MLOPS_EVIDENTLY_PORT": ("8001", "Evidently UI"),
    "MLOPS_OPS_DB_URL": ("sqlite:///<home>/ops.db", "SQLAlchemy URL of the ops store (Postgres: postgresql+psycopg2://...)"),
    "MLOPS_LAKE": ("<home>/lake", "data lake root: landing, training pool, quarantine, reports"),
    "MLOPS_EVIDENTLY_WORKSPACE": ("<home>/evidently", "Evidently workspace folder"),
    "MLFLOW_TRACKING_URI": ("http://<host>:<mlflow port>", "MLflow tracking server used by DAGs and serving"),
    "MLOPS_SERVING_URL": ("http://<host>:<serving port>", "serving API base URL used by DAGs"),
    "MLOPS_LOG_LEVEL": ("INFO", "log level of the project's own loggers"),
}


@dataclass(frozen=True)
class Settings:
    """A snapshot of the deployment settings."""

    project_root: Path
    home: Path
    spec_path: Path
    model_name_override: str | None
    host: str
    airflow_port: int
    mlflow_port: int
    serving_port: int
    evidently_port: int
    ops_db_url: str
    lake: Path
    evidently_workspace: Path
    mlflow_tracking_uri: str
    serving_url: str
    log_level: str

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def evidently_url(self) -> str:
        return f"http://{self.host}:{self.evidently_port}"


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer port number, got {raw!r}") from None
    if not 0 < value < 65536:
        raise ValueError(f"{name} must be between 1 and 65535, got {value}")
    return value


def _path(value: str | None, default: Path) -> Path:
    """A path setting: relative paths are relative to the project root, not the working directory."""
    p = Path(value).expanduser() if value else default
    return (p if p.is_absolute() else PROJECT_ROOT / p).resolve()


def get_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default: the process environment)."""
    env = dict(os.environ if environ is None else environ)
    home = _path(env.get("MLOPS_HOME"), PROJECT_ROOT / ".local")
    host = env.get("MLOPS_HOST") or "127.0.0.1"
    mlflow_port = _int(env, "MLOPS_MLFLOW_PORT", 5000)
    serving_port = _int(env, "MLOPS_SERVING_PORT", 8000)
    return Settings(
        project_root=PROJECT_ROOT,
        home=home,
        spec_path=_path(env.get("MLOPS_SPEC"), PROJECT_ROOT / "include/specs/flights.yaml"),
        model_name_override=env.get("MLOPS_MODEL_NAME") or None,
        host=host,
        airflow_port=_int(env, "MLOPS_AIRFLOW_PORT", 8080),
        mlflow_port=mlflow_port,
        serving_port=serving_port,
        evidently_port=_int(env, "MLOPS_EVIDENTLY_PORT", 8001),
        ops_db_url=env.get("MLOPS_OPS_DB_URL") or f"sqlite:///{home / 'ops.db'}",
        lake=_path(env.get("MLOPS_LAKE"), home / "lake"),
        evidently_workspace=_path(env.get("MLOPS_EVIDENTLY_WORKSPACE"), home / "evidently"),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"http://{host}:{mlflow_port}",
        serving_url=env.get("MLOPS_SERVING_URL") or f"http://{host}:{serving_port}",
        log_level=(env.get("MLOPS_LOG_LEVEL") or "INFO").upper(),
    )
