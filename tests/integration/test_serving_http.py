"""The serving API over real HTTP: a real uvicorn process, a real ``mlflow server`` (SQLite in a temp
folder) with tiny models registered in it, the ops store's inference log read back from SQLite.

Every test uses its own registered model name, so the processes of one test never see another's
aliases. Aliases are moved with ``MlflowClient`` directly, as an operator or a DAG would.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pytest

from tests.integration.serving_fixtures import (
    MlflowServer,
    ServingProcess,
    http,
    log_rows,
    model_file,
    register,
    row_payload,
    start_mlflow,
    start_serving,
    train_tiny,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = start_mlflow(tmp_path_factory.mktemp("serving-mlflow"))
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def models(spec):
    """Three tiny fitted pipelines (different seeds) and the feature frame they were trained on."""
    fitted = [train_tiny(spec, seed=s) for s in range(3)]
    return [m for m, _ in fitted], fitted[0][1]


@pytest.fixture
def serving_factory(tmp_path):
    started: list[ServingProcess] = []

    def start(mlflow: MlflowServer, name: str, **env: str) -> ServingProcess:
        proc = start_serving(tmp_path / f"serving-{len(started)}", mlflow, name, extra_env=env)
        started.append(proc)
        return proc

    yield start
    for s in started:
        s.process.stop()


def rows(spec, X, n: int, prefix: str) -> list[dict[str, Any]]:
    return [row_payload(spec, X, i % len(X), f"{prefix}-{i}") for i in range(n)]


class Hammer:
    """Client threads sending single-row requests as fast as they can, recording every answer."""

    def __init__(self, url: str, bodies: list[dict[str, Any]], threads: int = 4):
        self.url = url
        self.bodies = bodies
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[int, int, Any]] = []  # (thread, status, body)
        self.refused = 0
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def _run(self, t: int) -> None:
        import httpx

        with httpx.Client(timeout=30) as client:
            i = t
            while not self.stop.is_set():
                try:
                    resp = client.post(self.url, json=self.bodies[i % len(self.bodies)])
                except httpx.TransportError:  # the server is gone (graceful stop): not answered
                    with self.lock:
                        self.refused += 1
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.answers.append((t, resp.status_code, resp.json()))
                i += len(self.threads)

    def __enter__(self) -> Hammer:
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(30)

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.answers) >= n, f"only {len(self.answers)} answers in {timeout}s"


def wait_until(check, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_requests_valid_and_malformed_limits_and_no_champion(spec, mlflow_server, models, serving_factory):
    fitted, X = models
    name = "serving_basic"
    version = register(mlflow_server, spec, name, fitted[0], X)
    serving = serving_factory(mlflow_server, name, MLOPS_SERVING_MAX_BODY_BYTES="30000", MLOPS_SERVING_MAX_ROWS="50")

    # No champion yet: a clear 503, and the process stays healthy.
    status, body = serving.predict(row_payload(spec, X, 0, "early-1"))
    assert status == 503 and "no champion model is serving" in body["detail"], body
    health = serving.health()
    assert health["ready"] is False and health["serving"]["champion"] is None

    mlflow_server.client().set_registered_model_alias(name, "champion", version)
    health = serving.wait_serving(version)
    assert health["ready"] is True and health["model"] == name
    assert health["input_path"] == {version: "direct"}, health  # checked equal to the pipeline at load

    # One row, and many rows with a request id.
    status, body = serving.predict(row_payload(spec, X, 0, "one-1"))
    assert status == 200, body
    (pred,) = body["predictions"]
    assert pred["entity_id"] == "one-1" and pred["model_version"] == version and pred["route"] == "champion"
    expected = fitted[0].predict_proba(X.iloc[[0]])[0, 1]
    assert pred["score"] == pytest.approx(expected, abs=1e-9) and pred["prediction"] == int(expected >= 0.5)
    many = rows(spec, X, 20, "many")
    many[3][spec.time_column] = "2013-03-02T08:15:00"
    many[4]["carrier"] = "ZZ"  # unknown category: scored, not rejected (monitoring tracks it)
    many[5]["distance"] = 99999.0  # out of range: scored too
    status, body = serving.predict({"rows": many, "request_id": "req-many"})
    assert status == 200, body
    assert body["request_id"] == "req-many" and [p["entity_id"] for p in body["predictions"]] == [r[spec.entity_id] for r in many]
    frame = pd.DataFrame([{k: r[k] for k in spec.feature_names} for r in many])
    assert [p["score"] for p in body["predictions"]] == fitted[0].predict_proba(frame)[:, 1].tolist()  # the pipeline's, exactly

    # Malformed requests: the right 4xx naming row, field and reason; never a 500.
    good = row_payload(spec, X, 1, "bad-1")
    cases = [
        ({**good, "distance": "far"}, 422, 0, "distance", "must be a number"),
        ({**good, "carrier": 7}, 422, 0, "carrier", "must be a string"),
        ({**good, "sched_hour": None}, 422, 0, "sched_hour", "must not be null"),
        ({k: v for k, v in good.items() if k != "origin"}, 422, 0, "origin", "required feature is missing"),
        ({**good, "surprise": 1}, 422, 0, "surprise", "unknown field"),
        ({**good, spec.entity_id: 12}, 422, 0, spec.entity_id, "must be a string"),
        ({**good, spec.time_column: "yesterday"}, 422, 0, spec.time_column, "ISO 8601"),
        ({"rows": [good, {**good, "month": 2.5}]}, 422, 1, "month", "whole number"),
        ({"rows": []}, 422, None, "rows", "must not be empty"),
        ([good], 422, None, None, "must be a JSON object"),
    ]
    for payload, code, row, field, reason in cases:
        status, body = serving.predict(payload)
        assert status == code, (payload, body)
        err = body["errors"][0]
        assert (err["row"], err["field"]) == (row, field) and reason in err["reason"], body
        assert reason in body["detail"]
    status, body = http("POST", f"{serving.url}/predict", raw=b'{"flight_id": "x",')
    assert status == 400 and "not valid JSON" in body["detail"]
    status, body = serving.predict({"rows": rows(spec, X, 51, "toomany")})
    assert status == 413 and "limit is 50" in body["detail"]
    status, body = http("POST", f"{serving.url}/predict", raw=b'{"pad": "' + b"x" * 40000 + b'"}')
    assert status == 413 and "MLOPS_SERVING_MAX_BODY_BYTES" in body["detail"]
    # Hostile bodies (issue 17): what killed the log writer (NUL, lone surrogates as raw JSON escapes),
    # numbers no dtype holds, calendar edges, deep nesting: a 4xx each, never a 500.
    text = json.dumps(row_payload(spec, X, 1, "hostile-1"))
    hostile = [
        text.replace('"hostile-1"', '"a\\u0000b"'),
        text.replace('"hostile-1"', '"a\\ud800b"'),
        text[:-1] + ', "request_id": "\\udfff"}',
        json.dumps({**row_payload(spec, X, 1, "big-1"), "month": 0}).replace('"month": 0', '"month": 1' + "0" * 299),
        json.dumps({**row_payload(spec, X, 1, "big-2"), "sched_hour": 0}).replace('"sched_hour": 0', '"sched_hour": 9223372036854775808'),
        json.dumps({**row_payload(spec, X, 1, "tz-1"), spec.time_column: "0001-01-01T00:00:00+14:00"}),
        "[" * 20000,
    ]
    for raw in hostile:
        status, body = http("POST", f"{serving.url}/predict", raw=raw.encode())
        assert 400 <= status < 500 and body["request_id"], (raw[:80], status, body)
    # /admin/* fails closed without a token
    status, body = http("POST", f"{serving.url}/admin/reload")
    assert status == 403 and "MLOPS_SERVING_ADMIN_TOKEN" in body["detail"]

    # Still serving after all that.
    status, body = serving.predict(row_payload(spec, X, 2, "after-1"))
    assert status == 200 and body["predictions"][0]["model_version"] == version

    # The inference log has every scored row and the rejected requests.
    def logged() -> list[dict[str, Any]] | None:
        got = log_rows(serving.db_url, name)
        return got if sum(r["status"] == "ok" for r in got) >= 22 else None

    records = wait_until(logged, what="inference-log records")
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 22
    health = serving.health()["inference_log"]
    assert health["writer_alive"] is True and health["dead_letter"] == 0 and health["dropped"] == 0, health
    assert sum(r["status"] == "rejected" and r["request_id"].startswith("rejected-") for r in records) >= 2  # no ids: never routed
    assert all(r["model_version"] is None for r in records if r["status"] == "rejected" and r["entity_id"] is None)
    by_entity = {r["entity_id"]: r for r in ok}
    rec = by_entity["many-3"]
    assert rec["request_id"] == "req-many" and rec["model_version"] == version and rec["route"] == "champion"
    assert rec["event_time"].isoformat() == "2013-03-02T08:15:00"
    assert set(rec["features"]) == set(spec.feature_names) and rec["latency_ms"] > 0
    assert by_entity["many-4"]["features"]["carrier"] == "ZZ"
    rejected = [r for r in records if r["status"] == "rejected"]
    assert any(r["entity_id"] == "bad-1" and "distance: must be a number" in r["error"] for r in rejected)
    errors = [r for r in records if r["status"] == "error"]
    assert [r["entity_id"] for r in errors] == ["early-1"]

    _, metrics = http("GET", f"{serving.url}/metrics")
    assert f'mlops_serving_rows_total{{model="{name}",model_version="{version}",route="champion",status="ok"}} 22.0' in metrics
    assert f'mlops_serving_requests_total{{model="{name}",status="422"}}' in metrics
    assert f'mlops_serving_requests_total{{model="{name}",status="413"}} 2.0' in metrics
    assert "mlops_serving_request_latency_seconds_bucket" in metrics and "process_resident_memory_bytes" in metrics
    assert f'mlops_serving_model_loads_total{{alias="champion",model="{name}",result="success",version="{version}"}} 1.0' in metrics
    assert "mlops_serving_inference_log_queue_depth" in metrics


def test_canary_share_is_sticky_and_shadow_logs_two_rows(spec, mlflow_server, models, serving_factory):
    from include.mlops.adapters.registry import set_challenger_mode

    fitted, X = models
    name = "serving_routes"
    v1 = register(mlflow_server, spec, name, fitted[0], X)
    v2 = register(mlflow_server, spec, name, fitted[1], X)
    client = mlflow_server.client()
    set_challenger_mode(client, name, "canary", 0.3)
    client.set_registered_model_alias(name, "champion", v1)
    client.set_registered_model_alias(name, "challenger", v2)
    serving = serving_factory(mlflow_server, name)
    health = serving.wait_serving(v1, v2)
    assert health["serving"]["mode"] == "canary" and health["serving"]["canary_share"] == pytest.approx(0.3)

    n = 1000
    answers = post_many(f"{serving.url}/predict", [row_payload(spec, X, i % len(X), f"canary-{i}") for i in range(n)])
    routes: dict[str, str] = {}
    for status, body in answers:
        assert status == 200, body
        p = body["predictions"][0]
        assert p["model_version"] == (v2 if p["route"] == "challenger" else v1)
        routes[p["entity_id"]] = p["route"]
    assert len(routes) == n
    share = sum(r == "challenger" for r in routes.values()) / n
    assert abs(share - 0.3) < 0.05, share  # binomial sd at n=1000 is 0.0145
    # Sticky: the same entities land on the same side again, alone or inside a batch.
    again = [row_payload(spec, X, i % len(X), f"canary-{i}") for i in range(0, 200, 2)]
    status, body = serving.predict({"rows": again})
    assert status == 200
    assert all(p["route"] == routes[p["entity_id"]] for p in body["predictions"])
    assert all(
        body["predictions"][0]["route"] == routes[body["predictions"][0]["entity_id"]]
        for _, body in post_many(f"{serving.url}/predict", again)
    )

    # Shadow: the champion answers every row, both models are logged.
    set_challenger_mode(client, name, "shadow", 0.3)
    wait_until(lambda: serving.health()["serving"]["mode"] == "shadow", what="shadow mode")
    shadow_rows = rows(spec, X, 30, "shadow")
    status, body = serving.predict({"rows": shadow_rows, "request_id": "req-shadow"})
    assert status == 200
    assert {(p["route"], p["model_version"]) for p in body["predictions"]} == {("champion", v1)}

    def shadow_logged() -> list[dict[str, Any]] | None:
        got = [r for r in log_rows(serving.db_url, name) if r["request_id"] == "req-shadow"]
        return got if len(got) >= 60 else None

    records = wait_until(shadow_logged, what="shadow records")
    assert len(records) == 60
    per_entity = Counter((r["entity_id"], r["route"], r["model_version"]) for r in records)
    for row in shadow_rows:
        eid = row[spec.entity_id]
        assert per_entity[(eid, "champion", v1)] == 1 and per_entity[(eid, "shadow", v2)] == 1
    shadow_scores = {r["entity_id"]: r["score"] for r in records if r["route"] == "shadow"}
    expected = fitted[1].predict_proba(X.iloc[:30])[:, 1]
    assert [shadow_scores[f"shadow-{i}"] for i in range(30)] == pytest.approx(list(expected), abs=1e-9)


def post_many(url: str, bodies: list[dict[str, Any]], threads: int = 4) -> list[tuple[int, Any]]:
    """POST every body (``threads`` clients at a time, keep-alive); answers in the order of ``bodies``."""
    import httpx

    local = threading.local()

    def post(body: dict[str, Any]) -> tuple[int, Any]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=30)
        resp = local.client.post(url, json=body)
        return resp.status_code, resp.json()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, bodies))


def test_hot_swap_under_load_and_failed_load_keeps_the_last_good_model(spec, mlflow_server, models, serving_factory):
    fitted, X = models
    name = "serving_swap"
    v1 = register(mlflow_server, spec, name, fitted[0], X)
    v2 = register(mlflow_server, spec, name, fitted[1], X)
    v3 = register(mlflow_server, spec, name, fitted[2], X)
    client = mlflow_server.client()
    client.set_registered_model_alias(name, "champion", v1)
    serving = serving_factory(mlflow_server, name, MLOPS_SERVING_ADMIN_TOKEN="swap-admin")
    serving.wait_serving(v1)

    bodies = rows(spec, X, 200, "swap")
    with Hammer(f"{serving.url}/predict", bodies, threads=4) as hammer:
        hammer.wait_for(50)
        client.set_registered_model_alias(name, "champion", v2)
        serving.wait_serving(v2)
        swapped_at = len(hammer.answers)
        hammer.wait_for(swapped_at + 100)

        # A version whose artifact is corrupt: the load fails, v2 keeps serving, /health says why.
        model_file(mlflow_server, name, v3).write_bytes(b"this is not a skops file")
        client.set_registered_model_alias(name, "champion", v3)

        def failed() -> dict[str, Any] | None:
            h = serving.health()
            return h if h["load_errors"] else None

        health = wait_until(failed, timeout=60, what="the failed load in /health")
        after_failure = len(hammer.answers)
        hammer.wait_for(after_failure + 100)
    answers = list(hammer.answers)

    assert hammer.refused == 0
    statuses = Counter(status for _, status, _ in answers)
    assert statuses == {200: len(answers)}, statuses
    versions = [body["predictions"][0]["model_version"] for _, _, body in answers]
    assert {v1, v2} <= set(versions) and v3 not in versions
    for t in range(4):  # per client: once v2 answered, v1 never again
        mine = [body["predictions"][0]["model_version"] for th, _, body in answers if th == t]
        first_v2 = mine.index(v2)
        assert set(mine[first_v2:]) == {v2} and set(mine[:first_v2]) == {v1}
    assert all(v == v2 for v in versions[after_failure:])

    assert health["serving"]["champion"] == v2 and health["registry"]["champion"] == v3 and health["ready"] is True
    (err,) = health["load_errors"]
    assert err["alias"] == "champion" and err["version"] == v3 and err["error"]
    assert health["last_load_error"]["version"] == v3
    _, metrics = http("GET", f"{serving.url}/metrics")
    assert f'mlops_serving_model_loads_total{{alias="champion",model="{name}",result="failure",version="{v3}"}}' in metrics
    assert f'mlops_serving_model_info{{alias="champion",model="{name}",version="{v2}"}} 1.0' in metrics

    # /admin/reload retries the failed version now and reports what serves.
    status, body = http("POST", f"{serving.url}/admin/reload", headers={"Authorization": "Bearer swap-admin"})
    assert status == 200 and body["serving"]["champion"] == v2 and body["load_errors"][0]["version"] == v3


def test_no_log_record_lost_across_a_graceful_restart(spec, mlflow_server, models, serving_factory, tmp_path):
    fitted, X = models
    name = "serving_restart"
    version = register(mlflow_server, spec, name, fitted[0], X)
    mlflow_server.client().set_registered_model_alias(name, "champion", version)
    serving = serving_factory(mlflow_server, name)
    serving.wait_serving(version)
    bodies = rows(spec, X, 300, "restart")
    answered = 0

    for round_ in range(2):
        with Hammer(f"{serving.url}/predict", bodies, threads=6) as hammer:
            hammer.wait_for(300)
            code = serving.process.stop(signal.SIGTERM, timeout=60)  # under load
        assert code in (0, -signal.SIGTERM), serving.process.tail()
        assert "inference log drained" in serving.process.tail(200)
        ok = [body for _, status, body in hammer.answers if status == 200]
        assert len(ok) == len(hammer.answers) >= 300
        answered += len(ok)
        records = [r for r in log_rows(serving.db_url, name) if r["status"] == "ok"]
        assert len(records) == answered, f"round {round_}: {len(records)} records for {answered} answered rows"
        if round_ == 0:  # restart on the same ops store
            serving = serving_factory(mlflow_server, name, MLOPS_OPS_DB_URL=serving.db_url)
            serving.wait_serving(version)


def test_api_key_on_predict_and_admin_token_on_reload(spec, mlflow_server, models, serving_factory):
    fitted, X = models
    name = "serving_secured"
    version = register(mlflow_server, spec, name, fitted[0], X)
    mlflow_server.client().set_registered_model_alias(name, "champion", version)
    serving = serving_factory(mlflow_server, name, MLOPS_SERVING_API_KEY="key-1", MLOPS_SERVING_ADMIN_TOKEN="adm-secret")
    health = serving.wait_serving(version)  # /health stays open: orchestration probes it
    assert health["ready"] is True
    body = row_payload(spec, X, 0, "sec-1")

    for headers in (None, {"X-API-Key": "wrong"}, {"Authorization": "Bearer key-1"}):
        status, answer = http("POST", f"{serving.url}/predict", body, headers=headers)
        assert status == 401 and "X-API-Key" in answer["detail"], (headers, status, answer)
    status, answer = http("POST", f"{serving.url}/predict", body, headers={"X-API-Key": "key-1"})
    assert status == 200 and answer["predictions"][0]["model_version"] == version

    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "adm-secret"}):
        status, answer = http("POST", f"{serving.url}/admin/reload", headers=headers)
        assert status == 401 and "MLOPS_SERVING_ADMIN_TOKEN" in answer["detail"], (headers, status, answer)
    status, answer = http("POST", f"{serving.url}/admin/reload", headers={"Authorization": "Bearer adm-secret"})
    assert status == 200 and answer["serving"]["champion"] == version
    # refused requests are not scored and not logged; the one accepted request is
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not log_rows(serving.db_url, name):
        time.sleep(0.2)
    assert [(r["entity_id"], r["status"]) for r in log_rows(serving.db_url, name)] == [("sec-1", "ok")]


def _workers(master_pid: int) -> list[int]:
    import psutil

    alive = []
    for child in psutil.Process(master_pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                alive.append(child.pid)
        except psutil.Error:  # gone (or a zombie) between the listing and the look
            continue
    return sorted(alive)


def test_a_killed_worker_is_restarted_and_every_answered_request_is_logged_once(spec, mlflow_server, models, tmp_path):
    """SIGKILL (an OOM kill, a crash) of one of two workers under load: uvicorn's supervisor starts a
    new worker; only the killed worker's in-flight requests fail (connection errors, never a 5xx);
    the records the killed worker had answered but not yet written reach the log through its
    journal, replayed by the new worker, and no record is written twice."""
    fitted, X = models
    name = "serving_killed"
    version = register(mlflow_server, spec, name, fitted[0], X)
    mlflow_server.client().set_registered_model_alias(name, "champion", version)
    serving = start_serving(tmp_path / "serving", mlflow_server, name, workers=2)
    try:
        serving.wait_serving(version)
        before = wait_until(lambda: len(_workers(serving.process.pid)) == 2 and _workers(serving.process.pid), 60, "two workers")
        with Hammer(f"{serving.url}/predict", rows(spec, X, 400, "killed"), threads=6) as hammer:
            hammer.wait_for(300, timeout=60)
            victim = before[0]
            os.kill(victim, signal.SIGKILL)
            after = wait_until(
                lambda: len(w := _workers(serving.process.pid)) == 2 and victim not in w and w, 60, "a new worker for the killed one"
            )
            n = len(hammer.answers)
            hammer.wait_for(n + 300, timeout=60)  # both workers answer again
        statuses = Counter(status for _, status, _ in hammer.answers)
        assert set(statuses) == {200}, statuses  # the kill costs connections, never a 5xx
        code = serving.process.stop(signal.SIGTERM, timeout=60)
        assert code in (0, -signal.SIGTERM), serving.process.tail()
    finally:
        serving.process.stop()
    answered = Counter(body["request_id"] for _, _, body in hammer.answers)
    records = [r for r in log_rows(serving.db_url, name) if r["status"] == "ok"]
    logged = Counter(r["request_id"] for r in records)
    assert not [rid for rid, n in logged.items() if n > 1], "a record was written twice"
    missing = set(answered) - set(logged)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests are not in the inference log"
    assert set(after) != set(before)
    assert not list((tmp_path / "serving" / "serving-journal").glob("*.jsonl"))  # replayed and cleaned up
