"""Every use of a library's private internals, fenced in one place.

Why: MLflow and Evidently move their internals between minor releases. Code that reaches into them from
all over the package breaks in ways that show up as a foreign ``AttributeError`` in a user's task log. Here
each such reach is one small function with a docstring naming what it relies on, and
``tests/unit/test_compat.py`` checks every one of them against the installed versions, so an upgrade that
moves something fails that test loudly, naming the piece, instead of failing in production.

Rules for the rest of the package: never import a ``_private`` name or ``evidently.legacy`` outside this
module, and never read a ``_private`` attribute of a library object outside it.
"""

from __future__ import annotations

import contextvars
import importlib
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

# ------------------------------------------------------------------------------------------------- MLflow
#: Modules that bind MLflow's ``http_request`` by name (``from ... import http_request``); a wrapper must be
#: installed in each of them to see every request. Checked against the installed MLflow in the compat test.
MLFLOW_HTTP_REQUEST_MODULES: tuple[str, ...] = (
    "mlflow.utils.rest_utils",
    "mlflow.store.tracking.rest_store",
    "mlflow.store.artifact.http_artifact_repo",
    "mlflow.utils.server_info",
)
#: Modules that bind ``cloud_storage_http_request`` (presigned artifact up/downloads, e.g. an S3-backed
#: server with multipart downloads): the defining module first, then the importers. Importers that are not
#: imported yet bind the wrapped function when they are, so only loaded ones are patched.
MLFLOW_CLOUD_REQUEST_MODULES: tuple[str, ...] = (
    "mlflow.utils.request_utils",
    "mlflow.utils.rest_utils",
    "mlflow.utils.file_utils",
    "mlflow.store.artifact.presigned_url_artifact_repo",
    "mlflow.store.artifact.optimized_s3_artifact_repo",
    "mlflow.store.artifact.databricks_artifact_repo",
    "mlflow.data.http_dataset_source",
)
WRAPPED_MARK = "__saga_wrapped__"


def _install(
    modules: tuple[str, ...],
    attr: str,
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
    *,
    import_missing: bool,
) -> list[str]:
    import sys

    patched = []
    for name in modules:
        module = sys.modules.get(name)
        if module is None and import_missing:
            try:
                module = importlib.import_module(name)
            except ImportError:  # pragma: no cover - optional module in some mlflow builds
                module = None
        if module is None:
            continue
        current = getattr(module, attr, None)
        if current is not None and not hasattr(current, WRAPPED_MARK):
            wrapped = wrap(current)
            setattr(wrapped, WRAPPED_MARK, current)
            setattr(module, attr, wrapped)
            patched.append(name)
    return patched


