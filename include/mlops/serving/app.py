"""The serving API (FastAPI on uvicorn): ``POST /predict``, ``POST /models/<name>/predict``,
``GET /health``, ``GET /metrics``, ``POST /admin/reload``.

Run it as the stack does::

    uvicorn include.mlops.serving.app:create_app --factory --host 127.0.0.1 --port 8000

One process serves every model of the deployment (:mod:`.deployment`, from
:func:`include.mlops.catalog.load_catalog`): ``POST /models/<name>/predict`` scores with model
``<name>`` (404 naming the models for an unknown one), and ``POST /predict`` with the default model
(``MLOPS_SPEC``; its name is ``MLOPS_MODEL_NAME`` or the spec's). The request path is kept lean on
purpose: the body is read and validated by hand (no pydantic model per row), the model input is
built column-wise straight from the validated values, concurrent requests of a model are scored
together in one model call (:mod:`.batching`), and the inference log is written by a background
thread (:mod:`.logwriter`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from include.mlops.catalog import load_catalog
from include.mlops.serving.deployment import Deployment, UnknownModel
from include.mlops.serving.service import JSON, RETRY_AFTER_S, ServingService, configure_logging, dumps, internal_error
from include.mlops.settings import Settings, get_settings

if TYPE_CHECKING:
    from include.mlops.domain.spec import Spec


log = logging.getLogger(__name__)


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type=JSON)


def _answer(status: int, body: bytes) -> Response:
    """A /predict answer; a 503 asks the client to come back (``Retry-After``)."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def create_app(settings: Settings | None = None, spec: Spec | None = None) -> PredictFastPath:
    """The uvicorn factory: ``uvicorn include.mlops.serving.app:create_app --factory``.

    Returns the ASGI app: the FastAPI application behind :class:`PredictFastPath`. ``spec``
    overrides the default model's spec (tests); the other models come from ``MLOPS_SPECS``.
    """
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    deployment = Deployment(settings, load_catalog(settings), default_spec=spec)
    service = deployment.default

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await deployment.start()
        try:
            yield
        finally:
            await deployment.stop()

    names = ", ".join(deployment.names)
    app = FastAPI(
        title=f"mlops-loop serving: {names}",
        description="Scores rows with each model's registry champion (and challenger); see docs/serving.md.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.service = service
    app.state.deployment = deployment

    if not settings.serving_admin_token:
        log.warning("MLOPS_SERVING_ADMIN_TOKEN is not set: /admin/* endpoints are disabled (403) until it is")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        """Any unexpected error of the FastAPI routes: a generic 500 with an id; the details go to the log."""
        import uuid

        error_id = uuid.uuid4().hex
        log.error("unhandled error on %s %s (error id %s)", request.method, request.url.path, error_id, exc_info=exc)
        return _json({"detail": f"internal error; the serving log has the details under error id {error_id}", "request_id": error_id}, 500)

    _predict_route(app, settings, service, "/predict", f"Score with the default model ({service.model_name})")
    for model in deployment.services.values():
        _predict_route(app, settings, model, model.route, f"Score with model {model.model_name} ({model.spec.task})")

    @app.post("/models/{name}/predict", summary="Any other model name: 404, naming the models of this deployment")
    async def unknown_model(name: str, request: Request) -> Response:
        denied = api_key_denied(settings, request.headers.get("x-api-key"))
        if denied:  # the model names are for clients with the key
            return Response(denied, status_code=401, media_type=JSON)
        return _json(UnknownModel(name, deployment.names).body(), 404)

    _other_routes(app, settings, deployment)
    return PredictFastPath(app, service, deployment)


def _predict_route(app: FastAPI, settings: Settings, service: ServingService, path: str, summary: str) -> None:
    """A model's predict route in FastAPI (what the OpenAPI docs show; :class:`PredictFastPath` answers first)."""

    async def predict(request: Request) -> Response:
        denied = api_key_denied(settings, request.headers.get("x-api-key"))
        if denied:
            return Response(denied, status_code=401, media_type=JSON)
        status, body = await service.predict(lambda: service.read_body(request))
        return _answer(status, body)

    app.add_api_route(
        path,
        predict,
        methods=["POST"],
        summary=f"{summary}: one row (a JSON object) or many ({{'rows': [...]}})",
        openapi_extra={"requestBody": service.schema.openapi_body()},
        operation_id=f"predict_{'default' if path == '/predict' else service.model_name}",
    )


def _other_routes(app: FastAPI, settings: Settings, deployment: Deployment) -> None:
    @app.get("/health", summary="Process health, every model's versions and memory, the inference-log writer (503 when it is not running)")
    async def health() -> Response:
        report = deployment.health()
        return _json(report, 200 if report["status"] == "ok" else 503)

    @app.get("/metrics", summary="Prometheus metrics (per-model series carry a 'model' label)")
    async def metrics() -> Response:
        return Response(deployment.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/admin/reload", summary="Re-read the registry now (retrying failed loads): ?model=<name> (loads it), else every loaded model"
    )
    async def reload(request: Request, model: str | None = None) -> Response:
        if not settings.serving_admin_token:
            return _json({"detail": ADMIN_DISABLED}, 403)
        if not admin_allowed(settings, request.headers.get("authorization")):
            return Response(
                dumps({"detail": "admin endpoints need 'Authorization: Bearer <MLOPS_SERVING_ADMIN_TOKEN>'"}), 401, media_type=JSON
            )
        try:
            reloaded = await deployment.reload(model)
        except UnknownModel as exc:
            return _json(exc.body(), 404)
        return _json({**deployment.health(), "reloaded": reloaded})


_JSON_HEADERS = [(b"content-type", JSON.encode())]
ADMIN_DISABLED = (
    "admin endpoints are disabled: this serving process has no MLOPS_SERVING_ADMIN_TOKEN "
    "(`make up` generates one; set it and send 'Authorization: Bearer <token>')"
)


def api_key_denied(settings: Settings, given: str | None) -> bytes | None:
    """None when /predict may answer; else the 401 body (the key is compared in constant time)."""
    import hmac

    wanted = settings.serving_api_key
    if not wanted:
        return None
    if given and hmac.compare_digest(given.encode(), wanted.encode()):
        return None
    return dumps({"detail": "missing or wrong API key: send it in the X-API-Key header (MLOPS_SERVING_API_KEY)"})


def admin_allowed(settings: Settings, authorization: str | None) -> bool:
    import hmac

    token = settings.serving_admin_token
    if not token:
        return False  # fail closed: no token, no admin (warned at start); `make up` always configures one
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class PredictFastPath:
    """ASGI entry point: a model's predict route goes straight to its service, everything else to FastAPI.

    The hot path skips FastAPI's router, middleware stack and dependency resolution (about a third
    of the event loop's time per request, measured); the FastAPI routes stay for the OpenAPI docs
    and answer the same way. ``POST /predict`` is the default model's (one string comparison);
    ``POST /models/<name>/predict`` of a model of the deployment takes the same path after a dict
    lookup; an unknown name, lifespan and every other path are FastAPI's.
    """

    def __init__(self, app: FastAPI, service: ServingService, deployment: Deployment | None = None):
        self.app = app
        self.service = service
        self.deployment = deployment
        self.state = app.state
        self._routes: dict[str, ServingService] = {"/predict": service}
        if deployment is not None:
            self._routes.update({s.route: s for s in deployment.services.values()})

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        service = self.service if path == "/predict" else self._routes.get(path)
        if service is None:
            await self.app(scope, receive, send)
            return
        if service.settings.serving_api_key:
            key = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-api-key"), None)
            denied = api_key_denied(service.settings, key)
            if denied:
                headers = [*_JSON_HEADERS, (b"content-length", str(len(denied)).encode())]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": denied})
                return
        try:
            status, body = await service.predict(lambda: service.read_asgi_body(scope, receive))
        except ConnectionAbortedError:
            return
        except Exception:  # never an unanswered request, never internals in it
            error_id = f"failed-{time.time_ns():x}"
            log.exception("unexpected error in %s (request %s)", path, error_id)
            status, body = 500, dumps({"detail": internal_error(error_id), "request_id": error_id})
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
