from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def airflow_db():
    """Migrate this session's throwaway Airflow metadata DB (set up in tests/conftest.py)."""
    airflow = Path(sys.executable).parent / "airflow"
    out = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.fixture(scope="session")
def flights(flights_cache):
    from include.mlops.flights import load_flights

    return load_flights(flights_cache)