def install_http_request_wrapper(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> list[str]:
    """Replace ``http_request`` in every module of ``MLFLOW_HTTP_REQUEST_MODULES`` with ``wrap(original)``.

    Idempotent: a module whose ``http_request`` already carries ``WRAPPED_MARK`` is left alone. Returns the
    modules patched now. Relies on MLflow's REST helpers calling ``http_request(host_creds, endpoint,
    method, ...)`` through the module-level name.
    """
    return _install(MLFLOW_HTTP_REQUEST_MODULES, "http_request", wrap, import_missing=True)


def install_cloud_request_wrapper(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> list[str]:
    """Replace ``cloud_storage_http_request(method, url, ...)`` wherever it is bound (see the module list).

    Relies on ``mlflow.utils.request_utils.download_chunk`` and ``file_utils.download_file_using_http_uri``
    calling it through their module-level names. The defining module is patched first, so modules imported
    later bind the wrapper.
    """
    return _install(MLFLOW_CLOUD_REQUEST_MODULES, "cloud_storage_http_request", wrap, import_missing=False)


def install_context_propagating_artifact_pools() -> bool:
    """Make every MLflow artifact repository run its thread-pool work in the submitter's ``contextvars``.

    MLflow downloads (and multipart-uploads) artifacts in ``ArtifactRepository.thread_pool`` workers; a
    plain ``ThreadPoolExecutor`` runs them without the caller's context, so a per-call deadline kept in a
    ``ContextVar`` would not reach them. Relies on ``ArtifactRepository._create_thread_pool`` building every
    pool (``thread_pool`` and ``chunk_thread_pool``). Returns True when patched now.
    """
    from mlflow.store.artifact.artifact_repo import ArtifactRepository

    current = ArtifactRepository._create_thread_pool
    if hasattr(current, WRAPPED_MARK):
        return False

    def _create_thread_pool(self: Any) -> Any:
        return _ContextThreadPool(
            max_workers=self.max_workers, thread_name_prefix=f"Mlflow{self.__class__.__name__}"
        )

    setattr(_create_thread_pool, WRAPPED_MARK, current)
    ArtifactRepository._create_thread_pool = _create_thread_pool  # type: ignore[method-assign]
    return True


def install_bounded_multipart_upload_part() -> bool:
    """Send multipart-upload parts through ``cloud_storage_http_request`` (bounded) instead of a bare
    ``requests.put`` without any timeout. Relies on ``HttpArtifactRepository._upload_part(credential,
    local_file, size, start_byte)`` returning a ``MultipartUploadPart``. Returns True when patched now."""
    from mlflow.entities.multipart_upload import MultipartUploadPart
    from mlflow.environment_variables import MLFLOW_S3_IGNORE_TLS
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
    from mlflow.utils import request_utils
    from mlflow.utils.file_utils import read_chunk
    from mlflow.utils.rest_utils import augmented_raise_for_status

    current = HttpArtifactRepository.__dict__.get("_upload_part")
    if current is None or hasattr(getattr(current, "__func__", current), WRAPPED_MARK):
        return False

    def _upload_part(credential: Any, local_file: str, size: int, start_byte: int) -> Any:
        data = read_chunk(local_file, size, start_byte)
        response = request_utils.cloud_storage_http_request(
            "put",
            credential.url,
            data=data,
            headers=credential.headers,
            verify=not MLFLOW_S3_IGNORE_TLS.get(),
        )
        augmented_raise_for_status(response)
        return MultipartUploadPart(
            part_number=credential.part_number, etag=response.headers.get("ETag", ""), url=credential.url
        )

    wrapped = staticmethod(_upload_part)
    setattr(_upload_part, WRAPPED_MARK, current)
    HttpArtifactRepository._upload_part = wrapped  # type: ignore[assignment]
    return True


class _ContextThreadPool(ThreadPoolExecutor):
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def mlflow_host_creds(**fields: Any) -> Any:
    """Build MLflow's ``MlflowHostCreds`` (public class, internal module ``mlflow.utils.rest_utils``)."""
    from mlflow.utils.rest_utils import MlflowHostCreds

    return MlflowHostCreds(**fields)


_carrier_cls: Any = None


def host_creds_carrying(payload: Any, store_uri: str, **overrides: Any) -> Any:
    """``MlflowHostCreds`` for ``store_uri`` as MLflow builds them (TLS options from the environment), with
    ``overrides`` (credentials) applied and ``payload`` attached for our ``http_request`` wrapper.

    Relies on ``mlflow.utils.credentials.get_default_host_creds`` and on ``http_request`` reading only
    attributes of the creds object (a subclass instance passes through MLflow untouched).
    """
    global _carrier_cls
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import MlflowHostCreds

    if _carrier_cls is None:
        _carrier_cls = type("SagaHostCreds", (MlflowHostCreds,), {"saga_payload": None})
    base = get_default_host_creds(store_uri)
    creds = _carrier_cls.__new__(_carrier_cls)
    creds.__dict__.update(base.__dict__)
    creds.__dict__.update(overrides)
    creds.saga_payload = payload
    return creds


def payload_of(host_creds: Any) -> Any:
    """What :func:`host_creds_carrying` attached, or None for creds MLflow built itself."""
    return getattr(host_creds, "saga_payload", None) if _carrier_cls is not None else None


def bind_rest_stores(
    client: Any, tracking_creds: Callable[[], Any], registry_creds: Callable[[], Any] | None
) -> None:
    """Give ``client`` REST stores of its own whose every request uses the given host-creds providers.

    MLflow caches one store per URI for the whole process and reads credentials from the environment, so
    two clients of one server would share credentials. Relies on ``MlflowClient._tracking_client`` (a
    ``TrackingServiceClient`` whose ``store`` is a property) and the lazily created
    ``MlflowClient._registry_client_lazy`` (a ``ModelRegistryClient``, same shape); both classes are
    swapped for subclasses whose ``store`` returns our instance.
    """
    from mlflow.store.model_registry.rest_store import RestStore as RegistryRestStore
    from mlflow.store.tracking.rest_store import RestStore as TrackingRestStore
    from mlflow.tracking._model_registry.client import ModelRegistryClient

    tracking = client._tracking_client
    tracking.__class__ = _own_store_class(type(tracking))
    tracking.saga_store = TrackingRestStore(tracking_creds)
    if registry_creds is not None:
        registry = ModelRegistryClient.__new__(_own_store_class(ModelRegistryClient))
        registry.registry_uri = client._registry_uri
        registry.tracking_uri = client.tracking_uri
        registry.saga_store = RegistryRestStore(registry_creds)
        client._registry_client_lazy = registry


_own_store_classes: dict[type, type] = {}


def _own_store_class(base: type) -> type:
    cls = _own_store_classes.get(base)
    if cls is None:
        cls = type(f"Saga{base.__name__}", (base,), {"store": property(lambda self: self.saga_store)})
        _own_store_classes[base] = cls
    return cls


def store_of(client: Any, which: str) -> Any:
    """The tracking (``"tracking"``) or registry (``"registry"``) store a client really uses (for tests)."""
    return client._tracking_client.store if which == "tracking" else client._get_registry_client().store


def sklearn_estimator_of(pyfunc: Any) -> Any | None:
    """The raw scikit-learn estimator inside a loaded pyfunc of MLflow's sklearn flavor, else None.

    Relies on ``PyFuncModel._model_impl`` being ``mlflow.sklearn._SklearnModelWrapper`` with a
    ``sklearn_model`` attribute.
    """
    from mlflow.sklearn import _SklearnModelWrapper

    impl = getattr(pyfunc, "_model_impl", None)
    if not isinstance(impl, _SklearnModelWrapper):
        return None
    return impl.sklearn_model


def pyfunc_implementation(pyfunc: Any) -> Any:
    """The flavor object a loaded pyfunc delegates to (``PyFuncModel._model_impl``)."""
    return pyfunc._model_impl


def jsonable(predictions: Any, pandas_orient: str = "records") -> Any:
    """Model output as JSON-ready values, exactly as MLflow's scoring server shapes them.

    Relies on ``mlflow.utils.proto_json_utils._get_jsonable_obj``.
    """
    from mlflow.utils.proto_json_utils import _get_jsonable_obj

    return _get_jsonable_obj(predictions, pandas_orient=pandas_orient)


def dataset_entity(dataset: Any) -> Any:
    """The ``mlflow.entities.Dataset`` of an ``mlflow.data`` dataset, for ``MlflowClient.log_inputs``.

    MLflow's fluent ``log_input`` does this with ``Dataset._to_mlflow_entity()``; the client API has no
    public equivalent.
    """
    return dataset._to_mlflow_entity()


def pandas_schema(frame: Any) -> Any:
    """The ``mlflow.types.Schema`` MLflow infers for a DataFrame, with required-ness found vectorised.

    ``PandasDataset.schema`` (``mlflow.types.utils._infer_schema``) tests every cell for None/NaN in a
    Python loop: ~8 s for 45,000 x 31 floats, more than the whole rest of the training run's logging. The
    column types come from the same per-column function MLflow uses (``_infer_pandas_column``); a column is
    required when ``isna()`` finds no missing value, which is what MLflow's loop decides.
    """
    from mlflow.types import ColSpec, Schema
    from mlflow.types.utils import _infer_pandas_column

    return Schema(
        [
            ColSpec(
                type=_infer_pandas_column(frame[col]), name=col, required=not bool(frame[col].isna().any())
            )
            for col in frame.columns
        ]
    )


def pandas_dataset(frame: Any, *, source: Any, targets: str | None, name: str, digest: str) -> Any:
    """``mlflow.data.from_pandas`` with its schema computed by ``pandas_schema`` (same result, fast).

    Relies on ``PandasDataset.schema`` being a ``functools.cached_property`` (stored in the instance's
    ``__dict__``); falls back to MLflow's own inference if the schema cannot be built this way.
    """
    import mlflow.data

    ds = mlflow.data.from_pandas(frame, source=source, targets=targets, name=name, digest=digest)
    try:
        ds.__dict__["schema"] = pandas_schema(frame)
    except Exception:  # an exotic column: let MLflow infer it (or record no schema) as it always did
        ds.__dict__.pop("schema", None)
    return ds


def end_run(client: Any, run_id: str, status: str, end_time_ms: int) -> None:
    """Set a run's status and end time in ONE request, without printing "View run" lines to stdout.

    ``MlflowClient.set_terminated`` first fetches the run to print its URL and ``update_run`` fetches it to
    keep its end time; the governance history ends one run per entry, inside a lock, so the extra request
    matters. Relies on ``MlflowClient._tracking_client.store.update_run_info(run_id, run_status, end_time,
    run_name)``.
    """
    from mlflow.entities import RunStatus

    from airflow_saga.core.mlflow_client import bounded

    with bounded(client):  # one bounded call, like every public method of a saga client
        client._tracking_client.store.update_run_info(
            run_id, run_status=RunStatus.from_string(status), end_time=end_time_ms, run_name=None
        )


#: The write methods ``registry_writer`` callers use; the compat test checks each exists with this signature.
REGISTRY_WRITES: dict[str, tuple[str, ...]] = {
    "set_registered_model_alias": ("name", "alias", "version"),
    "delete_registered_model_alias": ("name", "alias"),
    "set_registered_model_tag": ("name", "key", "value"),
    "delete_registered_model_tag": ("name", "key"),
    "set_model_version_tag": ("name", "version", "key", "value"),
    "delete_model_version_tag": ("name", "version", "key"),
    "delete_registered_model": ("name",),
    "update_model_version": ("name", "version", "description"),
}


def registry_writer(client: Any) -> Any:
    """MLflow's registry client behind ``MlflowClient``, for writes without the per-call prompt check.

    In MLflow 3 every ``MlflowClient`` write to a registered model or version (tags, aliases, delete)
    first GETs the model to refuse prompts; governance writes to its own models inside a lock, where that
    doubles the requests. Relies on ``MlflowClient._get_registry_client()`` returning a
    ``ModelRegistryClient`` with the methods in ``REGISTRY_WRITES``.
    """
    return _BoundedWriter(client, client._get_registry_client())


class _BoundedWriter:
    """Each write one bounded call against the client's server (``mlflow_client.bounded``)."""

    def __init__(self, client: Any, registry: Any) -> None:
        self._client, self._registry = client, registry

    def __getattr__(self, name: str) -> Any:
        if name not in REGISTRY_WRITES:
            raise AttributeError(name)
        method = getattr(self._registry, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            from airflow_saga.core.mlflow_client import bounded

            with bounded(self._client):
                return method(*args, **kwargs)

        call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
        return call


# ---------------------------------------------------------------------------------------------- Evidently
def evidently_column_type(numerical: bool) -> Any:
    """Evidently's ``ColumnType`` (numerical or categorical), which its stat-test registry takes.

    Relies on ``evidently.legacy.core.ColumnType``: the current API's ``ValueDrift`` calls the legacy
    stat-test registry itself.
    """
    from evidently.legacy.core import ColumnType

    return ColumnType.Numerical if numerical else ColumnType.Categorical


def evidently_stattest(reference: Any, current: Any, column_type: Any, method: str | None) -> Any:
    """The stat test Evidently's ``ValueDrift`` would pick (``method=None``: its default selection).

    Relies on ``evidently.legacy.calculations.stattests.registry.get_stattest``; the returned object is
    callable as ``test(reference, current, column_type, threshold)`` and has ``name`` and ``display_name``.
    """
    from evidently.legacy.calculations.stattests.registry import get_stattest

    return get_stattest(reference, current, column_type, method)


def evidently_method_kinds(method: str) -> list[str]:
    """The column kinds (``numerical``, ``categorical``) Evidently's stat test ``method`` applies to; empty
    when no test of that name is registered. Lets a monitor refuse a misspelt or misapplied method up front
    with its own message instead of Evidently's error mid-run.

    Relies on ``evidently.legacy.calculations.stattests.registry.get_registered_stattest`` (the lookup
    ``get_stattest`` does for a named method), which raises ``ValueError`` subclasses when it fails.
    """
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest

    kinds = []
    for kind, numerical in (("numerical", True), ("categorical", False)):
        try:
            get_registered_stattest(method, evidently_column_type(numerical))
        except ValueError:
            continue
        kinds.append(kind)
    return kinds
