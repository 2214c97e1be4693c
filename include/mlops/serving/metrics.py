"""Prometheus metrics of the serving API, in a registry of its own (one per app instance).

A private :class:`~prometheus_client.CollectorRegistry` keeps two apps in one process (tests) from
colliding and lets ``/metrics`` show exactly the serving metrics plus the process collector (CPU
seconds, resident memory, open files). With several uvicorn workers each worker has its own
numbers; scrape each worker, or run one worker per replica (the default).
"""

from __future__ import annotations

import os
from collections.abc import Callable

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
        self.requests = Counter("mlops_serving_requests", "HTTP requests to /predict by response status code.", ["status"], registry=r)
        self.rows = Counter(
            "mlops_serving_rows",
            "Rows handled by /predict by outcome (ok | error | rejected), model version and route (champion | challenger | shadow).",
            ["status", "model_version", "route"],
            registry=r,
        )
        self.latency = Histogram(
            "mlops_serving_request_latency_seconds",
            "Time from a /predict request's arrival to its answer, by response status code.",
            ["status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predict_seconds = Histogram(
            "mlops_serving_predict_seconds",
            "Time of one predict_proba call (one micro-batch) by model version.",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "mlops_serving_batch_rows", "Rows scored together in one micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.model_loads = Counter(
            "mlops_serving_model_loads",
            "Model load attempts by alias, version and result (success | failure).",
            ["alias", "version", "result"],
            registry=r,
        )
        self.model_serving = Gauge(
            "mlops_serving_model_info", "1 for each (alias, version) this process is serving right now.", ["alias", "version"], registry=r
        )
        self.polls = Counter("mlops_serving_registry_polls", "Registry polls by result (ok | error).", ["result"], registry=r)
        self.last_poll = Gauge(
            "mlops_serving_last_successful_poll_timestamp_seconds", "Unix time of the last successful registry poll.", registry=r
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

    def set_serving(self, serving: dict[str, str | None]) -> None:
        """Publish which version each alias serves (removes the old series)."""
        self.model_serving.clear()
        for alias, version in serving.items():
            if version is not None:
                self.model_serving.labels(alias=alias, version=version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
