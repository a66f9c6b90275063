"""The Models view's FastAPI app, mounted by the saga plugin on Airflow's API server under ``/saga``.

Thin on purpose: each route authorizes, reads one ``core.model_story`` dict and renders it (HTML) or returns
it (JSON). Plugin apps are not protected by Airflow by default, so every route depends on ``reader``:
Airflow's own ``get_user`` (the JWT from the ``Authorization: Bearer`` header, else the UI's ``_token``
cookie) and then the configured auth manager's ``is_authorized_dag(GET)``, the permission to read DAGs.
Anonymous requests get 401, a bad token 403, a user without DAG read access 403.

MLflow is reached through the Airflow connection ``mlflow_default`` (``[saga] models_view_conn_id`` or
``SAGA_MODELS_VIEW_CONN_ID`` to change it), with the hook's bounded HTTP settings; an unreachable server is
a 503 naming it, never a hang or a 500. Unknown models and versions are 404; input the registry cannot
express (quotes, slashes, non-numeric versions) is 400.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow.api_fastapi.core_api.security import GetUserDep  # noqa: TC002 (FastAPI resolves it at runtime)
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from airflow_saga.core import model_story
from airflow_saga.core.errors import MlflowUnreachableError, ParameterError, RegistryError
from airflow_saga.ui import pages

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from mlflow import MlflowClient

    from airflow_saga.core.mlflow_client import MlflowSettings

DEFAULT_CONN_ID = "mlflow_default"
CLIENT_TTL = 60.0
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST",)
BAD_INPUT_CODES = ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")


# --- authorization ----------------------------------------------------------------------------------


def reader(user: GetUserDep) -> BaseUser:
    """Only users the auth manager lets read DAGs see the registry (SimpleAuthManager: viewer and up)."""
    from airflow.api_fastapi.app import get_auth_manager

    if not get_auth_manager().is_authorized_dag(method="GET", user=user):
        raise HTTPException(status_code=403, detail="Forbidden: reading models needs permission to read DAGs")
    return user


# --- MLflow through the Airflow connection ----------------------------------------------------------


def conn_id() -> str:
    env = os.environ.get("SAGA_MODELS_VIEW_CONN_ID")
    if env:
        return env
    try:
        from airflow.configuration import conf

        return conf.get("saga", "models_view_conn_id", fallback=DEFAULT_CONN_ID) or DEFAULT_CONN_ID
    except Exception:  # no Airflow configuration (a plain uvicorn run in tests)
        return DEFAULT_CONN_ID


class _Clients:
    """One bounded MLflow client per connection id, rebuilt every ``CLIENT_TTL`` s to follow edits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, MlflowSettings, MlflowClient]] = {}

    def get(self, cid: str) -> tuple[MlflowSettings, MlflowClient]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(cid)
            if hit and now - hit[0] < CLIENT_TTL:
                return hit[1], hit[2]
        settings = settings_for(cid)
        from airflow_saga.core.mlflow_client import build_client

        client = build_client(settings, check=hit is None or hit[1] != settings)
        with self._lock:
            self._cache[cid] = (now, settings, client)
        return settings, client

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


clients = _Clients()


def settings_for(cid: str) -> MlflowSettings:
    """The connection's MLflow settings as the API server sees it (environment, secrets, metadata DB)."""
    from airflow.models.connection import Connection

    from airflow_saga.hooks.mlflow import settings_from_connection

    try:
        conn = Connection.get_connection_from_secrets(cid)
    except Exception as exc:
        raise MlflowUnreachableError(
            f"The Airflow connection {cid!r} to MLflow is not defined or not readable: {exc}"
        ) from exc
    try:
        return settings_from_connection(conn)
    except ValueError as exc:
        raise MlflowUnreachableError(str(exc)) from exc


def mlflow() -> tuple[MlflowSettings, MlflowClient]:
    return clients.get(conn_id())


# --- errors -----------------------------------------------------------------------------------------


