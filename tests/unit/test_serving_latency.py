"""Latency per version (issue 16): each inference-log row carries the scoring version's own predict
time (``model_ms``), so the early window's and monitoring's latency ratio compare the two models'
costs, not the request latency both share; and the serving process's CPU and memory read from its
``/metrics`` for continuous monitoring (the pure parts of ``steps.monitoring.resources``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.mlops.adapters.registry import ServingConfig
from include.mlops.domain.policy import latency_ratio
from include.mlops.domain.spec import Monitoring
from include.mlops.serving.models import ModelManager
from include.mlops.serving.schema import Row
from include.mlops.serving.scoring import FrameBuilder, Scorer
from include.mlops.steps.monitoring.checks import Summary
from include.mlops.steps.monitoring.resources import check_serving, cpu_use, model_p95_ms, parse_metrics, process_reading
from tests.conftest import ops_db_url

pytestmark = pytest.mark.unit

#: Long enough that a warm tiny model's call stays far below it on a busy machine.
PAUSE_S = 0.15


@pytest.fixture(scope="module")
def tiny(spec):
    from tests.integration.serving_fixtures import train_tiny

    return train_tiny(spec, seed=0, rows=200, max_iter=5)


class Slow:
    """A model that takes at least ``PAUSE_S`` per predict call."""

    def __init__(self, inner: Any):
        self.inner = inner

    def predict_proba(self, X: Any) -> Any:
        time.sleep(PAUSE_S)
        return self.inner.predict_proba(X)


class _Job:
    def __init__(self, rows: list[Row]):
        self.rows = rows
        self.result: Any = None
        self.error: BaseException | None = None


def _rows(spec, X, n: int, prefix: str) -> list[Row]:
    out = []
    for i in range(n):
        values = tuple(None if isinstance(v, float) and np.isnan(v) else v for v in X.iloc[i][spec.feature_names])
        out.append(Row(f"{prefix}-{i}", None, values))
    return out


def _scorer(spec, tiny, mode: str) -> Scorer:
    model, _ = tiny
    models = {"1": model, "2": Slow(model)}
    manager = ModelManager("m", lambda: ServingConfig("1", "2", mode, 0.5), loader=models.__getitem__)
    manager.poll()
    scorer = Scorer(manager, FrameBuilder(spec), salt="m")
    scorer([_Job(_rows(spec, tiny[1], 20, "warm-up"))])  # type: ignore[list-item]  # first calls are slow
    return scorer


# -- the scorer times each version's own call --------------------------------------------------------
def test_canary_rows_of_one_batch_carry_their_own_versions_predict_time(spec, tiny):
    scorer = _scorer(spec, tiny, "canary")
    jobs = [_Job(_rows(spec, tiny[1], 20, f"j{k}")) for k in range(2)]
    scorer(jobs)  # type: ignore[arg-type]
    outcomes = [o for job in jobs for o in job.result]
    by_version = {v: [o.model_ms for o in outcomes if o.version == v] for v in ("1", "2")}
    assert by_version["1"] and by_version["2"], "both versions scored rows of the batch"
    assert min(by_version["2"]) >= PAUSE_S * 1000  # the slow challenger's own call
    assert max(by_version["1"]) < PAUSE_S * 1000  # the champion's call does not include it
    assert len(set(by_version["2"])) == 1  # one call scored all its rows of the batch: the same duration


def test_shadow_records_carry_the_shadows_own_time_and_failures_none(spec, tiny):
    scorer = _scorer(spec, tiny, "shadow")
    job = _Job(_rows(spec, tiny[1], 5, "s"))
    scorer([job])  # type: ignore[arg-type]
    for out in job.result:
        assert out.version == "1" and out.model_ms < PAUSE_S * 1000
        assert out.extra is not None and out.extra.version == "2" and out.extra.model_ms >= PAUSE_S * 1000


def test_the_app_logs_model_ms_per_version_beside_the_shared_request_latency(spec, tiny, tmp_path, monkeypatch):
    """End to end through the ASGI app: a request's rows share ``latency_ms`` (the request's), while
    ``model_ms`` is each version's own predict time."""
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    import include.mlops.serving.models as models_mod
    from include.mlops.adapters.store import inference_log
    from include.mlops.serving.app import create_app
    from include.mlops.settings import get_settings
    from tests.integration.serving_fixtures import row_payload

    model, X = tiny
    models = {"1": model, "2": Slow(model)}
    monkeypatch.setattr(models_mod, "load_sklearn", lambda name, version: models[version])
    settings = get_settings(
        {
            "MLOPS_HOME": str(tmp_path),
            "MLOPS_OPS_DB_URL": ops_db_url(tmp_path),
            "MLOPS_SERVING_POLL_SECONDS": "60",
            "MLOPS_MODEL_NAME": "lat",
        }
    )
    app = create_app(settings, spec)
    app.service.manager._config = lambda: ServingConfig("1", "2", "canary", 0.5)
    with TestClient(app) as client:
        resp = client.post("/predict", json={"rows": [row_payload(spec, X, i, f"e-{i}") for i in range(30)], "request_id": "r1"})
        assert resp.status_code == 200, resp.text
        assert {p["model_version"] for p in resp.json()["predictions"]} == {"1", "2"}
    with app.service.writer._store.engine.connect() as conn:  # the writer drained at shutdown
        rows = [dict(r) for r in conn.execute(select(inference_log).where(inference_log.c.request_id == "r1")).mappings()]
    assert len(rows) == 30 and len({r["latency_ms"] for r in rows}) == 1
    champion = [r["model_ms"] for r in rows if r["model_version"] == "1"]
    challenger = [r["model_ms"] for r in rows if r["model_version"] == "2"]
    assert min(challenger) >= PAUSE_S * 1000 > max(champion)
    assert rows[0]["latency_ms"] >= max(challenger)  # the request waited for both calls


