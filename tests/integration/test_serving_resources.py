"""Latency per version and the serving process's resources on a real uvicorn serving process, a real
MLflow server and the test's ops store (issue 16):

* a deliberately slow canary (the default pipeline behind a step that pauses on every call) shows a
  latency ratio above 1 in the early window's signals, measured on each version's own inference
  time (``inference_log.model_ms``), and breaches ``early_window.max_latency_ratio``;
* continuous monitoring reads the serving process's CPU and memory from its ``/metrics`` once per
  pass (CPU between two passes), records them in the window's summary and decision, warns and
  alerts over ``monitoring.max_rss_mb``; a stopped process is reported as unknown, not a failure.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from include.mlops.adapters.registry import CHALLENGER, CHAMPION, mlflow_client, set_alias, set_challenger_mode
from tests.integration.serving_fixtures import MlflowServer, Process, ServingProcess, register, row_payload, start_serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

#: The slow canary's pause per predict call; the tiny champion's call takes a few milliseconds.
PAUSE_S = 0.1


def pause(frame: Any, seconds: float) -> Any:
    """A pipeline step that only takes time (the slow canary's)."""
    time.sleep(seconds)
    return frame


def slow_pipeline(spec: Any, params: dict[str, Any]) -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from include.mlops.domain.pipelines import default_pipeline

    step = FunctionTransformer(pause, kw_args={"seconds": PAUSE_S}, validate=False)
    return Pipeline([("pause", step), *default_pipeline(spec, params).steps])


def serve_slow_canary(rt: Any, mlflow_env: dict[str, Any], tmp_path: Path) -> tuple[ServingProcess, str, str, Any]:
    """v1 (tiny default pipeline) as champion, v2 (the same behind a pause) as a 50 % canary, served
    by a real uvicorn process writing to the runtime's ops store."""
    import pandas as pd

    from include.mlops.domain.pipelines import default_pipeline
    from tests.helpers import make_batch

    spec = rt.spec
    df = pd.concat([make_batch(spec, date(2013, 3, d), n=100, seed=d) for d in range(1, 5)], ignore_index=True)
    x, y = df[spec.feature_names], spec.target.derive(df[spec.target.source_column]).astype(int)
    model = default_pipeline(spec, {"max_iter": 15}).fit(x, y)
    unused = Process("mlflow", None, tmp_path / "unused.log")  # type: ignore[arg-type]
    server = MlflowServer(unused, mlflow_env["url"], Path(mlflow_env["artifacts"]), ops_db=rt.settings.ops_db_url)
    v1 = register(server, spec, rt.model_name, model, x)
    v2 = register(server, spec, rt.model_name, slow_pipeline(spec, {"max_iter": 15}).fit(x, y), x, extra_trusted=(f"{__name__}.pause",))
    client = mlflow_client(mlflow_env["url"])
    set_alias(rt.store, client, rt.model_name, CHAMPION, v1, strategy="direct", reason="first", actor="test", op_key="r1")
    set_challenger_mode(client, rt.model_name, "canary", 0.5)
    set_alias(rt.store, client, rt.model_name, CHALLENGER, v2, strategy="canary", reason="slow canary", actor="test", op_key="r2")
    serving = start_serving(tmp_path / "serving", server, rt.model_name, {"MLOPS_OPS_DB_URL": rt.settings.ops_db_url})
    try:
        serving.wait_serving(v1, v2)
    except Exception:
        serving.process.stop()
        raise
    return serving, v1, v2, x


def send(serving: ServingProcess, spec: Any, x: Any, n: int, prefix: str) -> dict[str, int]:
    """``n`` one-row requests, one after the other; the versions that answered them."""
    answered: dict[str, int] = {}
    for i in range(n):
        status, body = serving.predict(row_payload(spec, x, i % len(x), f"{prefix}-{i}"))
        assert status == 200, body
        version = body["predictions"][0]["model_version"]
        answered[version] = answered.get(version, 0) + 1
    return answered


def wait_logged(rt: Any, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(rt.store.inference_rows(rt.model_name, ["id"])) < n and time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_slow_canary_breaches_the_latency_ratio_on_its_own_inference_time(ml_runtime, mlflow_env, spec_variant, tmp_path, monkeypatch):
    from include.mlops.runtime import load_runtime
    from include.mlops.steps.release import find_release, judge, serving_process

    spec_variant("latency", early_window={"min_requests": 30, "max_latency_ratio": 2.0})
    serving, v1, v2, x = serve_slow_canary(load_runtime(), mlflow_env, tmp_path)
    try:
        monkeypatch.setenv("MLOPS_SERVING_URL", serving.url)
        rt = load_runtime()
        start = serving_process(rt.settings.serving_url)  # what the early-window DAG reads at deployment
        assert start is not None and start["pid"] == serving.process.pid
        answered = send(serving, rt.spec, x, 90, "lat")
        assert answered.get(v1, 0) >= 20 and answered.get(v2, 0) >= 30, answered
        wait_logged(rt, 90)
        verdict, inputs = judge(rt, find_release(rt, v2), start, tmp_path / "reports")
    finally:
        serving.process.stop()

    signals = inputs["signals"]
    ratio = signals["model_p95_ms"] / signals["champion_model_p95_ms"]
    assert signals["model_p95_ms"] >= PAUSE_S * 1000 and ratio > 2.0, signals
    assert verdict.details["latency_ratio"] == pytest.approx(ratio, rel=1e-4)
    assert verdict.outcome == "rollback" and verdict.reason_code == "hard_breach", verdict
    assert any("inference time" in r and "x the champion's > 2.00x" in r for r in verdict.reasons), verdict.reasons
    # the serving process was read at both ends of the window: its CPU and memory are measured
    assert signals["cpu_cores"] is not None and signals["cpu_cores"] >= 0 and signals["rss_mb"] > 10
    # each row says which version's call scored it; a request's latency covers its model's call
    rows = rt.store.inference_rows(rt.model_name, ["model_version", "latency_ms", "model_ms", "status"])
    for version, latency_ms, model_ms, status in rows:
        assert status == "ok" and model_ms is not None and latency_ms >= model_ms
        assert version != v2 or model_ms >= PAUSE_S * 1000
    champion_ms = sorted(m for v, _, m, _ in rows if v == v1)
    assert champion_ms[len(champion_ms) // 2] < PAUSE_S * 1000 / 4


def test_monitoring_reads_the_serving_process_warns_alerts_and_reports_unknown_when_it_is_gone(
    ml_runtime, mlflow_env, spec_variant, tmp_path, monkeypatch
):
    import pandas as pd

    from include.mlops.runtime import load_runtime
    from include.mlops.steps.monitoring.checks import Summary
    from include.mlops.steps.monitoring.resources import READING_KEY, alert_serving, check_serving, pass_resources
    from include.mlops.steps.monitoring.run import record_decision

    spec_variant("resources", monitoring={"max_rss_mb": 1.0, "max_latency_ratio": 2.0})
    serving, v1, v2, x = serve_slow_canary(load_runtime(), mlflow_env, tmp_path)
    try:
        monkeypatch.setenv("MLOPS_SERVING_URL", serving.url)
        rt = load_runtime()
        first = pass_resources(rt)  # no earlier reading: the process's lifetime average
        assert first["status"] == "measured" and first["cpu_basis"] == "since_process_start" and first["pid"] == serving.process.pid
        send(serving, rt.spec, x, 40, "mon")
        time.sleep(1.0)
        shared: dict[str, Any] = {}
        reading = pass_resources(rt, shared)  # the next pass: CPU since the previous reading
        assert pass_resources(rt, shared) is reading  # once per pass, whatever the number of windows
        assert reading["cpu_basis"] == "since_reading" and reading["cpu_cores"] >= 0 and reading["rss_mb"] > 10, reading
        assert rt.store.get_state(rt.model_name, READING_KEY)["pid"] == serving.process.pid
        wait_logged(rt, 40)
        cols = ["model_version", "route", "status", "model_ms"]
        frame = pd.DataFrame(rt.store.inference_rows(rt.model_name, cols), columns=cols)
        window = (datetime(2026, 1, 1), datetime(2026, 1, 2))
        summaries = {}
        for version, role in ((v1, "champion"), (v2, "challenger")):
            s = Summary(rt.model_name, version, role, window[0].isoformat(), window[1].isoformat(), rows=40)
            check_serving(s, frame, frame[frame["model_version"] == version], reading, rt.spec.monitoring)
            alert_serving(rt, s)
            summaries[role] = s
        champion, challenger = summaries["champion"], summaries["challenger"]
        assert champion.reason_codes == ["serving_memory"] and champion.outcome == "warning"
        assert challenger.reason_codes == ["latency_ratio", "serving_memory"], challenger.reasons
        assert challenger.system["latency_ratio"] > 2.0 and challenger.system["model_p95_ms"] >= PAUSE_S * 1000
        record_decision(rt, champion, window, tmp_path / "summary.json", None, dag_id=None, run_id=None)
        (decision,) = rt.store.list_decisions(rt.model_name, "monitor")
        assert decision["reason_code"] == "serving_memory" and decision["inputs"]["system"]["process"]["rss_mb"] == reading["rss_mb"]
        alerts = {a["dedupe_key"]: a for a in rt.store.list_alerts(rt.model_name) if a["kind"] == "monitoring_warning"}
        assert set(alerts) == {"serving_memory", f"latency_ratio:v{v2}"}
        assert alerts["serving_memory"]["count"] == 2 and alerts["serving_memory"]["severity"] == "warning"
        # a later reading within the limit resolves the process's alert
        calm = Summary(rt.model_name, v1, "champion", window[0].isoformat(), window[1].isoformat(), rows=40)
        check_serving(
            calm, frame, frame[frame["model_version"] == v1], pass_resources(rt), rt.spec.monitoring.model_copy(update={"max_rss_mb": 1e6})
        )
        alert_serving(rt, calm)
        assert calm.reason_codes == []
        assert rt.store.find_open_alert(rt.model_name, "serving_memory") is None
    finally:
        serving.process.stop()

    gone = pass_resources(rt)  # nothing answers /metrics now
    assert gone["status"] == "unknown"
    s = Summary(rt.model_name, v1, "champion", window[0].isoformat(), window[1].isoformat(), rows=40)
    check_serving(s, frame, frame[frame["model_version"] == v1], gone, rt.spec.monitoring)
    assert s.reason_codes == [] and s.system["process"]["status"] == "unknown"
