"""One model's serving: its request schema, loaded models, micro-batcher, inference-log records and
metrics (:class:`ServingService`). :mod:`.deployment` holds one per model of the deployment (they
share the metrics registry and the inference-log writer, :mod:`.sink`); :mod:`.app` puts HTTP in
front of them. A service built alone (tests) owns its own writer."""

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
from include.mlops.serving.bodies import read_asgi_body, read_request_body
from include.mlops.serving.metrics import ServingMetrics
from include.mlops.serving.models import ModelManager, check_model
from include.mlops.serving.routing import CHALLENGER, CHAMPION
from include.mlops.serving.schema import FieldError, ParsedRequest, RequestRejected, RequestSchema, Row
from include.mlops.serving.scoring import FrameBuilder, NoChampion, Outcome, Scorer, Unscorable
from include.mlops.serving.sink import LogSink
from include.mlops.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from include.mlops.adapters.registry import ServingConfig
    from include.mlops.serving.deadletter import DeadLetter
    from include.mlops.serving.logwriter import InferenceLogWriter, Record

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


def single_threaded_math() -> None:
    """Run the model's OpenMP / BLAS code on the calling thread alone (the predictor thread, the event loop).

    A micro-batch is small (tens of rows): HistGradientBoosting's per-tree OpenMP fork/join costs
    more than it saves, and on a busy 2-core machine OpenMP's spin-waiting burns the CPU the event
    loop needs (measured here: 1-row predict_proba took ~8x the CPU time with the default threads).
    """
    import sklearn.utils._openmp_helpers  # noqa: F401 - loads scikit-learn's OpenMP runtime, so the limit reaches it
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # not a context manager: it stays in force for this thread


def freeze_heap() -> None:
    """Move every object alive now (imported libraries, the loaded models) out of the garbage collector's sight.

    The process holds millions of long-lived objects (MLflow, scikit-learn, pandas, the models); a
    full collection walks all of them and stalls every request for tens of milliseconds. Frozen
    objects are never collected (they live as long as the process anyway), so collections stay small.
    """
    import gc

    gc.collect()
    gc.freeze()