# -- the ratio ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mine", "champion", "expected"),
    [(40.0, 10.0, 4.0), (5.0, 10.0, 0.5), (None, 10.0, None), (40.0, None, None), (40.0, 0.0, None), (float("nan"), 10.0, None)],
)
def test_latency_ratio(mine, champion, expected):
    assert latency_ratio(mine, champion) == expected


def test_model_p95_uses_scored_rows_and_tolerates_logs_without_the_column():
    frame = pd.DataFrame({"status": ["ok"] * 20 + ["error"], "model_ms": [float(i) for i in range(20)] + [999.0]})
    assert model_p95_ms(frame) == pytest.approx(np.percentile(range(20), 95))
    assert model_p95_ms(frame.drop(columns=["model_ms"])) is None
    assert model_p95_ms(frame.assign(model_ms=None)) is None


# -- the serving process from /metrics ----------------------------------------------------------------
METRICS = """# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
process_resident_memory_bytes 3.145728e+08
process_start_time_seconds 1700000000.0
mlops_serving_worker_pid 4242.0
mlops_serving_predict_seconds_count{model_version="1"} 7.0
"""


def test_parse_metrics_reads_cpu_memory_start_and_pid():
    r = parse_metrics(METRICS, at=1700000100.0)
    assert r == {"at": 1700000100.0, "cpu_seconds": 12.5, "rss_mb": 300.0, "started": 1700000000.0, "pid": 4242.0}
    assert parse_metrics("process_resident_memory_bytes 1\n", at=1.0) is None  # no CPU figure: no reading


def test_cpu_use_between_readings_of_the_same_process_else_since_it_started():
    a = parse_metrics(METRICS, at=1700000100.0)
    b = {**a, "at": 1700000110.0, "cpu_seconds": 17.5}
    assert cpu_use(a, b) == {"cores": 0.5, "basis": "since_reading", "span_s": 10.0}
    restarted = {**b, "pid": 7.0, "started": 1700000105.0, "cpu_seconds": 2.5}
    assert cpu_use(a, restarted)["basis"] == "unknown"  # the early window: no figure across a restart
    assert cpu_use(a, restarted, since_start=True) == {"cores": 0.5, "basis": "since_process_start", "span_s": 5.0}
    assert cpu_use(None, b, since_start=True)["basis"] == "since_process_start"
    assert cpu_use(a, {**a, "at": a["at"] + 0.2})["cores"] is None  # too close together
    assert cpu_use(a, None)["basis"] == "unknown"
    legacy = {"at": 1.0, "cpu_seconds": 1.0, "rss_mb": 10.0}  # a reading taken before pid and start were read
    assert cpu_use(legacy, {"at": 3.0, "cpu_seconds": 2.0})["cores"] == 0.5


