"""docker-compose.yaml runs the same services as `make up` (no Docker engine here to start it)."""

from __future__ import annotations

from pathlib import Path

import yaml

from include.mlops.settings import get_settings
from include.mlops.stack import services

ROOT = Path(__file__).resolve().parents[2]


def test_compose_has_every_service_of_the_local_stack_on_loopback_ports():
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    local = [svc.name for svc in services(get_settings())]
    assert len(local) == 7
    assert set(local) <= set(compose), sorted(set(local) - set(compose))
    for name, svc in compose.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # published on loopback only
    env = compose["airflow-scheduler"]["environment"]
    assert env["MLOPS_SERVING_URL"] == "http://serving:8000" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "create_app" in " ".join(compose["serving"]["command"])
