"""Every model of the deployment in one serving process (:mod:`include.mlops.catalog`).

Each model has a :class:`~.service.ServingService` of its own: its request schema (from its spec),
its :class:`~.models.ModelManager` polling its own registered model's ``champion`` /
``challenger`` aliases, its micro-batcher and predictor thread, its inference-log records
(``model_name`` is the model's) and its metric series (the ``model`` label). They share the process:
one Prometheus registry and one inference-log writer with its journal (:mod:`.sink`).

The **default model** (``MLOPS_SPEC``) loads at start-up, as a single-model deployment always did,
and answers ``POST /predict`` and ``POST /models/<name>/predict``. Every other model loads
**lazily**, on its first request to ``POST /models/<name>/predict`` (that request waits for the
registry read and the load, like the default model's start-up does), or when ``/admin/reload``
names it. ``/health`` never loads a model: it lists every model with ``loaded`` (false until then),
its versions, canary, last load failure and the memory its models take (pickled bytes); a model
that is not loaded takes no memory, no thread and no registry calls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from include.mlops.serving.metrics import ServingMetrics
from include.mlops.serving.service import ServingService, freeze_heap, single_threaded_math
from include.mlops.serving.sink import LogSink

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from include.mlops.catalog import Catalog
    from include.mlops.domain.spec import Spec
    from include.mlops.settings import Settings

log = logging.getLogger(__name__)


class UnknownModel(KeyError):
    """A route or an admin call named a model this deployment does not have."""

    def __init__(self, name: str, names: list[str]):
        self.name = name
        self.names = names
        super().__init__(name)

    def body(self) -> dict[str, Any]:
        return {"detail": f"no model {self.name[:100]!r} in this deployment; models: {', '.join(self.names)}", "models": self.names}


class Deployment:
    """The services of every model of ``catalog``; ``default_spec`` overrides the default model's spec."""

    def __init__(self, settings: Settings, catalog: Catalog, *, default_spec: Spec | None = None, engine: Engine | None = None):
        self.settings = settings
        self.catalog = catalog
        self.metrics = ServingMetrics()
        self.sink = LogSink(settings, self.metrics, engine)
        entry = catalog.default
        spec = default_spec or entry.spec
        name = (settings.model_name_override or spec.name) if default_spec is not None else entry.name
        self.default = ServingService(
            settings, spec, model_name=name, default=True, route=f"/models/{name}/predict", metrics=self.metrics, sink=self.sink
        )
        self.services: dict[str, ServingService] = {name: self.default}
        for other in catalog.models:
            if other.default or other.name in self.services:
                continue
            self.services[other.name] = ServingService(
                settings, other.spec, model_name=other.name, default=False, route=other.route, metrics=self.metrics, sink=self.sink
            )

    @property
    def names(self) -> list[str]:
        return list(self.services)

    def get(self, name: str) -> ServingService:
        """The service of model ``name``, or :class:`UnknownModel`."""
        service = self.services.get(name)
        if service is None:
            raise UnknownModel(name, self.names)
        return service

    async def start(self) -> None:
        """The inference-log writer, then the default model (the others load on their first request)."""
        single_threaded_math()  # the event loop thread scores a lone request itself
        freeze_heap()
        await self.sink.start()
        await self.default.start()
        lazy = [n for n, s in self.services.items() if not s.default]
        if lazy:
            log.info("models loaded on their first request: %s", ", ".join(lazy))

    async def stop(self) -> None:
        """Graceful shutdown: every model stops polling and scores what is queued, then the log is written."""
        for service in self.services.values():
            await service.stop()
        await self.sink.stop()

    async def reload(self, name: str | None = None) -> list[str]:
        """Re-read the registry now, retrying failed loads: model ``name`` (loading it if it is not
        loaded yet), or every loaded model; returns the models re-read."""
        targets = [self.get(name)] if name is not None else [s for s in self.services.values() if s.loaded]
        for service in targets:
            if service.loaded:
                await asyncio.to_thread(service.manager.poll, True)
            else:
                await service.load()
        return [s.model_name for s in targets]

    def health(self) -> dict[str, Any]:
        """The default model's report at the top level (as a single-model deployment has it), and
        every model's under ``models``."""
        report = self.default.health()
        report["default_model"] = self.default.model_name
        report["models"] = {name: service.model_health() for name, service in self.services.items()}
        if self.catalog.errors:
            report["spec_errors"] = dict(self.catalog.errors)
        return report
