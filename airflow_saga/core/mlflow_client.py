"""Build an ``MlflowClient`` with bounded HTTP behaviour and per-server credentials.

MLflow's client reads retries, timeouts and credentials from process-wide environment variables, and its
defaults retry an unreachable server for minutes. Airflow workers run many tasks against possibly different
servers, so mutating ``os.environ`` is neither safe nor correct. Instead we register per-server settings in
this module and install a thin wrapper around MLflow's ``http_request`` that fills in bounded retries,
(connect, read) timeouts and credentials for requests to a registered host. Requests to other hosts, and
explicit arguments from MLflow's own callers, are left untouched.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from airflow_saga.core.errors import MlflowUnreachableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlflow import MlflowClient


@dataclasses.dataclass(frozen=True)
class MlflowSettings:
    """How to reach one MLflow server.

    ``connect_timeout`` bounds how long an unreachable host can stall a call; ``read_timeout`` stays generous
    because artifact uploads legitimately take time once connected.
    """

    tracking_uri: str
    registry_uri: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    max_retries: int = 2
    backoff_factor: float = 0.5
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    ui_url: str | None = None  # where humans browse MLflow; defaults to tracking_uri when it is http(s)

    @property
    def is_http(self) -> bool:
        return urlparse(self.tracking_uri).scheme in ("http", "https")

    @property
    def browser_url(self) -> str | None:
        if self.ui_url:
            return self.ui_url.rstrip("/")
        return self.tracking_uri.rstrip("/") if self.is_http else None


_lock = threading.Lock()
_by_host: dict[str, MlflowSettings] = {}
_installed = False


def _host_key(url: str) -> str:
    p = urlparse(url)
    return f"{p.scheme}://{p.netloc}".lower()


def _wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    def http_request(host_creds: Any, endpoint: str, method: str, *args: Any, **kwargs: Any) -> Any:
        settings = _by_host.get(_host_key(getattr(host_creds, "host", "") or ""))
        if settings is not None:
            if kwargs.get("max_retries") is None:
                kwargs["max_retries"] = settings.max_retries
            if kwargs.get("backoff_factor") is None:
                kwargs["backoff_factor"] = settings.backoff_factor
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = (settings.connect_timeout, settings.read_timeout)
            if not (host_creds.username or host_creds.token) and (settings.username or settings.token):
                host_creds = _with_credentials(host_creds, settings)
        return original(host_creds, endpoint, method, *args, **kwargs)

    return http_request


def _with_credentials(host_creds: Any, settings: MlflowSettings) -> Any:
    from airflow_saga.core.compat import mlflow_host_creds

    return mlflow_host_creds(
        host=host_creds.host,
        username=settings.username,
        password=settings.password,
        token=settings.token,
        ignore_tls_verification=getattr(host_creds, "ignore_tls_verification", False),
        client_cert_path=getattr(host_creds, "client_cert_path", None),
        server_cert_path=getattr(host_creds, "server_cert_path", None),
    )


def _install() -> None:
    global _installed
    if _installed:
        return
    from airflow_saga.core.compat import install_http_request_wrapper

    install_http_request_wrapper(_wrap)
    _installed = True


def register(settings: MlflowSettings) -> None:
    """Apply ``settings`` to every HTTP request this process makes to that server."""
    with _lock:
        _install()
        for uri in (settings.tracking_uri, settings.registry_uri):
            if uri and urlparse(uri).scheme in ("http", "https"):
                _by_host[_host_key(uri)] = settings


def ping(settings: MlflowSettings) -> None:
    """Fail fast, naming the URI, when an HTTP tracking server does not answer its health check."""
    if not settings.is_http:
        return
    import requests

    url = settings.tracking_uri.rstrip("/") + "/health"
    try:
        resp = requests.get(url, timeout=(settings.connect_timeout, settings.connect_timeout * 2))
    except requests.RequestException as exc:
        raise MlflowUnreachableError(
            f"MLflow server at {settings.tracking_uri} is unreachable: {type(exc).__name__}: {exc}"
        ) from exc
    if resp.status_code >= 500:
        raise MlflowUnreachableError(
            f"MLflow server at {settings.tracking_uri} answered /health with HTTP {resp.status_code}"
        )


def build_client(settings: MlflowSettings, *, check: bool = True) -> MlflowClient:
    """Return an ``MlflowClient`` bound to ``settings`` without touching ``os.environ``."""
    from mlflow import MlflowClient

    register(settings)
    if check:
        ping(settings)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def settings_from_env(tracking_uri: str | None = None) -> MlflowSettings:
    """Settings for CLI and gateway use: the explicit URI, else ``MLFLOW_TRACKING_URI``."""
    import os

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise MlflowUnreachableError("No MLflow tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    return MlflowSettings(
        tracking_uri=uri,
        registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or None,
        username=os.environ.get("MLFLOW_TRACKING_USERNAME") or None,
        password=os.environ.get("MLFLOW_TRACKING_PASSWORD") or None,
        token=os.environ.get("MLFLOW_TRACKING_TOKEN") or None,
    )
