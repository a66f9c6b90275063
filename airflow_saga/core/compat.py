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

import importlib
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
WRAPPED_MARK = "__saga_wrapped__"


def install_http_request_wrapper(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> list[str]:
    """Replace ``http_request`` in every module of ``MLFLOW_HTTP_REQUEST_MODULES`` with ``wrap(original)``.

    Idempotent: a module whose ``http_request`` already carries ``WRAPPED_MARK`` is left alone. Returns the
    modules patched now. Relies on MLflow's REST helpers calling ``http_request(host_creds, endpoint,
    method, ...)`` through the module-level name.
    """
    patched = []
    for name in MLFLOW_HTTP_REQUEST_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - optional module in some mlflow builds
            continue
        current = getattr(module, "http_request", None)
        if current is not None and not hasattr(current, WRAPPED_MARK):
            wrapped = wrap(current)
            setattr(wrapped, WRAPPED_MARK, current)
            module.http_request = wrapped  # type: ignore[attr-defined]
            patched.append(name)
    return patched


def mlflow_host_creds(**fields: Any) -> Any:
    """Build MLflow's ``MlflowHostCreds`` (public class, internal module ``mlflow.utils.rest_utils``)."""
    from mlflow.utils.rest_utils import MlflowHostCreds

    return MlflowHostCreds(**fields)


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


def end_run(client: Any, run_id: str, status: str, end_time_ms: int) -> None:
    """Set a run's status and end time in ONE request, without printing "View run" lines to stdout.

    ``MlflowClient.set_terminated`` first fetches the run to print its URL and ``update_run`` fetches it to
    keep its end time; the governance history ends one run per entry, inside a lock, so the extra request
    matters. Relies on ``MlflowClient._tracking_client.store.update_run_info(run_id, run_status, end_time,
    run_name)``.
    """
    from mlflow.entities import RunStatus

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
}


def registry_writer(client: Any) -> Any:
    """MLflow's registry client behind ``MlflowClient``, for writes without the per-call prompt check.

    In MLflow 3 every ``MlflowClient`` write to a registered model or version (tags, aliases, delete)
    first GETs the model to refuse prompts; governance writes to its own models inside a lock, where that
    doubles the requests. Relies on ``MlflowClient._get_registry_client()`` returning a
    ``ModelRegistryClient`` with the methods in ``REGISTRY_WRITES``.
    """
    return client._get_registry_client()


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
