"""Prometheus metrics of the serving API, in a registry of its own (one per app instance).

A private :class:`~prometheus_client.CollectorRegistry` keeps two apps in one process (tests) from
colliding and lets ``/metrics`` show exactly the serving metrics plus the process collector (CPU
seconds, resident memory, open files). With several uvicorn workers each worker has its own
numbers; scrape each worker, or run one worker per replica (the default).

One process serves every model of the deployment (:mod:`.deployment`): the per-model series carry a
``model`` label (the registered model name); a model's code writes them through its
:class:`ModelMetrics`, which binds that label. The inference-log writer is shared, so its series
have no model label.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class ServingMetrics:
    """Every metric the serving API exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        # Which process answered this scrape: with several uvicorn workers each has its own counters,
        # and a scraper (the load test, or Prometheus without multiprocess mode) tells them apart by it.
        Gauge("mlops_serving_worker_pid", "Process id of the serving worker that answered this scrape.", registry=r).set(os.getpid())
        self.requests = Counter(
            "mlops_serving_requests",
            "HTTP requests to a model's predict route by model and response status code.",
            ["model", "status"],
            registry=r,
        )
        self.rows = Counter(
            "mlops_serving_rows",
            "Rows handled by a predict route by model, outcome (ok | error | rejected), model version and route "
            "(champion | challenger | shadow).",
            ["model", "status", "model_version", "route"],
            registry=r,
        )
        self.latency = Histogram(
            "mlops_serving_request_latency_seconds",
            "Time from a predict request's arrival to its answer, by model and response status code.",
            ["model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predict_seconds = Histogram(
            "mlops_serving_predict_seconds",
            "Time of one model call (predict_proba, or predict for a regressor; one micro-batch) by model and version.",
            ["model", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "mlops_serving_batch_rows", "Rows scored together in one micro-batch, by model.", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.model_loads = Counter(
            "mlops_serving_model_loads",
            "Model load attempts by model, alias, version and result (success | failure).",
            ["model", "alias", "version", "result"],
            registry=r,
        )
        self.model_serving = Gauge(
            "mlops_serving_model_info",
            "1 for each (model, alias, version) this process is serving right now.",
            ["model", "alias", "version"],
            registry=r,
        )
        self.polls = Counter(
            "mlops_serving_registry_polls", "Registry polls by model and result (ok | error).", ["model", "result"], registry=r
        )
        self.last_poll = Gauge(
            "mlops_serving_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful registry poll, by model.",
            ["model"],
            registry=r,
        )
        self.log_written = Counter("mlops_serving_inference_log_written", "Inference-log records written to the ops store.", registry=r)
        self.log_write_errors = Counter(
            "mlops_serving_inference_log_write_errors", "Failed bulk inserts into the inference log (each is retried).", registry=r
        )
        self.log_dropped = Counter(
            "mlops_serving_inference_log_dropped", "Inference-log records given up on (queue full, or unwritable at shutdown).", registry=r
        )
        self.log_dead_lettered = Counter(
            "mlops_serving_inference_log_dead_lettered",
            "Inference-log records the ops store refused as data, kept in the dead-letter file with their error.",
            registry=r,
        )
        self.log_queue = Gauge("mlops_serving_inference_log_queue_depth", "Inference-log records waiting to be written.", registry=r)

    def track_queue(self, depth: Callable[[], float]) -> None:
        self.log_queue.set_function(depth)

    def for_model(self, model: str) -> ModelMetrics:
        """The per-model series of ``model`` (its ``model`` label bound)."""
        return ModelMetrics(self, model)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Bound:
    """A labelled metric with its ``model`` label already set: ``.labels(**the others)``."""

    __slots__ = ("_metric", "_model")

    def __init__(self, metric: Any, model: str):
        self._metric = metric
        self._model = model

    def labels(self, **labels: str) -> Any:
        return self._metric.labels(model=self._model, **labels)


class ModelMetrics:
    """What one model's code (its manager, scorer and service) writes: the shared metrics with the
    ``model`` label bound; the inference-log series (shared) pass through unchanged."""

    def __init__(self, shared: ServingMetrics, model: str):
        self.shared = shared
        self.model = model
        self.requests = _Bound(shared.requests, model)
        self.rows = _Bound(shared.rows, model)
        self.latency = _Bound(shared.latency, model)
        self.predict_seconds = _Bound(shared.predict_seconds, model)
        self.batch_rows = shared.batch_rows.labels(model=model)
        self.model_loads = _Bound(shared.model_loads, model)
        self.polls = _Bound(shared.polls, model)
        self.last_poll = shared.last_poll.labels(model=model)
        self.log_written = shared.log_written
        self.log_write_errors = shared.log_write_errors
        self.log_dropped = shared.log_dropped
        self.log_dead_lettered = shared.log_dead_lettered
        self._serving: list[tuple[str, str]] = []

    def for_model(self, model: str) -> ModelMetrics:
        return self if model == self.model else self.shared.for_model(model)

    def set_serving(self, serving: dict[str, str | None]) -> None:
        """Publish which version each alias of this model serves (removes this model's old series)."""
        gauge = self.shared.model_serving
        for alias, version in self._serving:
            gauge.remove(self.model, alias, version)
        self._serving = [(alias, version) for alias, version in serving.items() if version is not None]
        for alias, version in self._serving:
            gauge.labels(model=self.model, alias=alias, version=version).set(1)

    def render(self) -> bytes:
        return self.shared.render()