def _status_for(exc: Exception) -> tuple[int, str]:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowUnreachableError):
        return 503, str(exc)
    if isinstance(exc, ParameterError):  # e.g. a malformed ?at= time
        return 400, str(exc)
    if isinstance(exc, RegistryError):
        cause = exc.__cause__
        code = getattr(cause, "error_code", None)
        return (404 if code in (*NOT_FOUND_CODES, *BAD_INPUT_CODES) else 400), str(exc)
    if isinstance(exc, MlflowException):
        code = getattr(exc, "error_code", None)
        if code in NOT_FOUND_CODES:
            return 404, exc.message
        if code in BAD_INPUT_CODES:
            return 400, exc.message
        text = str(exc)
        if "Max retries exceeded" in text or "Connection refused" in text or "timed out" in text:
            return 503, f"MLflow is unreachable: {text[:500]}"
        return 502, f"MLflow answered with an error: {text[:500]}"
    raise exc


class ViewError(Exception):
    def __init__(self, status: int, message: str, *, html: bool) -> None:
        super().__init__(message)
        self.status, self.message, self.html = status, message, html


@contextlib.contextmanager
def _guard(*, html: bool) -> Iterator[None]:
    """Map the failure families we expect to HTTP answers; anything else is a bug and stays a 500."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (RegistryError, ParameterError, MlflowUnreachableError, MlflowException) as exc:
        status, message = _status_for(exc)
        raise ViewError(status, message, html=html) from exc


# --- routes -----------------------------------------------------------------------------------------


def _base(request: Request) -> str:
    return str(request.scope.get("root_path") or "").rstrip("/")


def _html_router() -> APIRouter:
    r = APIRouter(dependencies=[Depends(reader)])

    @r.get("/models/", response_class=HTMLResponse)
    def models(request: Request) -> HTMLResponse:
        with _guard(html=True):
            settings, client = mlflow()
            found = model_story.list_models(client)
        return HTMLResponse(pages.models_page(found, base=_base(request), mlflow_uri=settings.tracking_uri))

    @r.get("/models/{name}", response_class=HTMLResponse)
    def model(
        request: Request,
        name: str,
        hpage: int = Query(1, ge=1, le=1_000_000),
        before: int | None = Query(None, ge=1, le=10**12),
        at: str | None = Query(None),
    ) -> HTMLResponse:
        with _guard(html=True):
            settings, client = mlflow()
            story = model_story.model_story(client, name, ui_base=settings.browser_url, before=before, at=at)
        return HTMLResponse(pages.model_page(story, base=_base(request), history_page=hpage))

    @r.get("/models/{name}/versions/{version}", response_class=HTMLResponse)
    def version(request: Request, name: str, version: str) -> HTMLResponse:
        with _guard(html=True):
            settings, client = mlflow()
            story = model_story.version_story(client, name, version, ui_base=settings.browser_url)
        return HTMLResponse(pages.version_page(story, base=_base(request)))

    return r


def _api_router() -> APIRouter:
    r = APIRouter(prefix="/api", dependencies=[Depends(reader)])

    @r.get("/models")
    def models() -> dict[str, Any]:
        with _guard(html=False):
            _, client = mlflow()
            return {"models": model_story.list_models(client)}

    @r.get("/models/{name}")
    def model(
        name: str,
        before: int | None = Query(None, ge=1, le=10**12),
        limit: int = Query(model_story.HISTORY_VIEW, ge=1, le=10_000),
        at: str | None = Query(None),
    ) -> dict[str, Any]:
        with _guard(html=False):
            settings, client = mlflow()
            return model_story.model_story(
                client, name, ui_base=settings.browser_url, history_limit=limit, before=before, at=at
            )

    @r.get("/models/{name}/versions/{version}")
    def version(name: str, version: str) -> dict[str, Any]:
        with _guard(html=False):
            settings, client = mlflow()
            return model_story.version_story(client, name, version, ui_base=settings.browser_url)

    return r


def create_app() -> FastAPI:
    app = FastAPI(
        title="airflow-saga Models view",
        description="Registered models, approvals, alias history, gate, shadow and drift results.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(_html_router())
    app.include_router(_api_router())

    @app.exception_handler(ViewError)
    async def view_error(request: Request, exc: ViewError):
        if exc.html:
            title = {404: "Not found", 400: "Bad request", 503: "MLflow unreachable"}.get(exc.status, "Error")
            body = pages.error_page(title, exc.message, base=_base(request))
            return HTMLResponse(body, status_code=exc.status)
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/", include_in_schema=False, dependencies=[Depends(reader)])
    def root(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{_base(request)}/models/", status_code=307)

    return app
