"""What the serving endpoints share: the request schema, the loaded models, the micro-batcher, the
inference-log writer and the metrics (:class:`ServingService`); :mod:`.app` puts HTTP in front of it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from fastapi import Request

from include.mlops.domain.clock import utcnow
from include.mlops.domain.spec import Spec
from include.mlops.serving.batching import MicroBatcher, QueueFull
from include.mlops.serving.deadletter import DeadLetter
from include.mlops.serving.journal import Journal, recover
from include.mlops.serving.logwriter import InferenceLogWriter, Record
from include.mlops.serving.metrics import ServingMetrics
from include.mlops.serving.models import ModelManager
from include.mlops.serving.routing import CHALLENGER, CHAMPION
from include.mlops.serving.schema import FieldError, ParsedRequest, RequestRejected, RequestSchema, Row
from include.mlops.serving.scoring import FrameBuilder, NoChampion, Outcome, Scorer, Unscorable
from include.mlops.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy import Engine

    from include.mlops.adapters.registry import ServingConfig

log = logging.getLogger(__name__)

#: Rows of several requests scored in one predict_proba call at most (a bigger request goes alone).
MAX_BATCH_ROWS = 1024
#: Rows waiting to be scored at most (beyond: 503 with Retry-After), in batches of MAX_BATCH_ROWS.
MAX_QUEUED_BATCHES = 10
#: Seconds a client is asked to wait before retrying a 503.
RETRY_AFTER_S = 1
#: Longest wait at start-up for the first registry read and model load before taking requests.
FIRST_LOAD_WAIT_S = 30.0
JSON = "application/json"


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def internal_error(request_id: str) -> str:
    """What a 500 says: no exception text (that goes to the serving log under the request id)."""
    return f"internal error while scoring; the serving log has the details under request id {request_id}"


Answer = tuple[int, bytes]


def configure_logging(level: str) -> None:
    """Give the project's loggers a handler when nothing else did (uvicorn only configures its own)."""
    logger = logging.getLogger("include.mlops")
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def _single_threaded_math() -> None:
    """Run the model's OpenMP / BLAS code on the calling thread alone (the predictor thread, the event loop).

    A micro-batch is small (tens of rows): HistGradientBoosting's per-tree OpenMP fork/join costs
    more than it saves, and on a busy 2-core machine OpenMP's spin-waiting burns the CPU the event
    loop needs (measured here: 1-row predict_proba took ~8x the CPU time with the default threads).
    """
    import sklearn.utils._openmp_helpers  # noqa: F401 - loads scikit-learn's OpenMP runtime, so the limit reaches it
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # not a context manager: it stays in force for this thread


def _freeze_heap() -> None:
    """Move every object alive now (imported libraries, the loaded models) out of the garbage collector's sight.

    The process holds millions of long-lived objects (MLflow, scikit-learn, pandas, the models); a
    full collection walks all of them and stalls every request for tens of milliseconds. Frozen
    objects are never collected (they live as long as the process anyway), so collections stay small.
    """
    import gc

    gc.collect()
    gc.freeze()


def _open_engine(url: str) -> Engine:
    """The ops store's engine, migrated when reachable; the log writer retries when it is not (yet)."""
    from include.mlops.adapters.store import Store, get_engine

    try:
        return Store.open(url).engine
    except Exception as exc:
        log.warning("ops store %s is not available at start-up (%s); inference-log writes will be retried", url, exc)
        return get_engine(url)


def _open_journal(folder: Path | None, engine: Engine, dead_letter: DeadLetter | None = None) -> Journal | None:
    """Replay what killed processes left in the journal folder, then open this process's file."""
    if folder is None:
        return None
    try:
        recover(folder, engine, dead_letter)  # logs what it recovered
    except Exception as exc:  # the ops store may be down: the files stay for the next start
        log.warning("inference log journal in %s not replayed now (%s); the next start tries again", folder, exc)
    journal = Journal(folder)
    journal.open()
    return journal


