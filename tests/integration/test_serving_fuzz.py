"""Property-based fuzzing of the RUNNING serving API from its own OpenAPI schema (issue 17).

A real ``mlflow server`` and a real uvicorn serving process (the fixtures of ``test_serving_http``);
schemathesis reads ``/openapi.json`` and generates ``POST /predict`` bodies from it with hypothesis:
schema-valid ones (positive) and schema-violating ones (negative), plus hostile raw bodies the schema
cannot describe (lone surrogates, NUL escapes, deep nesting, huge numbers, calendar edges). Asserted:

* no answer is a 5xx, and every answer is JSON;
* no inference-log record is lost, counted as the load test does: after a graceful stop, every
  row answered 200 has its ``ok`` record (same request id and entity id), and every 4xx has its
  ``rejected`` record;
* the log writer is alive at the end and dead-lettered nothing (the schema rejected it first).

``MLOPS_FUZZ_REQUESTS`` sets the number of generated requests (default 300: the test takes under 2 minutes here);
the issue's acceptance run is ``MLOPS_FUZZ_REQUESTS=10000``.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from typing import Any

import pytest

from tests.integration.serving_fixtures import http, log_rows, register, row_payload
from tests.integration.test_serving_http import mlflow_server, models, serving_factory  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.timeout(int(os.environ.get("MLOPS_FUZZ_TIMEOUT", "900")))]

REQUESTS = int(os.environ.get("MLOPS_FUZZ_REQUESTS", "300"))
#: Share of the generated requests that violate the schema on purpose.
NEGATIVE_SHARE = 0.3


def hostile_bodies(spec: Any, good: dict[str, Any]) -> list[bytes]:
    """Bodies JSON Schema cannot describe: what broke the log writer or gave a 500 before."""
    text = json.dumps(good)
    eid = json.dumps(good[spec.entity_id])
    out = [
        text.replace(eid, '"a\\u0000b"').encode(),
        text.replace(eid, '"a\\ud800b"').encode(),
        text.replace(eid, '"\\udfff"').encode(),
        (text[:-1] + ', "request_id": "r\\ud800"}').encode(),
        (text[:-1] + ', "request_id": "r\\u0000"}').encode(),
        text.replace('"carrier": ', '"carrier": "\\u0000", "x": ', 1).encode(),
        b"[" * 100_000,
        b'{"rows": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        b"\xff\xfe{}",
        b"",
    ]
    for field, raw in (
        ("month", str(2**64)),
        ("month", "1" + "0" * 299),
        ("distance", "1" + "0" * 400),
        ("distance", "1e999"),
        ("temp", "NaN"),
    ):
        out.append(json.dumps({**good, field: 0}).replace(f'"{field}": 0', f'"{field}": {raw}').encode())
    for when in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2013-03-10T02:30:00", "2013-11-03T01:30:00-04:00"):
        out.append(json.dumps({**good, spec.time_column: when}).encode())
    return out


def test_fuzzing_predict_from_the_openapi_schema_gives_no_5xx_and_loses_no_log_record(spec, mlflow_server, models, serving_factory):  # noqa: F811
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode

    fitted, X = models
    name = "serving_fuzz"
    version = register(mlflow_server, spec, name, fitted[0], X)
    mlflow_server.client().set_registered_model_alias(name, "champion", version)
    serving = serving_factory(mlflow_server, name)
    serving.wait_serving(version)

    schema = schemathesis.openapi.from_url(f"{serving.url}/openapi.json")
    operation = schema["/predict"]["POST"]
    answers: list[tuple[int, Any, int]] = []  # (status, parsed body, rows sent or -1)
    session = requests.Session()

    def record(status: int, text: str, rows: int) -> None:
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        answers.append((status, body, rows))
        assert status < 500, f"{status} for a generated request: {text[:500]}"
        assert isinstance(body, dict) and "detail" in body or status == 200, text[:500]

    def rows_of(body: Any) -> int:
        if isinstance(body, dict) and isinstance(body.get("rows"), list):
            return len(body["rows"])
        return 1 if isinstance(body, dict) else -1

    def run(mode: GenerationMode, n: int) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=n, database=None, deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        def send(case: Any) -> None:
            response = case.call(base_url=serving.url, session=session, timeout=30)
            record(response.status_code, response.text, rows_of(case.body))

        send()

    negative = int(REQUESTS * NEGATIVE_SHARE)
    hostile = hostile_bodies(spec, row_payload(spec, X, 0, "hostile-1"))
    for body in hostile:
        status, answer = http("POST", f"{serving.url}/predict", raw=body)
        record(status, json.dumps(answer) if not isinstance(answer, str) else answer, -1)
    while len(answers) < len(hostile) + REQUESTS - negative:
        run(GenerationMode.POSITIVE, len(hostile) + REQUESTS - negative - len(answers))
    while len(answers) < len(hostile) + REQUESTS:
        run(GenerationMode.NEGATIVE, len(hostile) + REQUESTS - len(answers))

    statuses = Counter(status for status, _, _ in answers)
    assert sum(statuses.values()) >= REQUESTS and all(s < 500 for s in statuses), statuses
    assert statuses[200] > 0 and statuses[422] > 0, statuses  # both paths were exercised
    health = serving.health()
    assert health["inference_log"]["writer_alive"] is True and health["inference_log"]["dead_letter"] == 0, health

    # Zero lost, counted like the load test: stop gracefully (the writer drains), then every answered
    # row has its record. Each 200 row: an ok record with its request id and entity id.
    code = serving.process.stop(signal.SIGTERM, timeout=120)
    assert code in (0, -signal.SIGTERM), serving.process.tail()
    answered = Counter((body["request_id"], p["entity_id"]) for status, body, _ in answers if status == 200 for p in body["predictions"])
    records = log_rows(serving.db_url, name)
    logged = Counter((r["request_id"], r["entity_id"]) for r in records if r["status"] == "ok")
    lost = answered - logged
    assert not lost and sum(logged.values()) == sum(answered.values()), f"{sum(lost.values())} answered rows without a record"
    rejected_requests = {r["request_id"] for r in records if r["status"] == "rejected"}
    refused = [body["request_id"] for status, body, _ in answers if 400 <= status < 500 and status not in (401, 503)]
    assert all(rid in rejected_requests for rid in refused), "a rejected request without its log record"
    print(f"\nfuzz: {len(answers)} requests, statuses {dict(statuses)}, {sum(answered.values())} rows answered, all logged")