class ServingService:
    """One model's endpoints: schema, models, batcher, inference-log records and metrics.

    ``model_name`` (default: ``MLOPS_MODEL_NAME`` or the spec's name) is the registered model;
    ``default`` says whether it is the deployment's default model (its loader reads ``MLOPS_SPEC``,
    else this spec's trust list applies). ``metrics`` and ``sink`` are the process's shared ones;
    without them the service makes its own and :meth:`start` / :meth:`stop` run them.
    """

    def __init__(
        self,
        settings: Settings,
        spec: Spec,
        *,
        config: Callable[[], ServingConfig] | None = None,
        engine: Engine | None = None,
        model_name: str | None = None,
        default: bool = True,
        route: str | None = None,
        metrics: ServingMetrics | None = None,
        sink: LogSink | None = None,
    ):
        self.settings = settings
        self.spec = spec
        self.model_name = model_name or settings.model_name_override or spec.name
        self.default = default
        self.route = route or f"/models/{self.model_name}/predict"
        shared = metrics if metrics is not None else ServingMetrics()
        self.metrics = shared.for_model(self.model_name)
        self.sink = sink if sink is not None else LogSink(settings, shared, engine)
        self._owns_sink = sink is None
        #: True once the first registry read and load are done and the poller runs (see :meth:`load`)
        self.loaded = False
        self._loading: asyncio.Future[None] | None = None
        self._stopping = False
        self.schema = RequestSchema(spec, max_rows=settings.serving_max_rows)
        self.frames = FrameBuilder(spec)
        probe = self.frames.frame([self._probe_row()])
        self.manager = ModelManager(
            self.model_name,
            config or self._registry_config,
            probe=lambda model: self._accept_model(model, probe),
            poll_seconds=settings.serving_poll_seconds,
            metrics=self.metrics,
            spec=None if default else spec,
        )
        self._client: Any = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict", initializer=single_threaded_math)
        self.scorer = Scorer(self.manager, self.frames, self.metrics, salt=self.model_name, probe=[self._probe_row()], task=spec.task)
        batch_rows = max(MAX_BATCH_ROWS, settings.serving_max_rows)
        self.batcher = MicroBatcher(
            self.scorer,
            max_batch_rows=batch_rows,
            executor=self.executor,
            max_wait=settings.serving_batch_wait_ms / 1000,
            inline_when_alone=True,
            max_queued_rows=MAX_QUEUED_BATCHES * batch_rows,
        )
        self.tz = ZoneInfo(spec.timezone)
        #: the log's ``prediction`` column holds a class; a regressor's value is its ``score``
        self.logs_prediction = spec.task != "regression"
        self.started_at = utcnow()

    @property
    def writer(self) -> InferenceLogWriter | None:
        return self.sink.writer

    @property
    def dead_letter(self) -> DeadLetter:
        return self.sink.dead_letter

    def _probe_row(self) -> Row:
        return Row("probe", None, self.frames.probe_row(self.spec))

    def _accept_model(self, model: Any, probe: Any) -> tuple[Any, str]:
        """Check a freshly loaded model, prepare its direct input path (:mod:`.direct`) when that
        reproduces it exactly, then freeze both with the rest of the long-lived heap."""
        from include.mlops.serving.direct import compile_direct

        check_model(model, probe, self.spec.task)
        if self.settings.serving_direct_input:
            direct, note = compile_direct(model, self.spec, self.frames)
        else:
            direct, note = None, "turned off (MLOPS_SERVING_DIRECT_INPUT=off)"
        freeze_heap()
        return direct, note

    def _registry_config(self) -> ServingConfig:
        from include.mlops.adapters.registry import mlflow_client, serving_config

        if self._client is None:
            self._client = mlflow_client(self.settings.mlflow_tracking_uri)
        return serving_config(self._client, self.model_name, self.spec.deployment.canary_share)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start serving now: the inference-log writer (when this service owns it), then :meth:`load`."""
        single_threaded_math()  # the event loop thread scores a lone request itself
        freeze_heap()
        if self._owns_sink:
            await self.sink.start()
        await self.load()

    async def load(self) -> None:
        """Read the registry and load what serves, then poll it in the background. Concurrent
        callers (the first requests of a lazily loaded model) wait for the same load."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        # Take traffic only once the first registry read has loaded what serves: a worker that
        # uvicorn restarts beside a live one would otherwise answer 503 until its model is in.
        first = asyncio.ensure_future(asyncio.to_thread(self.manager.poll))
        try:
            await asyncio.wait_for(asyncio.shield(first), timeout=FIRST_LOAD_WAIT_S)
        except TimeoutError:
            log.warning("the first registry read and model load took over %.0f s; taking requests (503 until done)", FIRST_LOAD_WAIT_S)
        except Exception:  # the poller tries again; requests get 503 with the reason meanwhile
            log.exception("the first registry read for %s failed unexpectedly", self.model_name)
        if self._stopping:
            return
        self.manager.start()
        self.loaded = True
        log.info("serving %s on %s (registry %s)", self.model_name, self.settings.serving_url, self.settings.mlflow_tracking_uri)

    async def stop(self) -> None:
        """Graceful shutdown: stop polling, score what is queued, then (when owned) write every log record."""
        self._stopping = True
        self.manager.stop()
        await self.batcher.close()
        self.executor.shutdown(wait=True)
        if self._owns_sink:
            await self.sink.stop()

    # -- requests -------------------------------------------------------------------------------
    async def read_body(self, request: Request) -> bytes:
        return await read_request_body(request, self.settings.serving_max_body_bytes)

    async def read_asgi_body(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]]) -> bytes:
        return await read_asgi_body(scope, receive, self.settings.serving_max_body_bytes)

    async def predict(self, read_body: Callable[[], Awaitable[bytes]]) -> Answer:
        """Answer one predict request: (HTTP status, JSON body). A model not loaded yet loads first."""
        if not self.loaded:
            await self.load()
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
                        prediction=o.prediction if self.logs_prediction else None,
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
        self.sink.submit(records)

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
        prediction: float | None = None,
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
        sink = self.sink.health()
        return {
            "status": "degraded" if sink["writer_alive"] is False else "ok",
            **self.manager.health(),
            "inference_log": sink,
            "batches": self.batcher.batches,
            "queued_requests": self.batcher.queued,
            "refused_busy": self.batcher.refused,
            "started_at": self.started_at.isoformat(timespec="seconds") + "Z",
        }

    def model_health(self) -> dict[str, Any]:
        """This model's entry in ``/health``'s ``models``: ``loaded`` is whether its first registry read
        and load are done (a model other than the default loads on its first request), ``ready``
        whether a champion serves, ``memory`` what its models in memory take (pickled bytes)."""
        routes = ["/predict", self.route] if self.default else [self.route]
        return {
            "default": self.default,
            "task": self.spec.task,
            "routes": routes,
            "loaded": self.loaded,
            **self.manager.health(),
            "batches": self.batcher.batches,
            "queued_requests": self.batcher.queued,
            "refused_busy": self.batcher.refused,
        }