class ServingService:
    """Everything the endpoints share: schema, models, batcher, log writer and metrics."""

    def __init__(self, settings: Settings, spec: Spec, *, config: Callable[[], ServingConfig] | None = None, engine: Engine | None = None):
        self.settings = settings
        self.spec = spec
        self.model_name = settings.model_name_override or spec.name
        self.metrics = ServingMetrics()
        self.schema = RequestSchema(spec, max_rows=settings.serving_max_rows)
        self.frames = FrameBuilder(spec)
        probe = self.frames.frame([self._probe_row()])
        self.manager = ModelManager(
            self.model_name,
            config or self._registry_config,
            probe=lambda model: self._accept_model(model, probe),
            poll_seconds=settings.serving_poll_seconds,
            metrics=self.metrics,
        )
        self._client: Any = None
        self._engine = engine
        self.writer: InferenceLogWriter | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict", initializer=_single_threaded_math)
        self.scorer = Scorer(self.manager, self.frames, self.metrics, salt=self.model_name, probe=[self._probe_row()])
        batch_rows = max(MAX_BATCH_ROWS, settings.serving_max_rows)
        self.batcher = MicroBatcher(
            self.scorer,
            max_batch_rows=batch_rows,
            executor=self.executor,
            max_wait=settings.serving_batch_wait_ms / 1000,
            inline_when_alone=True,
            max_queued_rows=MAX_QUEUED_BATCHES * batch_rows,
        )
        self.dead_letter = DeadLetter(settings.home / "serving-dead-letter")
        self.tz = ZoneInfo(spec.timezone)
        self.started_at = utcnow()

    def _probe_row(self) -> Row:
        return Row("probe", None, self.frames.probe_row(self.spec))

    def _accept_model(self, model: Any, probe: Any) -> tuple[Any, str]:
        """Check a freshly loaded model, prepare its direct input path (:mod:`.direct`) when that
        reproduces it exactly, then freeze both with the rest of the long-lived heap."""
        from include.mlops.serving.direct import compile_direct

        self._check_model(model, probe)
        if self.settings.serving_direct_input:
            direct, note = compile_direct(model, self.spec, self.frames)
        else:
            direct, note = None, "turned off (MLOPS_SERVING_DIRECT_INPUT=off)"
        _freeze_heap()
        return direct, note

    @staticmethod
    def _check_model(model: Any, probe: Any) -> None:
        """A freshly loaded model must score the probe row: two probabilities, finite, in [0, 1]."""
        import numpy as np
        from threadpoolctl import threadpool_limits

        if not hasattr(model, "predict_proba"):
            raise TypeError(f"{type(model).__name__} has no predict_proba")
        with threadpool_limits(limits=1):  # as on the predictor thread
            proba = np.asarray(model.predict_proba(probe))
        if proba.ndim != 2 or proba.shape[0] != 1 or proba.shape[1] < 2:
            raise ValueError(f"predict_proba on the probe row returned shape {proba.shape}, expected (1, 2)")
        if not np.all(np.isfinite(proba)) or proba.min() < 0 or proba.max() > 1:
            raise ValueError(f"predict_proba on the probe row returned {proba.tolist()}, not probabilities")

    def _registry_config(self) -> ServingConfig:
        from include.mlops.adapters.registry import mlflow_client, serving_config

        if self._client is None:
            self._client = mlflow_client(self.settings.mlflow_tracking_uri)
        return serving_config(self._client, self.model_name, self.spec.deployment.canary_share)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        _single_threaded_math()  # the event loop thread scores a lone request itself
        _freeze_heap()
        engine = self._engine if self._engine is not None else await asyncio.to_thread(_open_engine, self.settings.ops_db_url)
        journal = await asyncio.to_thread(_open_journal, self.settings.serving_journal_dir, engine, self.dead_letter)
        # Drain within the stack's stop grace (uvicorn gets 10 s for in-flight requests, then this).
        self.writer = InferenceLogWriter(engine, metrics=self.metrics, drain_timeout=8.0, journal=journal, dead_letter=self.dead_letter)
        self.metrics.track_queue(lambda: float(self.writer.depth) if self.writer else 0.0)
        self.writer.start()
        # Take traffic only once the first registry read has loaded what serves: a worker that
        # uvicorn restarts beside a live one would otherwise answer 503 until its model is in.
        first = asyncio.ensure_future(asyncio.to_thread(self.manager.poll))
        try:
            await asyncio.wait_for(asyncio.shield(first), timeout=FIRST_LOAD_WAIT_S)
        except TimeoutError:
            log.warning("the first registry read and model load took over %.0f s; taking requests (503 until done)", FIRST_LOAD_WAIT_S)
        self.manager.start()
        log.info("serving %s on %s (registry %s)", self.model_name, self.settings.serving_url, self.settings.mlflow_tracking_uri)

    async def stop(self) -> None:
        """Graceful shutdown: stop polling, score what is queued, then write every log record."""
        self.manager.stop()
        await self.batcher.close()
        self.executor.shutdown(wait=True)
        if self.writer is not None:
            lost = await asyncio.to_thread(self.writer.close)
            log.info("serving stopped: %d inference-log records written, %d lost", self.writer.written, lost)

    # -- requests -------------------------------------------------------------------------------
    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.serving_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestRejected(413, [FieldError(None, None, self._too_large(int(declared)))])
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestRejected(413, [FieldError(None, None, self._too_large(size, at_least=True))])
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_asgi_body(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]]) -> bytes:
        """The request body straight from the ASGI ``receive`` channel, within the size limit."""
        limit = self.settings.serving_max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise RequestRejected(413, [FieldError(None, None, self._too_large(int(value)))])
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionAbortedError("the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestRejected(413, [FieldError(None, None, self._too_large(size, at_least=True))])
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self, size: int, at_least: bool = False) -> str:
        return (
            f"request body of {'more than ' if at_least else ''}{size} bytes is over the limit of "
            f"{self.settings.serving_max_body_bytes} bytes (MLOPS_SERVING_MAX_BODY_BYTES)"
        )

    async def predict(self, read_body: Callable[[], Awaitable[bytes]]) -> Answer:
        """Answer one ``/predict`` request: (HTTP status, JSON body)."""
        started = time.perf_counter()
        created = utcnow()
        parsed: ParsedRequest | None = None
        try:
            body = await read_body()
            parsed = self.schema.parse(body)
            outcomes: list[Outcome] = await self.batcher.submit(parsed.rows)
        except RequestRejected as rejected:
            return self._rejected(rejected, started, created)
        except ConnectionAbortedError:
            raise  # nobody to answer
        except Exception as exc:
            return self._not_scored(exc, parsed, started, created)

        latency = time.perf_counter() - started
        latency_ms = latency * 1000
        request_id = parsed.request_id
        predictions = []
        records: list[Record] = []
        counts: Counter[tuple[str, str, str]] = Counter()
        now_local: datetime | None = None
        failed: str | None = None
        for row, out in zip(parsed.rows, outcomes, strict=True):
            predictions.append(
                {
                    "entity_id": row.entity_id,
                    "score": out.score,
                    "prediction": out.prediction,
                    "model_version": out.version,
                    "route": out.route,
                }
            )
            event_time = row.event_time
            if event_time is None:
                if now_local is None:
                    now_local = datetime.now(self.tz).replace(tzinfo=None)
                event_time = now_local
            features = self.schema.features_dict(row)
            for o in (out, out.extra):
                if o is None:
                    continue
                if o is out and o.status != "ok":
                    failed = o.error
                counts[(o.status, o.version, o.route)] += 1
                records.append(
                    self._record(
                        request_id,
                        row.entity_id,
                        o.version,
                        o.route,
                        o.status,
                        created=created,
                        latency_ms=latency_ms,
                        event_time=event_time,
                        features=features,
                        score=o.score,
                        prediction=o.prediction,
                        error=o.error,
                        model_ms=o.model_ms,
                    )
                )
        self._log(records)
        for (status, version, route), n in counts.items():
            self.metrics.rows.labels(status=status, model_version=version, route=route).inc(n)
        code = 200 if failed is None else 500
        self.metrics.requests.labels(status=str(code)).inc()
        self.metrics.latency.labels(status=str(code)).observe(latency)
        if failed is not None:  # the exception text is in the inference log and the serving log, not in the answer
            return code, dumps({"detail": internal_error(request_id), "request_id": request_id, "predictions": predictions})
        return 200, dumps({"request_id": request_id, "predictions": predictions})

    def _not_scored(self, exc: Exception, parsed: ParsedRequest | None, started: float, created: datetime) -> Answer:
        """The answer when scoring did not happen: the request's own values (422), a full queue or
        no champion (503), or a bug or a broken model (500, no internals in the body)."""
        if isinstance(exc, Unscorable) and parsed is not None:  # this request alone: the others of its batch were answered
            ids: list[str | None] = [r.entity_id for r in parsed.rows]
            return self._rejected(RequestRejected(422, [FieldError(None, None, str(exc))], ids, parsed.request_id), started, created)
        if isinstance(exc, QueueFull):
            return self._busy(started, str(exc))
        if isinstance(exc, NoChampion):
            return self._failed(parsed, started, created, 503, str(exc))
        request_id = parsed.request_id if parsed else f"failed-{time.time_ns():x}"
        log.error("predict failed (request %s)", request_id, exc_info=exc)
        detail = f"{type(exc).__name__}: {exc}"
        return self._failed(parsed, started, created, 500, internal_error(request_id), detail=detail, request_id=request_id)

    def _log(self, records: list[Record]) -> None:
        if self.writer is not None:
            self.writer.submit(records)

    def _record(
        self,
        request_id: str,
        entity_id: str | None,
        version: str | None,
        route: str,
        status: str,
        *,
        created: datetime,
        latency_ms: float,
        event_time: datetime | None = None,
        features: dict[str, Any] | None = None,
        score: float | None = None,
        prediction: int | None = None,
        error: str | None = None,
        model_ms: float | None = None,
    ) -> Record:
        """One inference-log record: the one place its keys are named. ``latency_ms`` is the
        request's (arrival to answer, the same for every row of it); ``model_ms`` is the scoring
        version's own predict call (:mod:`.scoring`), what the early window compares per version."""
        return {
            "request_id": request_id,
            "entity_id": entity_id,
            "model_name": self.model_name,
            "model_version": version,
            "route": route,
            "event_time": event_time,
            "features": features,
            "score": score,
            "prediction": prediction,
            "latency_ms": latency_ms,
            "model_ms": model_ms,
            "status": status,
            "error": error,
            "created_at": created,
        }

    def _route_of(self, entity_id: str | None) -> tuple[str | None, str]:
        """The version and route a row would have taken (for records of rows that were not scored)."""
        state = self.manager.state
        if entity_id is not None and state.challenger is not None and state.takes_canary(entity_id, self.model_name):
            return state.challenger.version, CHALLENGER
        return (state.champion.version if state.champion else None), CHAMPION

    def _rejected(self, rejected: RequestRejected, started: float, created: datetime) -> Answer:
        """A 4xx. Its records name the version that would have served each row; a row with no
        entity id (a body that was not even read as rows) was never routed: no version."""
        latency = time.perf_counter() - started
        request_id = rejected.request_id or f"rejected-{time.time_ns():x}"
        records: list[Record] = []
        per_row = any(e.row is not None for e in rejected.errors)
        for i, entity_id in enumerate(rejected.entity_ids):
            version, route = self._route_of(entity_id) if entity_id is not None else (None, CHAMPION)
            error = rejected.error_for_row(i) if per_row else rejected.summary()[:2000]
            records.append(
                self._record(request_id, entity_id, version, route, "rejected", created=created, latency_ms=latency * 1000, error=error)
            )
            self.metrics.rows.labels(status="rejected", model_version=version or "none", route=route).inc()
        self._log(records)
        self.metrics.requests.labels(status=str(rejected.status)).inc()
        self.metrics.latency.labels(status=str(rejected.status)).observe(latency)
        body = rejected.body()
        body["request_id"] = request_id
        return rejected.status, dumps(body)

    def _busy(self, started: float, message: str) -> Answer:
        """Refused before scoring (the batcher's queue is full): a 503 the client retries; not logged per row."""
        self.metrics.requests.labels(status="503").inc()
        self.metrics.latency.labels(status="503").observe(time.perf_counter() - started)
        return 503, dumps({"detail": f"the serving API is overloaded: {message}", "retry_after_seconds": RETRY_AFTER_S})

    def _failed(
        self,
        parsed: ParsedRequest | None,
        started: float,
        created: datetime,
        code: int,
        message: str,
        *,
        detail: str | None = None,
        request_id: str | None = None,
    ) -> Answer:
        """Valid rows that could not be scored (no champion, or an internal error): logged as errors.
        ``message`` is the answer's; ``detail`` (the exception) goes to the inference log only."""
        latency = time.perf_counter() - started
        request_id = request_id or (parsed.request_id if parsed else f"failed-{time.time_ns():x}")
        records: list[Record] = []
        for row in parsed.rows if parsed else []:
            version, route = self._route_of(row.entity_id)
            records.append(
                self._record(
                    request_id,
                    row.entity_id,
                    version,
                    route,
                    "error",
                    created=created,
                    latency_ms=latency * 1000,
                    event_time=row.event_time,
                    features=self.schema.features_dict(row),
                    error=(detail or message)[:2000],
                )
            )
            self.metrics.rows.labels(status="error", model_version=version or "none", route=route).inc()
        self._log(records)
        self.metrics.requests.labels(status=str(code)).inc()
        self.metrics.latency.labels(status=str(code)).observe(latency)
        return code, dumps({"detail": message, "request_id": request_id})

    def health(self) -> dict[str, Any]:
        """``status`` is ``degraded`` when the inference-log writer thread is not running (after start)."""
        writer = self.writer
        alive = writer.alive if writer else None
        return {
            "status": "degraded" if alive is False else "ok",
            **self.manager.health(),
            "inference_log": {
                "writer_alive": alive,
                "queue_depth": writer.depth if writer else 0,
                "written": writer.written if writer else 0,
                "dropped": writer.dropped if writer else 0,
                "dead_letter": self.dead_letter.total,
                "dead_letter_file": str(self.dead_letter.path),
            },
            "batches": self.batcher.batches,
            "queued_requests": self.batcher.queued,
            "refused_busy": self.batcher.refused,
            "started_at": self.started_at.isoformat(timespec="seconds") + "Z",
        }
