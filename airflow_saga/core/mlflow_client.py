"""MLflow clients with per-connection settings and a bounded wait for every call.

Why: MLflow's client reads retries, timeouts and credentials from process-wide environment variables and
caches one REST store per URI, and its defaults retry a dead server for minutes (a hung one for 120 s per
attempt). An Airflow worker or triggerer runs tasks of many connections at once, so neither mutating
``os.environ`` nor a per-host table is correct: two connections to one server with different credentials
would mix. Here:

- each client gets REST stores of its own whose host-credentials provider carries *its* settings
  (credentials, retries, timeouts); nothing is shared between clients;
- every public client method runs in a **call scope** with one deadline (``call_timeout``). Each HTTP
  request of the call, including artifact transfers in MLflow's thread pools, gets the remaining time as
  its timeout, retries stop at the deadline, and an answer from the server (or bytes of a download) starts
  the deadline afresh, so long transfers work while bytes flow and a hung server fails the call;
- a call that runs out of time or retries raises :class:`MlflowUnreachableError` naming the server
  (credentials redacted), the request and what happened.

Code that calls MLflow's module-level functions (``mlflow.artifacts.download_artifacts``) does it inside
``with bounded(settings):`` or through :func:`download_artifacts`; requests outside any scope, from other
code in the process, pass through untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from airflow_saga.core.errors import MlflowConfigError, MlflowUnreachableError
from airflow_saga.core.redaction import redact, register_secret, split_userinfo

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mlflow import MlflowClient

DEFAULT_CALL_TIMEOUT = 20.0
#: MLflow's own list of statuses worth retrying (429 and the 5xx a proxy or a busy server answers).
RETRY_CODES = frozenset({408, 429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class MlflowSettings:
    """How to reach one MLflow server, as one Airflow connection (or the CLI's environment) says.

    ``call_timeout`` is the longest any one saga call waits for MLflow, retries included (a fresh period
    starts whenever the server answers). ``connect_timeout`` bounds each connection attempt;
    ``read_timeout`` optionally caps each wait for an answer below the remaining time. Credentials given
    in a URI (``http://user:pass@host``) are moved into ``username``/``password``.
    """

    tracking_uri: str
    registry_uri: str | None = None
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)
    max_retries: int = 3
    backoff_factor: float = 0.5
    connect_timeout: float = 5.0
    read_timeout: float | None = None
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    ui_url: str | None = None  # where humans browse MLflow; defaults to tracking_uri when it is http(s)

    def __post_init__(self) -> None:
        if not self.tracking_uri or not isinstance(self.tracking_uri, str):
            raise MlflowConfigError(f"tracking_uri must be a non-empty URI, got {self.tracking_uri!r}")
        uri, user, password = split_userinfo(self.tracking_uri)
        object.__setattr__(self, "tracking_uri", uri.rstrip("/") if uri.startswith("http") else uri)
        if self.username is None and user:
            object.__setattr__(self, "username", user)
        if self.password is None and password:
            object.__setattr__(self, "password", password)
        if self.registry_uri:
            object.__setattr__(self, "registry_uri", split_userinfo(self.registry_uri)[0])
        for key in ("call_timeout", "connect_timeout", "read_timeout", "backoff_factor", "max_retries"):
            value = getattr(self, key)
            if value is None and key == "read_timeout":
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            if not ok or (value == 0 and key in ("call_timeout", "connect_timeout", "read_timeout")):
                raise MlflowConfigError(f"MLflow setting {key} must be a positive number, got {value!r}")
        if int(self.max_retries) != self.max_retries:
            raise MlflowConfigError(
                f"MLflow setting max_retries must be a whole number, got {self.max_retries!r}"
            )
        register_secret(self.password)
        register_secret(self.token)

    @property
    def is_http(self) -> bool:
        return urlparse(self.tracking_uri).scheme in ("http", "https")

    @property
    def browser_url(self) -> str | None:
        if self.ui_url:
            return self.ui_url.rstrip("/")
        return self.tracking_uri.rstrip("/") if self.is_http else None

    @property
    def hosts(self) -> frozenset[str]:
        """``scheme://host:port`` of every HTTP server these settings talk to (tracking and registry)."""
        return frozenset(
            _host_key(u)
            for u in (self.tracking_uri, self.registry_uri)
            if u and u.startswith(("http:", "https:"))
        )

    def credentials(self) -> dict[str, Any]:
        """The host-creds fields these settings override (nothing when they carry no credentials)."""
        if self.token:
            return {"token": self.token, "username": None, "password": None}
        if self.username:
            return {"username": self.username, "password": self.password, "token": None}
        return {}


def _host_key(url: str) -> str:
    p = urlparse(url)
    return f"{p.scheme}://{p.netloc.rpartition('@')[2]}".lower()


# ---------------------------------------------------------------------------------------------- call scopes
@dataclasses.dataclass(eq=False)
class _Scope:
    settings: MlflowSettings
    budget: float
    deadline: float
    started: float
    failure: MlflowUnreachableError | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def renew(self) -> None:
        """The server answered (or sent bytes): a fresh period starts."""
        self.deadline = max(self.deadline, time.monotonic() + self.budget)


_scopes: contextvars.ContextVar[tuple[_Scope, ...]] = contextvars.ContextVar("saga_mlflow_scopes", default=())


@contextlib.contextmanager
def bounded(target: MlflowSettings | MlflowClient, budget: float | None = None) -> Iterator[None]:
    """Run the block as one call against ``target``'s server: one deadline, failures as our error.

    Nested use for the same settings shares the outer deadline; ``budget`` (seconds) starts a shorter one,
    e.g. for best-effort clean-up after a failure. Any exception the block raises after one of its requests
    gave up (MLflow may wrap it, e.g. in a download of several files) surfaces as
    :class:`MlflowUnreachableError`.
    """
    settings = target if isinstance(target, MlflowSettings) else settings_of(target)
    stack = _scopes.get()
    if budget is None and stack and stack[-1].settings == settings:
        yield
        return
    _install()
    seconds = settings.call_timeout if budget is None else max(0.05, min(budget, settings.call_timeout))
    now = time.monotonic()
    scope = _Scope(settings, seconds, now + seconds, now)
    token = _scopes.set((*stack, scope))
    try:
        yield
    except MlflowUnreachableError:
        raise
    except Exception as exc:
        if scope.failure is not None:
            raise MlflowUnreachableError(str(scope.failure)) from exc
        raise
    finally:
        _scopes.reset(token)


def _scope_for(host_creds: Any) -> tuple[_Scope | None, MlflowSettings | None]:
    from airflow_saga.core.compat import payload_of

    settings = payload_of(host_creds)
    stack = _scopes.get()
    if settings is not None:
        return next((s for s in reversed(stack) if s.settings == settings), None), settings
    host = _host_key(getattr(host_creds, "host", "") or "")
    for scope in reversed(stack):
        if host in scope.settings.hosts:
            return scope, scope.settings
    return None, None


def _fail(scope: _Scope, message: str) -> MlflowUnreachableError:
    err = MlflowUnreachableError(redact(message))
    if scope.failure is None:
        scope.failure = err
    return err


def _transport_error(exc: BaseException) -> BaseException | None:
    """The ``requests`` transport error behind ``exc`` (MLflow wraps them in ``MlflowException``)."""
    import requests

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
            return None
        if isinstance(cur, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return cur
        if isinstance(cur, requests.exceptions.RetryError | requests.exceptions.ChunkedEncodingError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _is_read_timeout(exc: BaseException) -> bool:
    """requests reports a read timeout under ``Retry(total=0)`` as a ``ConnectionError`` wrapping urllib3's
    ``MaxRetryError(ReadTimeoutError)``; either way the request reached a server that did not answer."""
    import requests
    from urllib3.exceptions import MaxRetryError, ReadTimeoutError

    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, ReadTimeoutError):
            return True
        if isinstance(arg, MaxRetryError) and isinstance(arg.reason, ReadTimeoutError):
            return True
    return False


def _short(exc: BaseException) -> str:
    text = str(exc)
    for marker in (
        "Connection refused",
        "Read timed out",
        "timed out",
        "Connection reset",
        "RemoteDisconnected",
    ):
        if marker in text:
            return f"{type(exc).__name__} ({marker})"
    return f"{type(exc).__name__}: {text[:200]}"


def _timeout(settings: MlflowSettings, remaining: float, caller: Any) -> tuple[float, float]:
    connect = min(settings.connect_timeout, remaining)
    read = min(settings.read_timeout or remaining, remaining)
    if isinstance(caller, int | float):
        connect, read = min(connect, caller), min(read, caller)
    elif isinstance(caller, tuple) and len(caller) == 2:
        connect = min(connect, caller[0] or connect)
        read = min(read, caller[1] or read)
    return max(connect, 0.05), max(read, 0.05)


def _attempts(
    scope: _Scope,
    *,
    what: str,
    host: str,
    send: Callable[[tuple[float, float]], Any],
    retry_codes: frozenset[int] | Any = RETRY_CODES,
    max_retries: int | None = None,
    caller_timeout: Any = None,
    raise_on_status: bool = True,
    stream: bool = False,
) -> Any:
    """Send with the scope's remaining time as timeout; retry transport errors and retryable statuses with
    backoff while time and retries remain. A read timeout is not retried: the request reached a server that
    did not answer within the time left, and a retry of a create could duplicate it."""
    settings = scope.settings
    retries = settings.max_retries if max_retries is None else min(int(max_retries), settings.max_retries)
    codes = frozenset(retry_codes or ())
    attempt, last = 0, "no attempt made"
    while True:
        remaining = scope.remaining()
        if remaining <= 0.05:
            break
        started = time.monotonic()
        try:
            resp = send(_timeout(settings, remaining, caller_timeout))
        except MlflowUnreachableError:
            raise
        except Exception as exc:
            cause = _transport_error(exc)
            if cause is None:
                raise
            last = _short(cause)
            if _is_read_timeout(cause):
                last = f"no answer (read timeout after {time.monotonic() - started:.1f} s)"
                break
        else:
            if resp.status_code not in codes:
                scope.renew()
                scope.failure = None  # the server answers: an earlier give-up (swallowed by MLflow) is moot
                if stream:
                    _watch_stream(resp, scope, what, host)
                return resp
            last = f"HTTP {resp.status_code}: {resp.text[:300]!r}"
            if attempt >= retries or scope.remaining() <= 0.05:
                if not raise_on_status:
                    return resp
                break
            resp.close()
        if attempt >= retries:
            break
        delay = settings.backoff_factor * (2**attempt)
        if scope.remaining() <= delay + 0.05:
            break
        time.sleep(delay)
        attempt += 1
    waited = time.monotonic() - scope.started
    raise _fail(
        scope,
        f"MLflow at {host} is unreachable: {what} failed after {waited:.1f} s and {attempt + 1} attempt(s), "
        f"last: {last} (call_timeout {settings.call_timeout:g} s, max_retries {settings.max_retries})",
    )


def _watch_stream(resp: Any, scope: _Scope, what: str, host: str) -> None:
    """Bytes of a streamed download renew the deadline; a stall or a reset mid-body is our error."""
    import requests

    original = resp.iter_content

    def iter_content(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            for chunk in original(*args, **kwargs):
                scope.renew()
                yield chunk
        except requests.exceptions.RequestException as exc:
            raise _fail(
                scope, f"MLflow at {host} stopped sending {what} mid-download: {_short(exc)}"
            ) from exc

    resp.iter_content = iter_content


def _bind(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = signature.bind(*args, **kwargs)
    call = dict(bound.arguments)
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            call.update(call.pop(name, {}))
    return call


def _wrap_http_request(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def http_request(*args: Any, **kwargs: Any) -> Any:
        call = _bind(signature, args, kwargs)
        host_creds = call["host_creds"]
        scope, settings = _scope_for(host_creds)
        if settings is None or getattr(host_creds, "use_databricks_sdk", False):
            return original(*args, **kwargs)
        if scope is None:  # a store of ours used outside a client method: a scope for this request alone
            with bounded(settings):
                return http_request(*args, **kwargs)
        from airflow_saga.core.compat import payload_of

        if payload_of(host_creds) is None and settings.credentials():
            from airflow_saga.core.compat import host_creds_carrying

            host_creds = host_creds_carrying(settings, host_creds.host, **settings.credentials())
        caller_retries = call.pop("max_retries", None)
        caller_timeout = call.pop("timeout", None)
        raise_on_status = call.pop("raise_on_status", True)
        retry_codes = call.get("retry_codes") or RETRY_CODES
        call.update(host_creds=host_creds, max_retries=0, backoff_factor=0, raise_on_status=False)

        def send(timeout: tuple[float, float]) -> Any:
            return original(**call, timeout=timeout)

        return _attempts(
            scope,
            what=f"{call['method']} {call['endpoint']}",
            host=_host_key(host_creds.host),
            send=send,
            retry_codes=retry_codes,
            max_retries=caller_retries,
            caller_timeout=caller_timeout,
            raise_on_status=raise_on_status,
            stream=bool(call.get("stream")),
        )

    return http_request


def _wrap_cloud_request(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def cloud_storage_http_request(*args: Any, **kwargs: Any) -> Any:
        stack = _scopes.get()
        if not stack:
            return original(*args, **kwargs)
        scope = stack[-1]
        call = _bind(signature, args, kwargs)
        caller_retries = call.pop("max_retries", None)
        caller_timeout = call.pop("timeout", None)
        retry_codes = call.get("retry_codes") or RETRY_CODES
        call.update(max_retries=0, backoff_factor=0, backoff_jitter=0, raise_on_status=False)
        url = urlparse(str(call["url"]))

        def send(timeout: tuple[float, float]) -> Any:
            return original(**call, timeout=timeout)

        return _attempts(
            scope,
            what=f"{str(call['method']).upper()} {url.path}",  # never the query: presigned URLs carry secrets
            host=f"{url.scheme}://{url.netloc.rpartition('@')[2]}",
            send=send,
            retry_codes=retry_codes,
            max_retries=caller_retries,
            caller_timeout=caller_timeout,
            stream=bool(call.get("stream")),
        )

    return cloud_storage_http_request


_install_lock = threading.Lock()
_installed = False


def _install() -> None:
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        from airflow_saga.core import compat

        compat.install_http_request_wrapper(_wrap_http_request)
        compat.install_cloud_request_wrapper(_wrap_cloud_request)
        compat.install_context_propagating_artifact_pools()
        compat.install_bounded_multipart_upload_part()
        _installed = True


# ---------------------------------------------------------------------------------------------- clients
_client_class: type | None = None


def _scoped(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        with bounded(self.saga_settings):
            return fn(self, *args, **kwargs)

    return method


def _bounded_client_class() -> type:
    """``MlflowClient`` whose every public method is one bounded call (built once, on first use)."""
    global _client_class
    if _client_class is None:
        from mlflow import MlflowClient

        methods = {
            name: _scoped(member)
            for name, member in vars(MlflowClient).items()
            if not name.startswith("_") and inspect.isfunction(member)
        }
        _client_class = type(
            "BoundedMlflowClient",
            (MlflowClient,),
            {
                **methods,
                "__doc__": "An MlflowClient bound to one connection's settings.",
                "saga_settings": None,
            },
        )
    return _client_class


def build_client(settings: MlflowSettings, *, check: bool = True) -> MlflowClient:
    """An ``MlflowClient`` bound to ``settings`` (own stores, bounded calls), without touching ``os.environ``.

    ``check`` first asks the server's ``/health`` so a wrong or dead URI fails now, naming it.
    """
    if check:  # first, and without MLflow: a dead server is reported before its multi-second import
        ping(settings)
    _install()
    client = _bounded_client_class()(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    client.saga_settings = settings
    if settings.is_http:
        from airflow_saga.core.compat import bind_rest_stores, host_creds_carrying

        creds = settings.credentials()
        registry = settings.registry_uri or settings.tracking_uri
        bind_rest_stores(
            client,
            lambda: host_creds_carrying(settings, settings.tracking_uri, **creds),
            (lambda: host_creds_carrying(settings, registry, **creds))
            if registry.startswith(("http:", "https:"))
            else None,
        )
    return client


def settings_of(client: Any) -> MlflowSettings:
    """The settings a client of :func:`build_client` carries (defaults for any other ``MlflowClient``)."""
    settings = getattr(client, "saga_settings", None)
    if isinstance(settings, MlflowSettings):
        return settings
    return MlflowSettings(tracking_uri=client.tracking_uri)


def ping(settings: MlflowSettings) -> None:
    """Fail fast, naming the URI, when an HTTP tracking server does not answer ``/health``.

    A live server answers its health check at once, so this waits at most ``health_timeout`` (twice the
    connect timeout, within the call timeout), and needs only ``requests``: a dead or hung server is
    reported before MLflow itself is even imported (seconds, in a fresh CLI process).
    """
    if not settings.is_http:
        return
    import requests

    now = time.monotonic()
    budget = min(settings.call_timeout, 2 * settings.connect_timeout)
    scope = _Scope(settings, budget, now + budget, now)
    url = settings.tracking_uri.rstrip("/") + "/health"
    resp = _attempts(
        scope,
        what="GET /health",
        host=_host_key(url),
        send=lambda timeout: requests.get(url, timeout=timeout),
    )
    if resp.status_code >= 400:
        raise MlflowUnreachableError(
            redact(f"MLflow server at {settings.tracking_uri} answered /health with HTTP {resp.status_code}")
        )


def download_artifacts(settings: MlflowSettings, artifact_uri: str, dst_path: str) -> str:
    """``mlflow.artifacts.download_artifacts`` against ``settings``' server, as one bounded call."""
    import mlflow.artifacts

    with bounded(settings):
        return mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri,
            dst_path=str(dst_path),
            tracking_uri=settings.tracking_uri,
            registry_uri=settings.registry_uri or settings.tracking_uri,
        )


def _env_number(name: str, cast: Callable[[str], Any]) -> Any:
    import os

    raw = os.environ.get(name)
    if raw in (None, ""):
        return None
    try:
        return cast(raw)
    except ValueError:
        raise MlflowConfigError(f"{name} must be a number, got {raw!r}") from None


def settings_from_env(tracking_uri: str | None = None) -> MlflowSettings:
    """Settings for CLI and gateway use: the explicit URI, else ``MLFLOW_TRACKING_URI``; credentials from
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``; bounds from ``SAGA_MLFLOW_CALL_TIMEOUT`` and
    ``SAGA_MLFLOW_MAX_RETRIES``."""
    import os

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise MlflowConfigError("No MLflow tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    bounds = {
        k: v
        for k, v in (
            ("call_timeout", _env_number("SAGA_MLFLOW_CALL_TIMEOUT", float)),
            ("max_retries", _env_number("SAGA_MLFLOW_MAX_RETRIES", int)),
        )
        if v is not None
    }
    return MlflowSettings(
        tracking_uri=uri,
        registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or None,
        username=os.environ.get("MLFLOW_TRACKING_USERNAME") or None,
        password=os.environ.get("MLFLOW_TRACKING_PASSWORD") or None,
        token=os.environ.get("MLFLOW_TRACKING_TOKEN") or None,
        **bounds,
    )
