"""Real processes for the serving tests: an ``mlflow server`` (SQLite, temp folder, free port), tiny
models registered in it, and the serving API under uvicorn on a free port. Shared by
``test_serving_http.py`` and the benchmark (``benchmarks/serving``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import mlflow_backend_uri, ops_db_url

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: Fail fast instead of MLflow's default minutes of HTTP retries (the serving API polls again anyway).
MLFLOW_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DO_NOT_TRACK": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str, url: str, body: Any = None, raw: bytes | None = None, timeout: float = 30.0, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One HTTP call with the standard library; returns (status, parsed JSON or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    text = payload.decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@dataclass
class Process:
    """A process we started in its own session (so we can stop it and its children by its id)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def start_process(name: str, cmd: list[str], env: dict[str, str], log: Path) -> Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT, start_new_session=True
        )
    return Process(name, proc, log)


def wait_http(url: str, process: Process, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited during start-up:\n{process.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{process.name} did not answer {url} within {timeout}s:\n{process.tail()}")


def base_env() -> dict[str, str]:
    env = {**os.environ, **MLFLOW_CLIENT_ENV, "PYTHONPATH": str(ROOT), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


@dataclass
class MlflowServer:
    process: Process
    uri: str
    artifacts: Path
    folder: Path | None = None
    backend: str | None = None
    #: The ops store the loop keeps beside this registry (model digests; serving's default store).
    ops_db: str | None = None

    def ops_db_url(self) -> str:
        if self.ops_db is None:
            self.ops_db = ops_db_url(self.folder or self.artifacts.parent)
        return self.ops_db

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def restart(self) -> MlflowServer:
        """The same server again: same port, backend store and artifacts (after ``process.stop()``)."""
        assert self.folder is not None and not self.process.alive()
        server = start_mlflow(self.folder, port=int(self.uri.rsplit(":", 1)[1]), backend=self.backend)
        server.ops_db = self.ops_db
        return server


def start_mlflow(folder: Path, port: int | None = None, backend: str | None = None) -> MlflowServer:
    port = port or free_port()
    backend = backend or mlflow_backend_uri(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = start_process("mlflow", cmd, base_env(), folder / "mlflow.log")
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, timeout=120)
    except Exception:
        proc.stop()
        raise
    return MlflowServer(proc, uri, folder / "artifacts", folder, backend)


def train_tiny(spec: Any, seed: int = 0, rows: int = 400, max_iter: int = 15) -> tuple[Any, Any]:
    """A small fitted pipeline of the spec's kind on synthetic rows from tests.helpers.make_batch."""
    from datetime import date

    import pandas as pd

    from include.mlops.domain.pipelines import default_pipeline
    from tests.helpers import make_batch

    df = pd.concat([make_batch(spec, date(2013, 3, d), n=rows // 4, seed=seed) for d in range(1, 5)], ignore_index=True)
    X = df[spec.feature_names]
    y = spec.target.derive(df[spec.target.source_column]).astype(int)
    model = default_pipeline(spec, {"max_iter": max_iter, "max_leaf_nodes": 15})
    model.fit(X, y)
    return model, X


def register(server: MlflowServer, spec: Any, name: str, model: Any, X: Any, extra_trusted: tuple[str, ...] = ()) -> str:
    """Log ``model`` as a new version of registered model ``name`` the way the loop does (skops, its
    sha256 recorded in the server's ops store: :func:`MlflowServer.ops_db_url`); returns the version."""
    import mlflow

    from include.mlops.adapters.model_artifacts import register_sklearn_model
    from include.mlops.adapters.store import Store

    mlflow.set_tracking_uri(server.uri)
    mlflow.set_registry_uri(server.uri)
    mlflow.set_experiment(f"serving-tests-{name}")
    with mlflow.start_run():
        return register_sklearn_model(
            Store.open(server.ops_db_url()),
            model,
            name,
            [*spec.training.skops_trusted_types, *extra_trusted],
            recorded_by="tests",
            pip_requirements=["scikit-learn", "pandas"],
            input_example=X.head(2),
        )


def model_file(server: MlflowServer, name: str, version: str) -> Path:
    """The serialized model file of a registered version inside the server's artifact folder."""
    mv = server.client().get_model_version(name, version)
    model_id = mv.model_id or str(mv.source).rstrip("/").rsplit("/", 1)[-1]  # source is models:/m-<id>
    matches = [p for p in server.artifacts.rglob("model.skops") if model_id in p.parts]
    if len(matches) != 1:
        raise FileNotFoundError(
            f"expected one model.skops for {name} v{version} (model {model_id}) under {server.artifacts}, found {matches}"
        )
    return matches[0]


@dataclass
class ServingProcess:
    process: Process
    url: str
    env: dict[str, str]
    db_url: str
    extra: dict[str, Any] = field(default_factory=dict)

    def predict(self, body: Any, timeout: float = 30.0) -> tuple[int, Any]:
        return http("POST", f"{self.url}/predict", body, timeout=timeout)

    def health(self) -> dict[str, Any]:
        status, data = http("GET", f"{self.url}/health")
        assert status == 200, data
        return data

    def wait_serving(self, champion: str | None, challenger: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until /health says these versions serve."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.health()
            serving = last["serving"]
            if serving["champion"] == champion and serving["challenger"] == challenger:
                return last
            time.sleep(0.2)
        raise AssertionError(f"serving did not reach champion={champion} challenger={challenger}: {last}\n{self.process.tail()}")


def start_serving(
    folder: Path, mlflow: MlflowServer, model_name: str, extra_env: dict[str, str] | None = None, workers: int | None = None
) -> ServingProcess:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    db_url = (extra_env or {}).get("MLOPS_OPS_DB_URL") or mlflow.ops_db_url()
    env = {
        **base_env(),
        "MLOPS_HOME": str(folder),
        "MLOPS_OPS_DB_URL": db_url,
        "MLFLOW_TRACKING_URI": mlflow.uri,
        "MLOPS_MODEL_NAME": model_name,
        "MLOPS_SERVING_PORT": str(port),
        "MLOPS_SERVING_POLL_SECONDS": "0.5",
        **(extra_env or {}),
    }
    cmd = [
        str(BIN / "uvicorn"),
        "include.mlops.serving.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "30",
    ]
    if workers:
        cmd += ["--workers", str(workers)]
    proc = start_process("serving", cmd, env, folder / f"serving-{port}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, timeout=90)
    except Exception:
        proc.stop()
        raise
    return ServingProcess(proc, url, env, db_url)


def log_rows(db_url: str, model_name: str) -> list[dict[str, Any]]:
    """Every inference-log record of ``model_name`` in the ops store at ``db_url``."""
    from sqlalchemy import create_engine, select

    from include.mlops.adapters.store import inference_log

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(inference_log).where(inference_log.c.model_name == model_name).order_by(inference_log.c.id))
            return [dict(r) for r in rows.mappings()]
    finally:
        engine.dispose()


def row_payload(spec: Any, X: Any, i: int, entity_id: str) -> dict[str, Any]:
    """Row ``i`` of the feature frame as a /predict row (NaN -> null, numpy -> JSON numbers)."""
    import math

    row: dict[str, Any] = {spec.entity_id: entity_id}
    for name, value in X.iloc[i].items():
        if isinstance(value, float) and math.isnan(value):
            row[str(name)] = None
        elif hasattr(value, "item"):
            row[str(name)] = value.item()
        else:
            row[str(name)] = value
    return row


#: Name of the regression model the multi-model serving tests add beside the default classifier.
REGRESSION_MODEL = "flights_delay_minutes"


def write_regression_spec(folder: Path, name: str = REGRESSION_MODEL) -> Path:
    """A regression spec (the flights features, the raw arrival delay in minutes as the target) in
    ``folder``, the way a second model of a deployment is added: a spec file in ``MLOPS_SPECS``."""
    import yaml

    raw = yaml.safe_load((ROOT / "include/specs/flights.yaml").read_text())
    raw["name"] = name
    raw["task"] = "regression"
    raw["description"] = "Arrival delay in minutes (a regression model served beside the classifier)."
    raw["target"] = {k: v for k, v in raw["target"].items() if k not in ("op", "value")}
    raw["target"]["description"] = "arrival delay, minutes"
    raw["deployment"].update(primary_metric="mae", floors={})
    raw["promotion"]["metric"] = "mae"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_tiny_regressor(spec: Any, seed: int = 0, rows: int = 400, max_iter: int = 15) -> tuple[Any, Any]:
    """A small fitted regression pipeline (ordinal-encoded categoricals + HistGradientBoostingRegressor,
    the default pipeline's shape) predicting the raw outcome of synthetic rows."""
    from datetime import date

    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    from tests.helpers import make_batch

    df = pd.concat([make_batch(spec, date(2013, 3, d), n=rows // 4, seed=seed) for d in range(1, 5)], ignore_index=True)
    X = df[spec.feature_names]
    y = df[spec.target.source_column].astype(float) + X["sched_hour"] * 2.0  # something to learn
    cats = [f.name for f in spec.features if f.type == "categorical"]
    nums = [f.name for f in spec.features if f.type != "categorical"]
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1, dtype=np.float64)
    pre = ColumnTransformer([("cat", encoder, cats), ("num", "passthrough", nums)], verbose_feature_names_out=False)
    reg = HistGradientBoostingRegressor(
        categorical_features=list(range(len(cats))), max_iter=max_iter, max_leaf_nodes=15, random_state=seed, early_stopping=False
    )
    model = Pipeline([("pre", pre), ("reg", reg)])
    model.fit(X, y)
    return model, X
