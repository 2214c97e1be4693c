"""The environment of a throwaway stack: its own state folder and free loopback ports."""

from __future__ import annotations

import os
import socket
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
    for var in ("AIRFLOW_HOME", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__DAGS_FOLDER", "MLOPS_OPS_DB_URL", "MLOPS_LAKE"):
        env.pop(var, None)
    return env
