"""A small client for Airflow 3's REST API (v2): what the demo, the CLI tools and the live tests
use to trigger DAGs and follow their runs, authenticated like a user (bearer token)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)

TERMINAL = {"success", "failed"}


class AirflowAPIError(RuntimeError):
    pass


@dataclass
class AirflowClient:
    base_url: str
    username: str
    password: str
    #: Longer than the metadata database's lock wait (30 s, ``airflow_sqlite``): a busy database
    #: answers "Database error" (tried again below) instead of the client giving up first.
    timeout: float = 120.0
    _token: str | None = field(default=None, repr=False)

    @classmethod
    def for_home(cls, base_url: str, airflow_home: Path) -> AirflowClient:
        """A client logged in with the simple auth manager's generated admin password."""
        path = airflow_home / "simple_auth_manager_passwords.json.generated"
        try:
            users = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise AirflowAPIError(f"no Airflow login found at {path}: is the stack up (make up)?") from exc
        user, password = next(iter(users.items()))
        return cls(base_url.rstrip("/"), user, password)

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            resp = httpx.post(
                f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password}, timeout=self.timeout
            )
            if resp.status_code >= 400:
                raise AirflowAPIError(f"Airflow login failed ({resp.status_code}): {resp.text[:300]}")
            self._token = resp.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    #: A metadata database that is busy (SQLite's lock under load) answers 500 "Database error"
    #: after rolling the request back: the same request is tried again after 1, 2, 4 and 8 s.
    BUSY_RETRIES = (1.0, 2.0, 4.0, 8.0)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._send(method, path, **kwargs)
        for pause in self.BUSY_RETRIES:
            if not _database_busy(resp):
                break
            log.warning("%s %s: Airflow's metadata database was busy (%s); trying again in %.0f s", method, path, resp.status_code, pause)
            time.sleep(pause)
            resp = self._send(method, path, **kwargs)
        if resp.status_code >= 400:
            raise AirflowAPIError(f"{method} {path} -> {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        resp = self._send_once(method, path, **kwargs)
        if resp.status_code == 401:  # token expired: log in again once
            self._token = None
            resp = self._send_once(method, path, **kwargs)
        return resp

    def _send_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.base_url}/api/v2{path}"
        # a read changes nothing, so a timeout or a dropped connection is tried again; a write is
        # not (it may have happened: an asset event sent twice would judge a window twice)
        pauses = self.BUSY_RETRIES if method.upper() == "GET" else ()
        for pause in pauses:
            try:
                return httpx.request(method, url, headers=self._headers(), timeout=self.timeout, **kwargs)
            except httpx.TransportError as exc:
                log.warning("%s %s: %s; trying again in %.0f s", method, path, exc or type(exc).__name__, pause)
                time.sleep(pause)
        try:
            return httpx.request(method, url, headers=self._headers(), timeout=self.timeout, **kwargs)
        except httpx.TransportError as exc:
            raise AirflowAPIError(f"{method} {path}: no answer from Airflow at {self.base_url} ({type(exc).__name__}: {exc})") from exc

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Start a run of ``dag_id`` now; returns its run id."""
        body = self.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return str(body["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"))

    def runs(self, dag_id: str, limit: int = 100) -> list[dict[str, Any]]:
        body = self.request("GET", f"/dags/{dag_id}/dagRuns", params={"limit": limit, "order_by": "-run_after"})
        return list(body["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        body = self.request("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances", params={"limit": 1000})
        return list(body["task_instances"])

    def wait(self, dag_id: str, run_id: str, timeout: float = 300.0, poll: float = 2.0) -> dict[str, Any]:
        """Poll until the run ends; raises on timeout with the run's last state."""
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.run(dag_id, run_id)
            if state.get("state") in TERMINAL:
                return state
            time.sleep(poll)
        raise AirflowAPIError(f"{dag_id} run {run_id} did not finish within {timeout:.0f}s (state {state.get('state')})")

    def dag(self, dag_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/dags/{dag_id}"))


def _database_busy(resp: httpx.Response) -> bool:
    return resp.status_code == 503 or (resp.status_code == 500 and "Database error" in resp.text)
