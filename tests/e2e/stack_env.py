"""The environment of a throwaway stack: its own state folder and free loopback ports."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isolated_env(home: Path) -> dict[str, str]:
    """What a user's shell would hold for a stack in ``home``: the stack derives Airflow's home,
    the ops store and the lake from MLOPS_HOME, so the test session's own overrides are dropped."""
    env = {
        **os.environ,
        "MLOPS_HOME": str(home),
        "MLOPS_AIRFLOW_PORT": str(free_port()),
        "MLOPS_MLFLOW_PORT": str(free_port()),
        "MLOPS_EVIDENTLY_PORT": str(free_port()),
        "MLOPS_SERVING_PORT": str(free_port()),
    }
    for var in (
        "AIRFLOW_HOME",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "MLOPS_OPS_DB_URL",
        "MLOPS_LAKE",
        "MLOPS_SPECS",
    ):
        env.pop(var, None)
    # URLs the stack derives from its ports. `mlflow.set_tracking_uri` also writes MLFLOW_TRACKING_URI
    # into os.environ (for subprocesses), so an earlier test's stack would leak in: the demo's
    # e2e before the scheduler fault test pointed that test and its stack at the demo's stopped MLflow.
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_SERVING_URL", "MLOPS_EVIDENTLY_URL", "MLOPS_ALERT_AIRFLOW_URL"):
        env.pop(var, None)
    for var in ("MLOPS_BACKEND", "MLOPS_POSTGRES_PORT", "MLOPS_POSTGRES_DIR", "MLOPS_POSTGRES_PASSWORD", "MLOPS_MLFLOW_BACKEND_URI"):
        env.pop(var, None)
    if os.environ.get("MLOPS_TEST_BACKEND") == "postgres":  # the stack runs its own cluster (`make up` option)
        env["MLOPS_BACKEND"] = "postgres"
        env["MLOPS_POSTGRES_PORT"] = str(free_port())
        env["MLOPS_POSTGRES_DIR"] = str(_postgres_parent() / "data")
    return env


def _postgres_parent() -> Path:
    """A folder the ``postgres`` system user can reach (pytest's own temp folders are owner-only;
    PostgreSQL refuses to run as root, so under root the stack starts it as that user)."""
    parent = Path(tempfile.mkdtemp(prefix="mlops-e2e-pg-"))
    parent.chmod(0o711)
    return parent


def services_expected(env: dict[str, str]) -> int:
    return 8 if env.get("MLOPS_BACKEND") == "postgres" else 7


def remove_postgres_folder(env: dict[str, str]) -> None:
    """After `make down`: the cluster made for this stack goes with it."""
    import shutil

    if env.get("MLOPS_POSTGRES_DIR"):
        shutil.rmtree(Path(env["MLOPS_POSTGRES_DIR"]).parent, ignore_errors=True)
