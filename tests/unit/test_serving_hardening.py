"""The serving API survives hostile requests (issue 17): strings the inference log cannot store,
numbers the model's dtype cannot hold, calendar edges, deep nesting, one bad request in a micro-batch,
a full queue, admin without a token, and 500 bodies without internals.

The request schema and the scorer are tested in-process; the app end to end through its ASGI entry
point (Starlette's TestClient) with a tiny real pipeline, on the ops store of the test backend
(SQLite, or PostgreSQL with MLOPS_TEST_BACKEND=postgres).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from include.mlops.adapters.registry import ServingConfig
from include.mlops.serving.batching import MicroBatcher, QueueFull
from include.mlops.serving.models import ModelManager
from include.mlops.serving.schema import MAX_ENTITY_ID_CHARS, RequestRejected, RequestSchema, Row
from include.mlops.serving.scoring import FrameBuilder, Scorer, Unscorable
from tests.conftest import ops_db_url

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny(spec):
    from tests.integration.serving_fixtures import train_tiny

    return train_tiny(spec, seed=0, rows=200, max_iter=5)


def good_row(spec, X, i: int = 0, entity: str = "e-1") -> dict[str, Any]:
    from tests.integration.serving_fixtures import row_payload

    return row_payload(spec, X, i, entity)


def rejected(schema: RequestSchema, body: bytes) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        schema.parse(body)
    return info.value


# -- strings the log cannot store -------------------------------------------------------------------
@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800", "\\udfff", "\\u001b", "\\u0085"])
def test_ids_and_categories_with_control_characters_or_lone_surrogates_are_422(spec, tiny, escape):
    """Raw JSON escapes (what killed the log writer): entity id, request id, a category, a field name."""
    schema = RequestSchema(spec)
    row = good_row(spec, tiny[1])
    text = json.dumps(row)
    cases = {
        spec.entity_id: text.replace('"e-1"', f'"e{escape}1"'),
        "carrier": text.replace(f'"carrier": "{row["carrier"]}"', f'"carrier": "A{escape}A"'),
        "request_id": text[:-1] + f', "request_id": "r{escape}"}}',
    }
    for field, body in cases.items():
        err = rejected(schema, body.encode())
        assert err.status == 422 and err.errors[0].field == field, (field, err.body())
        assert "control characters or lone surrogates" in err.summary()
        # what the log gets for the rejected row is storable: no NUL, no surrogate
        for eid in err.entity_ids:
            assert eid is None or (eid.encode("utf-8") and "\x00" not in eid)
    err = rejected(schema, (text[:-1] + f', "x{escape}": 1}}').encode())  # an unknown field's name is cleaned
    (bad,) = err.errors
    assert bad.reason.startswith("unknown field") and bad.field is not None
    bad.field.encode("utf-8")
    assert "\x00" not in bad.field and "\x1b" not in bad.field


def test_raw_bytes_that_decode_to_control_characters_or_surrogates_are_422(spec, tiny):
    """Not only escapes: json.loads decodes raw UTF-8 surrogates (surrogatepass), raw DEL and C1
    controls, and UTF-16 bodies; the fast path that skips the per-string check must see them all."""
    schema = RequestSchema(spec)
    text = json.dumps(good_row(spec, tiny[1]))
    bodies = [
        text.replace("e-1", "e-\udead").encode("utf-8", "surrogatepass"),  # a lone low surrogate, raw
        text.encode().replace(b"e-1", b"e-\xed\xa0\x80"),  # a UTF-8-encoded lone surrogate
        text.encode().replace(b"e-1", b"e-\x7f"),
        text.encode().replace(b"e-1", "e-\x85".encode()),
        text.replace("e-1", "e-\ud800").encode("utf-16-le", "surrogatepass"),
        text.replace("e-1", "e-\x9f").encode("utf-32"),
    ]
    for body in bodies:
        err = rejected(schema, body)
        assert err.status == 422 and err.errors[0].field == spec.entity_id, (body[:60], err.body())


def test_string_length_caps(spec, tiny):
    schema = RequestSchema(spec)
    row = good_row(spec, tiny[1])
    for field, value in (
        (spec.entity_id, "e" * (MAX_ENTITY_ID_CHARS + 1)),
        ("carrier", "C" * 201),
        (spec.time_column, "2013-03-01T08:00:00" + " " * 60),
    ):
        err = rejected(schema, json.dumps({**row, field: value}).encode())
        assert err.status == 422 and err.errors[0].field == field, err.body()
    assert rejected(schema, json.dumps({**row, "request_id": "r" * 65}).encode()).errors[0].field == "request_id"


# -- numbers the model's dtype cannot hold ----------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "raw", "reason"),
    [
        ("sched_hour", str(2**63), "64-bit integer"),  # just beyond int64
        ("sched_hour", "-" + str(2**63 + 1), "64-bit integer"),
        ("month", "1" + "0" * 299, "64-bit integer"),  # a 300-digit number
        ("month", "1e300", "64-bit integer"),  # a whole float far beyond int64
        ("distance", "1" + "0" * 400, "64-bit float"),  # beyond float64
        ("distance", "1e400", "finite"),  # json reads it as inf
        ("distance", "NaN", "finite"),
        ("temp", "-Infinity", "finite"),
    ],
)
def test_numbers_beyond_the_models_dtype_are_422(spec, tiny, field, raw, reason):
    schema = RequestSchema(spec)
    row = good_row(spec, tiny[1])
    body = json.dumps({**row, field: 0}).replace(f'"{field}": 0', f'"{field}": {raw}')
    err = rejected(schema, body.encode())
    assert err.status == 422 and err.errors[0].field == field and reason in err.errors[0].reason, err.body()
    assert len(err.summary()) < 300  # never hundreds of digits echoed


def test_numbers_within_the_dtype_are_accepted_and_scored(spec, tiny):
    model, X = tiny
    schema = RequestSchema(spec)
    row = good_row(spec, X)
    body = json.dumps({**row, "sched_hour": 2**63 - 1, "month": -(2**63), "distance": 1.7e308, "temp": 10**299})
    (parsed,) = schema.parse(body.encode()).rows
    proba = model.predict_proba(FrameBuilder(spec).frame([parsed]))
    assert np.all(np.isfinite(proba))


# -- calendar edges and nesting ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "when",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59", "1600-02-29T12:00:00"],
)
def test_calendar_edge_timestamps_are_422(spec, tiny, when):
    schema = RequestSchema(spec)
    err = rejected(schema, json.dumps({**good_row(spec, tiny[1]), spec.time_column: when}).encode())
    assert err.status == 422 and err.errors[0].field == spec.time_column, err.body()


def test_time_zones_across_dst_and_offsets_are_converted(spec, tiny):
    schema = RequestSchema(spec)
    for when, local in (
        ("2013-03-10T07:30:00+00:00", "2013-03-10T03:30:00"),  # just after the spring-forward gap in New York
        ("2013-11-03T05:30:00Z", "2013-11-03T01:30:00"),  # inside the repeated hour
        ("2013-03-01T08:00:00+14:00", "2013-02-28T13:00:00"),
    ):
        (row,) = schema.parse(json.dumps({**good_row(spec, tiny[1]), spec.time_column: when}).encode()).rows
        assert row.event_time is not None and row.event_time.isoformat() == local


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"rows": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b"{" + b'"a":{' * 30_000])
def test_deeply_nested_json_is_a_4xx(spec, body):
    err = rejected(RequestSchema(spec), body)
    assert 400 <= err.status < 500


# -- one bad request in a micro-batch ---------------------------------------------------------------
class Picky:
    """A model that cannot score one distance value (as a model may fail on values it never saw)."""

    def __init__(self, inner: Any, poison: float = 4242.0, broken: bool = False):
        self.inner = inner
        self.poison = poison
        self.broken = broken

    def predict_proba(self, X: Any) -> Any:
        if self.broken or (X["distance"] == self.poison).any():
            raise ValueError("secret internal detail: cannot score")
        return self.inner.predict_proba(X)


class _Job:
    def __init__(self, rows: list[Row]):
        self.rows = rows
        self.result: Any = None
        self.error: BaseException | None = None


def _rows(spec, X, n: int, prefix: str, distance: float | None = None) -> list[Row]:
    frames = FrameBuilder(spec)
    out = []
    for i in range(n):
        values = tuple(X.iloc[i][spec.feature_names])
        values = tuple(None if isinstance(v, float) and np.isnan(v) else v for v in values)
        if distance is not None:
            values = tuple(distance if name == "distance" else v for name, v in zip(frames.names, values, strict=True))
        out.append(Row(f"{prefix}-{i}", None, values))
    return out


@pytest.mark.parametrize(("mode", "challenger"), [(None, None), ("canary", "2"), ("shadow", "2")])
def test_one_bad_request_in_a_micro_batch_fails_alone(spec, tiny, mode, challenger):
    model, X = tiny
    models = {"1": Picky(model), "2": Picky(model)}
    manager = ModelManager("m", lambda: ServingConfig("1", challenger, mode, 0.5), loader=models.__getitem__)
    manager.poll()
    frames = FrameBuilder(spec)
    probe = [Row("probe", None, frames.probe_row(spec))]
    scorer = Scorer(manager, frames, salt="m", probe=probe)
    jobs = [_Job(_rows(spec, X, 3, "a")), _Job(_rows(spec, X, 2, "bad", distance=4242.0)), _Job(_rows(spec, X, 4, "c"))]
    scorer(jobs)  # type: ignore[arg-type]
    assert scorer.rescored == 1
    assert isinstance(jobs[1].error, Unscorable) and "secret" not in str(jobs[1].error)
    for job in (jobs[0], jobs[2]):
        assert job.error is None and len(job.result) == len(job.rows)
        assert all(o.status == "ok" for o in job.result)
        assert all(o.extra is None or o.extra.status == "ok" for o in job.result)  # no error row for the challenger


def test_a_model_that_fails_on_everything_is_an_error_not_the_requests_fault(spec, tiny):
    model, X = tiny
    manager = ModelManager("m", lambda: ServingConfig("1", None, None, 0.0), loader=lambda v: Picky(model, broken=True))
    manager.poll()
    frames = FrameBuilder(spec)
    scorer = Scorer(manager, frames, salt="m", probe=[Row("probe", None, frames.probe_row(spec))])
    jobs = [_Job(_rows(spec, X, 2, "a")), _Job(_rows(spec, X, 2, "b"))]
    scorer(jobs)  # type: ignore[arg-type]
    for job in jobs:
        assert job.error is None and all(o.status == "error" for o in job.result)
    assert scorer.rescored == 0  # the probe fails too: no request is to blame, nothing is scored again


def test_a_broken_canary_is_not_scored_request_by_request(spec, tiny):
    """A challenger failing on the probe row too is broken: its rows fall back to the champion at
    once (error records for the challenger), without re-scoring each request of every batch."""
    model, X = tiny
    models = {"1": model, "2": Picky(model, broken=True)}
    manager = ModelManager("m", lambda: ServingConfig("1", "2", "canary", 0.5), loader=models.__getitem__)
    manager.poll()
    frames = FrameBuilder(spec)
    scorer = Scorer(manager, frames, salt="m", probe=[Row("probe", None, frames.probe_row(spec))])
    jobs = [_Job(_rows(spec, X, 6, f"j{k}")) for k in range(3)]
    scorer(jobs)  # type: ignore[arg-type]
    assert scorer.rescored == 0
    outcomes = [o for job in jobs for o in job.result]
    assert all(o.status == "ok" and o.version == "1" for o in outcomes)
    assert any(o.extra is not None and o.extra.status == "error" and o.extra.version == "2" for o in outcomes)


# -- a bounded queue --------------------------------------------------------------------------------
def test_a_full_queue_refuses_at_once_and_recovers():
    release = threading.Event()

    def slow(jobs):
        release.wait(10)
        for j in jobs:
            j.result = list(j.rows)

    async def go():
        b = MicroBatcher(slow, executor=ThreadPoolExecutor(1), max_queued_rows=5)
        first = asyncio.ensure_future(b.submit(["x"]))
        await asyncio.sleep(0.05)  # taken by the predictor, held there
        queued = [asyncio.ensure_future(b.submit(["q"] * 2)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await b.submit(["y"] * 2)  # 4 waiting + 2 > 5
        release.set()
        done = await asyncio.gather(first, *queued)
        return done, await b.submit(["z"] * 2), b.refused

    done, later, refused = asyncio.run(go())
    assert done == [["x"], ["q", "q"], ["q", "q"]] and later == ["z", "z"] and refused == 1


# -- the app end to end (ASGI) ----------------------------------------------------------------------
def _app(spec, tmp_path, monkeypatch, model: Any, **env: str):
    import include.mlops.serving.models as models_mod
    from include.mlops.serving.app import create_app
    from include.mlops.settings import get_settings

    monkeypatch.setattr(models_mod, "load_sklearn", lambda name, version: model)
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = get_settings(
        {
            "MLOPS_HOME": str(tmp_path),
            "MLOPS_OPS_DB_URL": ops_db_url(tmp_path),
            "MLOPS_SERVING_JOURNAL": str(tmp_path / "journal"),
            "MLOPS_SERVING_POLL_SECONDS": "60",
            "MLOPS_MODEL_NAME": "hardening",
            **env,
        }
    )
    app = create_app(settings, spec)
    app.service.manager._config = lambda: ServingConfig("1", None, None, 0.0)
    return app


def _log(app) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from include.mlops.adapters.store import inference_log

    with app.service.writer._store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(inference_log).order_by(inference_log.c.id)).mappings()]


def test_admin_reload_fails_closed_without_a_token(spec, tiny, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    app = _app(spec, tmp_path, monkeypatch, tiny[0])
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
            resp = client.post("/admin/reload", headers=headers)
            assert resp.status_code == 403 and "MLOPS_SERVING_ADMIN_TOKEN" in resp.json()["detail"], resp.text
    app = _app(spec, tmp_path / "2", monkeypatch, tiny[0], MLOPS_SERVING_ADMIN_TOKEN="tok")
    with TestClient(app) as client:
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers={"Authorization": "Bearer tok"}).status_code == 200


def test_hostile_requests_get_4xx_the_writer_survives_and_health_reports_it(spec, tiny, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    model, X = tiny
    app = _app(spec, tmp_path, monkeypatch, Picky(model))
    row = json.dumps(good_row(spec, X, 0, "ok-1"))
    hostile = [
        (row.replace('"ok-1"', '"a\\u0000b"'), 422),
        (row.replace('"ok-1"', '"a\\ud800b"'), 422),
        (row[:-1] + ', "request_id": "\\udfff"}', 422),
        (json.dumps({**good_row(spec, X, 1, "big"), "month": 10**300}), 422),
        (json.dumps({**good_row(spec, X, 1, "tz"), spec.time_column: "0001-01-01T00:00:00+14:00"}), 422),
        ("[" * 200_000, 400),
        (json.dumps({**good_row(spec, X, 2, "poison"), "distance": 4242.0}), 422),  # the model cannot score it; the probe it can
    ]
    with TestClient(app) as client:
        for body, code in hostile:
            resp = client.post("/predict", content=body.encode(), headers={"Content-Type": "application/json"})
            assert resp.status_code == code, (body[:80], resp.text)
            assert "secret internal detail" not in resp.text
        resp = client.post("/predict", content=row.encode())
        assert resp.status_code == 200, resp.text
        # a record the store refuses, straight into the writer (as a bug upstream could send): dead-lettered
        service = app.service
        service.writer.submit(
            [{**service._record("r\ud800", "e\ud800\x00", "1", "champion", "rejected", created=service.started_at, latency_ms=1.0)}]
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (service.writer.depth or not any(r["entity_id"] == "ok-1" for r in _log(app))):
            time.sleep(0.05)
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        info = health.json()["inference_log"]
        assert info["writer_alive"] is True and info["queue_depth"] == 0 and info["dead_letter"] >= 1, info
        records = _log(app)
        assert any(r["entity_id"] == "ok-1" and r["status"] == "ok" for r in records)
        rejected_ = [r for r in records if r["status"] == "rejected"]
        assert len(rejected_) == len(hostile)
        for r in rejected_:  # every stored string is clean
            for key in ("entity_id", "request_id", "error"):
                assert r[key] is None or ("\x00" not in r[key] and not any(0xD800 <= ord(c) <= 0xDFFF for c in r[key]))
        dead = (tmp_path / "serving-dead-letter" / "dead-letter.jsonl").read_text().splitlines()
        entry = json.loads(dead[-1])
        assert entry["record"]["entity_id"] == "e\ud800\x00" and entry["error"]
    health = app.service.health()
    assert health["status"] == "degraded" and health["inference_log"]["writer_alive"] is False  # stopped with the app


def test_a_500_body_never_echoes_the_exception(spec, tiny, tmp_path, monkeypatch, caplog):
    from fastapi.testclient import TestClient

    model, X = tiny
    app = _app(spec, tmp_path, monkeypatch, model)
    with TestClient(app) as client:
        app.service.manager._state = type(app.service.manager.state)(
            champion=type(app.service.manager.state.champion)("1", Picky(model, broken=True), app.service.started_at, 0.0)
        )
        resp = client.post("/predict", json=good_row(spec, X, 0, "boom-1"))
        assert resp.status_code == 500
        body = resp.json()
        assert "secret" not in resp.text and "ValueError" not in resp.text
        assert body["request_id"] and body["request_id"] in body["detail"]
    assert any("secret internal detail" in r.getMessage() or (r.exc_info and "secret" in str(r.exc_info[1])) for r in caplog.records)


def test_a_full_queue_answers_503_with_retry_after(spec, tiny, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from include.mlops.serving.batching import QueueFull

    app = _app(spec, tmp_path, monkeypatch, tiny[0])
    with TestClient(app) as client:

        async def full(rows):
            raise QueueFull("2048 rows are waiting to be scored (the limit is 2048); retry shortly")

        app.service.batcher.submit = full
        resp = client.post("/predict", json=good_row(spec, tiny[1], 0, "busy-1"))
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1" and "overloaded" in resp.json()["detail"]
