"""Airflow plugin: the "MLOps loop" status page inside the Airflow UI.

A FastAPI app mounted in Airflow's API server under ``/mlops-loop`` (server-rendered, behind
Airflow's own authentication: the UI session cookie or a bearer token) and a navigation entry
that shows it in the Airflow UI. The pages are built by ``include.mlops.ui``:

* ``/mlops-loop/``: the overview of every model of the deployment (and the spec files left out,
  with why), followed by the default model's page: the navigation entry and every link made when
  the deployment had one model still show what they showed;
* ``/mlops-loop/models/<name>``: one model's page (404 for a model the deployment does not have);
* ``/mlops-loop/api/models``, ``/mlops-loop/api/models/<name>/status``: the same as JSON
  (``/mlops-loop/api/status`` stays the default model's).

Report files (``/files``) are served on Airflow's origin, so they are isolated from it: an HTML
report (Evidently's, which needs its inline scripts) comes with a ``Content-Security-Policy``
``sandbox allow-scripts`` without ``allow-same-origin`` (its scripts run in an opaque origin: no
Airflow cookies, storage or API), no network access (``connect-src 'none'``) and nothing loaded
from elsewhere; a JSON summary with ``sandbox`` and ``default-src 'none'``; any other file as a
download. Every response carries ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

from typing import Annotated, Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

PREFIX = "/mlops-loop"

#: An HTML report: its own inline scripts and styles run, sandboxed into an opaque origin.
REPORT_CSP = (
    "sandbox allow-scripts allow-popups allow-downloads; "
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
)
#: Any other file: nothing runs, nothing loads.
FILE_CSP = "sandbox; default-src 'none'; frame-ancestors 'self'"

app = FastAPI(title="MLOps loop status", docs_url=None, redoc_url=None, openapi_url=None)


async def _user(request: Request) -> Any:
    """Airflow's authentication, resolved lazily (the API server's own dependency)."""
    from airflow.api_fastapi.core_api.security import get_user

    auth = request.headers.get("authorization", "")
    bearer = None
    if auth.lower().startswith("bearer "):
        from fastapi.security import HTTPAuthorizationCredentials

        bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=auth.split(" ", 1)[1])
    return await get_user(request, None, bearer)


async def _authenticated(request: Request) -> Any:
    try:
        return await _user(request)
    except HTTPException:
        raise
    except Exception as exc:  # never let an auth-layer surprise through as a page
        raise HTTPException(status_code=401, detail=f"not authenticated ({type(exc).__name__})") from exc


def _login_redirect(request: Request) -> Response:
    from airflow.api_fastapi.app import get_auth_manager

    target = str(request.url.path)
    return RedirectResponse(get_auth_manager().get_url_login(next_url=target), status_code=303)


@app.exception_handler(HTTPException)
async def _unauthorized(request: Request, exc: HTTPException) -> Response:
    browser = "text/html" in request.headers.get("accept", "")
    if exc.status_code in (401, 403) and browser:
        return _login_redirect(request)
    if exc.status_code == 404 and browser:
        from include.mlops.ui.status_page import not_found

        return HTMLResponse(not_found(str(exc.detail)), status_code=404)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


User = Annotated[Any, Depends(_authenticated)]


def _runtime(model: str | None = None) -> Any:
    """The runtime of ``model`` (``None``: the deployment's default model)."""
    from include.mlops.runtime import load_runtime

    return load_runtime(model=model)


def _model_runtime(name: str) -> Any:
    """The runtime of the deployment's model ``name``; 404 when there is no such model."""
    from include.mlops.ui.overview import find_model

    if find_model(name) is None:
        raise HTTPException(status_code=404, detail=f"no model {name!r} in this deployment")
    return _runtime(name)


@app.get("/", response_class=HTMLResponse)
async def page(user: User) -> HTMLResponse:
    from starlette.concurrency import run_in_threadpool

    from include.mlops.ui.overview import gather_overview, render_home
    from include.mlops.ui.status_page import gather

    status = await run_in_threadpool(lambda: gather(_runtime()))
    overview = await run_in_threadpool(lambda: gather_overview(health=False))
    overview.serving = status.serving  # one /health call per view
    return HTMLResponse(render_home(overview, status))


@app.get("/models/{name}", response_class=HTMLResponse)
async def model_page(name: str, user: User) -> HTMLResponse:
    from starlette.concurrency import run_in_threadpool

    from include.mlops.ui.status_page import gather, render

    status = await run_in_threadpool(lambda: gather(_model_runtime(name)))
    return HTMLResponse(render(status))


@app.get("/api/status")
async def status_json(user: User) -> JSONResponse:
    from starlette.concurrency import run_in_threadpool

    from include.mlops.ui.status_page import as_json, gather

    status = await run_in_threadpool(lambda: gather(_runtime()))
    return JSONResponse(as_json(status))


@app.get("/api/models")
async def overview_json(user: User) -> JSONResponse:
    from starlette.concurrency import run_in_threadpool

    from include.mlops.ui.overview import gather_overview
    from include.mlops.ui.overview import overview_json as as_json

    overview = await run_in_threadpool(gather_overview)
    return JSONResponse(as_json(overview))


@app.get("/api/models/{name}/status")
async def model_status_json(name: str, user: User) -> JSONResponse:
    from starlette.concurrency import run_in_threadpool

    from include.mlops.ui.status_page import as_json, gather

    status = await run_in_threadpool(lambda: gather(_model_runtime(name)))
    return JSONResponse(as_json(status))


@app.get("/files")
async def report_file(path: str, user: User) -> FileResponse:
    from include.mlops.ui.status_page import safe_report_path

    found = safe_report_path(_runtime(), path)
    if found is None:
        raise HTTPException(status_code=404, detail="no such report under the lake's reports folder")
    headers = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
    if found.suffix == ".html":
        return FileResponse(found, media_type="text/html", headers={**headers, "Content-Security-Policy": REPORT_CSP})
    headers["Content-Security-Policy"] = FILE_CSP
    if found.suffix == ".json":
        return FileResponse(found, media_type="application/json", headers=headers)
    return FileResponse(found, media_type="application/octet-stream", headers=headers, filename=found.name)  # a download


class MLOpsLoopPlugin(AirflowPlugin):
    name = "mlops_loop"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "MLOps loop status"}]
    external_views = [
        {
            "name": "MLOps loop",
            "href": f"{PREFIX}/",
            "destination": "nav",
            "url_route": "mlops-loop",
        }
    ]
