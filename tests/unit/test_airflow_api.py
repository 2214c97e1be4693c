"""The REST client tries again when Airflow's metadata database is busy (SQLite under load answers
500 "Database error" after rolling back), and only then."""

from __future__ import annotations

import httpx
import pytest

from include.mlops.adapters import airflow_api
from include.mlops.adapters.airflow_api import AirflowAPIError, AirflowClient


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setattr(AirflowClient, "BUSY_RETRIES", (0.0, 0.0, 0.0, 0.0))
    monkeypatch.setattr(airflow_api.httpx, "post", lambda *a, **k: httpx.Response(201, json={"access_token": "t"}))
    return AirflowClient("http://airflow.test", "admin", "pw")


def answers(monkeypatch, *responses):
    sent = []

    def fake(method, url, **kwargs):
        sent.append((method, url))
        return responses[min(len(sent), len(responses)) - 1]

    monkeypatch.setattr(airflow_api.httpx, "request", fake)
    return sent


BUSY = httpx.Response(500, json={"detail": {"reason": "Database error", "message": "Serious error"}})


def test_a_busy_database_is_tried_again(client, monkeypatch):
    sent = answers(monkeypatch, BUSY, BUSY, httpx.Response(200, json={"id": 7}))
    assert client.request("POST", "/assets/events", json={"asset_id": 1}) == {"id": 7}
    assert len(sent) == 3


def test_it_gives_up_with_the_error_when_the_database_stays_busy(client, monkeypatch):
    sent = answers(monkeypatch, BUSY)
    with pytest.raises(AirflowAPIError, match="500.*Database error"):
        client.request("POST", "/assets/events", json={"asset_id": 1})
    assert len(sent) == 5  # the first try and four more


def test_other_errors_are_not_retried(client, monkeypatch):
    sent = answers(monkeypatch, httpx.Response(400, json={"detail": "bad conf"}), httpx.Response(200, json={}))
    with pytest.raises(AirflowAPIError, match="400"):
        client.request("POST", "/dags/x/dagRuns", json={})
    assert len(sent) == 1


def failing_then(monkeypatch, failures: int, response: httpx.Response):
    sent = []

    def fake(method, url, **kwargs):
        sent.append(method)
        if len(sent) <= failures:
            raise httpx.ReadTimeout("timed out")
        return response

    monkeypatch.setattr(airflow_api.httpx, "request", fake)
    return sent


def test_a_read_that_times_out_is_tried_again(client, monkeypatch):
    sent = failing_then(monkeypatch, 2, httpx.Response(200, json={"state": "success"}))
    assert client.request("GET", "/dags/x/dagRuns/r") == {"state": "success"}
    assert sent == ["GET"] * 3


def test_a_write_that_times_out_is_not_sent_twice(client, monkeypatch):
    sent = failing_then(monkeypatch, 1, httpx.Response(200, json={"id": 1}))
    with pytest.raises(AirflowAPIError, match="no answer from Airflow.*ReadTimeout"):
        client.request("POST", "/assets/events", json={"asset_id": 1})
    assert sent == ["POST"]


def test_a_read_gives_up_with_a_clear_error(client, monkeypatch):
    sent = failing_then(monkeypatch, 99, httpx.Response(200, json={}))
    with pytest.raises(AirflowAPIError, match="no answer from Airflow at http://airflow.test"):
        client.request("GET", "/dags/x")
    assert len(sent) == 5