def test_process_reading_unreachable_is_unknown():
    assert process_reading(None, None)["status"] == "unknown"
    r = process_reading(None, parse_metrics(METRICS, at=1700000100.0))
    assert r["status"] == "measured" and r["rss_mb"] == 300.0 and r["cpu_cores"] == 0.125 and r["pid"] == 4242


# -- monitoring's check ---------------------------------------------------------------------------------
def _summary(role: str, version: str) -> Summary:
    return Summary("m", version, role, "2013-02-01T00:00:00", "2013-02-02T00:00:00", rows=40)


def _frame(champion_ms: float, challenger_ms: float) -> pd.DataFrame:
    rows = [("1", "champion", "ok", champion_ms)] * 30 + [("2", "challenger", "ok", challenger_ms)] * 10
    rows += [("2", "challenger", "error", None)]
    return pd.DataFrame(rows, columns=["model_version", "route", "status", "model_ms"])


MEASURED = {"status": "measured", "rss_mb": 500.0, "cpu_cores": 0.4, "cpu_basis": "since_reading", "cpu_span_s": 3600.0}


def test_a_slow_challenger_is_a_latency_ratio_warning_the_champion_is_the_reference():
    frame = _frame(2.0, 9.0)
    mon = Monitoring()
    s = _summary("challenger", "2")
    check_serving(s, frame, frame[frame["model_version"] == "2"], MEASURED, mon)
    assert s.system["model_p95_ms"] == 9.0 and s.system["champion_model_p95_ms"] == 2.0 and s.system["latency_ratio"] == 4.5
    assert s.outcome == "warning" and s.reason_codes == ["latency_ratio"] and "4.50x the champion's" in s.reasons[0]
    champ = _summary("champion", "1")
    check_serving(champ, frame, frame[frame["model_version"] == "1"], MEASURED, mon)
    assert champ.reason_codes == [] and "latency_ratio" not in champ.system and champ.system["process"] == MEASURED
    ok = _summary("challenger", "2")
    check_serving(ok, _frame(2.0, 5.0), _frame(2.0, 5.0).query("model_version == '2'"), MEASURED, mon)
    assert ok.reason_codes == [] and ok.system["latency_ratio"] == 2.5


@pytest.mark.parametrize(
    ("reading", "codes"),
    [
        ({**MEASURED, "rss_mb": 4000.0}, ["serving_memory"]),
        ({**MEASURED, "cpu_cores": 1.95}, ["serving_cpu"]),
        ({**MEASURED, "rss_mb": 4000.0, "cpu_cores": 2.0}, ["serving_memory", "serving_cpu"]),
        ({**MEASURED, "cpu_cores": None}, []),
        ({"status": "unknown", "reason": "the serving API's /metrics could not be read"}, []),
        (None, []),
    ],
    ids=["memory", "cpu", "both", "cpu-unknown", "unreachable", "not-read"],
)
def test_process_limits_are_warnings_and_an_unreadable_process_is_unknown(reading, codes):
    frame = _frame(2.0, 2.0)
    s = _summary("champion", "1")
    check_serving(s, frame, frame[frame["model_version"] == "1"], reading, Monitoring())
    assert s.reason_codes == codes and s.outcome == ("warning" if codes else "healthy")
    if reading is not None:
        assert s.system["process"]["status"] == reading["status"]
    if codes == ["serving_cpu"]:
        assert "1.95 cores (since reading) > 1.90" in s.reasons[0]
