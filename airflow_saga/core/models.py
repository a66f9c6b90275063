"""Logging and loading MLflow models of any flavour through an explicit client, never MLflow's global state.

``mlflow.sklearn.log_model`` and ``load_model`` resolve the server from the process-wide tracking URI, and
``mlflow.set_tracking_uri`` writes ``MLFLOW_TRACKING_URI`` into ``os.environ``. Airflow workers serve many
tasks and possibly many servers, so we do what ``Model.log`` does, step by step, with the client we were
given: create a LoggedModel, save the flavor locally, upload, finalize.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_saga.core.errors import EstimatorError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import pandas as pd
    from mlflow import MlflowClient

    from airflow_saga.core.mlflow_client import MlflowSettings


#: MLflow flavours ``log_model`` writes, by what the user's code returned.
SKLEARN, XGBOOST, LIGHTGBM, PYFUNC = "sklearn", "xgboost", "lightgbm", "pyfunc"
_BASE_REQUIREMENTS = ("mlflow", "cloudpickle", "pandas", "numpy")
_FLAVOR_REQUIREMENTS = {SKLEARN: ("sklearn",), XGBOOST: ("xgboost",), LIGHTGBM: ("lightgbm",), PYFUNC: ()}
_NOT_PINNED = frozenset({"airflow_saga", "airflow", "builtins", "__main__"})
EXAMPLE_ROWS = 5


@dataclasses.dataclass(frozen=True)
class LoggedModelInfo:
    """What ``log_model`` logged: the ``models:/m-...`` URI, its flavour, class and pinned requirements."""

    model_uri: str
    model_id: str
    flavor: str
    model_class: str
    requirements: tuple[str, ...]


def class_path(obj: Any) -> str:
    """``module.Qualname`` of ``obj``'s class, less Airflow's ``unusual_prefix_<sha>_`` DAG-module prefix."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{clean_module_name(cls.__module__)}.{cls.__qualname__}"


def clean_module_name(name: str) -> str:
    return re.sub(r"^unusual_prefix_[0-9a-f]+_", "", name or "?")


def flavor_of(model: Any, who: str = "the model") -> str:
    """The MLflow flavour ``model`` is logged with; ``EstimatorError`` naming ``who`` if it is no model.

    sklearn-API estimators (Pipelines, XGBoost's ``XGBClassifier``/``XGBRegressor`` and LightGBM's
    ``LGBMClassifier``/``LGBMRegressor`` included) use the sklearn flavour, so ``predict_proba`` stays
    available to evaluation; native ``xgboost.Booster`` / ``lightgbm.Booster`` use their own flavours; an
    ``mlflow.pyfunc.PythonModel`` the pyfunc flavour.
    """
    if model is None:
        raise EstimatorError(f"{who} returned no model (None); return the fitted model")
    modules = {c.__module__.split(".")[0] for c in type(model).__mro__}
    if "mlflow" in modules:
        import mlflow.pyfunc

        if isinstance(model, mlflow.pyfunc.PythonModel):
            return PYFUNC
    if "xgboost" in modules and type(model).__name__ == "Booster":
        return XGBOOST
    if "lightgbm" in modules and type(model).__name__ == "Booster":
        return LIGHTGBM
    if callable(getattr(model, "predict", None)) and callable(getattr(model, "get_params", None)):
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(model)
        except NotFittedError as exc:
            raise EstimatorError(f"{who} returned an unfitted {class_path(model)}: call fit() first") from exc
        except (TypeError, AttributeError):
            pass  # not an sklearn estimator after all, but it has the API: predict will prove it
        return SKLEARN
    text = repr(model)
    raise EstimatorError(
        f"{who} returned a {class_path(model)} ({text[:80]}{'...' if len(text) > 80 else ''}), which is "
        "not a model: return a fitted scikit-learn-API estimator (XGBoost/LightGBM wrappers included), an "
        "xgboost or lightgbm Booster, or an mlflow.pyfunc.PythonModel"
    )


def _component_objects(model: Any, flavor: str) -> list[Any]:
    """The objects whose code a pickled model refers to: the model, its nested estimators and callables."""
    objs: list[Any] = [model]
    if flavor == SKLEARN:
        with contextlib.suppress(Exception):  # a duck-typed estimator whose get_params needs arguments
            objs += list(model.get_params(deep=True).values())
    elif flavor == PYFUNC:
        objs += list(vars(model).values())
    return objs


def _module_names(objs: list[Any]) -> set[str]:
    import inspect

    names = set()
    for obj in objs:
        if obj is None or isinstance(obj, str | int | float | bool | bytes):
            continue
        is_code = isinstance(obj, type) or inspect.isfunction(obj) or inspect.ismethod(obj)
        module = getattr(obj, "__module__", None) if is_code else type(obj).__module__
        if isinstance(module, str):
            names.add(module)
    return names


@functools.cache
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def _is_installed_code(module: str) -> bool:
    top = module.split(".")[0]
    return top in sys.stdlib_module_names or top in _distributions() or top in _NOT_PINNED - {"__main__"}


def by_value_modules(objs: list[Any]) -> list[Any]:
    """Modules whose code must travel inside the pickle: a DAG file, ``__main__``, a local helper module.

    Airflow imports a DAG file as ``unusual_prefix_<sha>_<name>``, a module the gateway cannot import, so a
    ``PythonModel`` or transformer function defined there has to be pickled by value, not by reference.
    """
    out = []
    for name in sorted(_module_names(objs)):
        module = sys.modules.get(name)
        if module is not None and not _is_installed_code(name):
            out.append(module)
    return out


def pinned_requirements(model: Any = None, flavor: str = SKLEARN, extra: Sequence[str] = ()) -> list[str]:
    """Exact versions of what ``model`` needs: skips MLflow's ~11 s requirement inference.

    MLflow, cloudpickle, pandas and numpy; the flavour's framework; and the distributions of every installed
    module the model's components come from (e.g. ``xgboost-cpu`` for an ``XGBClassifier`` inside a
    Pipeline). ``extra`` entries are added as given (``"my-lib==1.2"``).
    """
    from importlib.metadata import PackageNotFoundError, version

    tops = list(_BASE_REQUIREMENTS) + list(_FLAVOR_REQUIREMENTS.get(flavor, ()))
    if model is not None:
        tops += sorted({m.split(".")[0] for m in _module_names(_component_objects(model, flavor))})
    pins: dict[str, str] = {}
    for top in tops:
        if top in _NOT_PINNED or top in sys.stdlib_module_names:
            continue
        dists = _distributions().get(top) or []
        dist = top if top in dists else (dists[0] if dists else None)
        if dist is None or dist in pins:
            continue
        try:
            pins[dist] = f"{dist}=={version(dist)}"
        except PackageNotFoundError:
            continue
    out = list(pins.values())
    out += [r for r in extra if r not in out]
    return out


def _predict_example(model: Any, flavor: str, example: pd.DataFrame) -> Any:
    if flavor == XGBOOST:
        import xgboost

        return model.predict(xgboost.DMatrix(example))
    return model.predict(example)


def _check_prediction(pred: Any, example: pd.DataFrame, who: str) -> None:
    try:
        n = len(pred)
    except TypeError:
        raise EstimatorError(
            f"{who}: predict() on the input example returned {type(pred).__name__}, not a prediction per row"
        ) from None
    if n != len(example):
        raise EstimatorError(
            f"{who}: predict() on the {len(example)}-row input example returned {n} predictions"
        )


def _save(
    flavor: str, model: Any, path: str, mlflow_model: Any, signature: Any, example: Any, reqs: list[str]
) -> None:
    common = {"mlflow_model": mlflow_model, "signature": signature, "input_example": example}
    if flavor == SKLEARN:
        import mlflow.sklearn

        mlflow.sklearn.save_model(
            model,
            path,
            pip_requirements=reqs,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            **common,
        )
    elif flavor == XGBOOST:
        import mlflow.xgboost

        mlflow.xgboost.save_model(model, path, pip_requirements=reqs, model_format="json", **common)
    elif flavor == LIGHTGBM:
        import mlflow.lightgbm

        mlflow.lightgbm.save_model(model, path, pip_requirements=reqs, **common)
    else:
        import mlflow.pyfunc

        mlflow.pyfunc.save_model(path, python_model=model, pip_requirements=reqs, **common)


@dataclasses.dataclass(frozen=True)
class PreparedModel:
    """A model proven to predict on its input example, with signature and pinned requirements."""

    model: Any
    flavor: str
    model_class: str
    example: pd.DataFrame
    signature: Any
    requirements: tuple[str, ...]
    by_value: tuple[Any, ...]


@contextlib.contextmanager
def _pickled_by_value(modules: Sequence[Any]) -> Iterator[None]:
    import cloudpickle

    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def prepare_model(
    model: Any,
    input_example: pd.DataFrame,
    *,
    who: str = "the model",
    extra_requirements: Sequence[str] = (),
) -> PreparedModel:
    """Check ``model`` before anything is written to MLflow: flavour, a real prediction, signature, pins.

    A ``PythonModel`` is saved, loaded back and predicted the way serving will run it (with its code pickled
    by value), so a model that cannot be served fails here, naming ``who``, instead of in the gateway.
    """
    from mlflow.models import infer_signature

    flavor = flavor_of(model, who)
    example = input_example.head(EXAMPLE_ROWS)
    by_value = tuple(by_value_modules(_component_objects(model, flavor)))
    reqs = tuple(pinned_requirements(model, flavor, extra_requirements))
    if flavor == PYFUNC:
        import mlflow.pyfunc

        with tempfile.TemporaryDirectory(prefix="saga-probe-") as tmp, _pickled_by_value(by_value):
            probe = str(Path(tmp) / "model")
            _save(flavor, model, probe, None, None, None, list(reqs))
            try:
                pred = mlflow.pyfunc.load_model(probe).predict(example)
            except Exception as exc:
                raise EstimatorError(
                    f"{who}: the saved {class_path(model)} failed to load or predict on the input example "
                    f"(the first {len(example)} training rows): {type(exc).__name__}: {exc}"
                ) from exc
    else:
        try:
            pred = _predict_example(model, flavor, example)
        except Exception as exc:
            raise EstimatorError(
                f"{who}: {class_path(model)}.predict() failed on the input example (the first "
                f"{len(example)} training rows): {type(exc).__name__}: {exc}"
            ) from exc
    _check_prediction(pred, example, who)
    return PreparedModel(
        model=model,
        flavor=flavor,
        model_class=class_path(model),
        example=example,
        signature=infer_signature(example, pred),
        requirements=reqs,
        by_value=by_value,
    )


def log_prepared(
    client: MlflowClient,
    prepared: PreparedModel,
    *,
    experiment_id: str,
    run_id: str,
    name: str = "model",
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> LoggedModelInfo:
    """Upload a prepared model as a LoggedModel linked to ``run_id``, through ``client`` only.

    Serialised with cloudpickle where the flavour pickles (sklearn, pyfunc): every estimator, trees
    included, loads without a skops trusted-types list; the model comes from this pipeline, so the pickle is
    trusted. A failure after the LoggedModel exists finalises it FAILED.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    logged = client.create_logged_model(
        experiment_id=experiment_id,
        name=name,
        source_run_id=run_id,
        params={k: str(v)[:6000] for k, v in (params or {}).items()},
        tags=tags,
        model_type=prepared.flavor,
    )
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        mlflow_model = Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            model_id=logged.model_id,
        )
        with tempfile.TemporaryDirectory(prefix="saga-model-") as tmp, _pickled_by_value(prepared.by_value):
            local = str(Path(tmp) / "model")
            _save(
                prepared.flavor,
                prepared.model,
                local,
                mlflow_model,
                prepared.signature,
                prepared.example,
                list(prepared.requirements),
            )
            client.log_model_artifacts(logged.model_id, local)
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except BaseException as exc:
        from airflow_saga.core.runs import best_effort

        # briefly: MLflow may be the failure
        what, failed = f"mark model {logged.model_id} FAILED", (logged.model_id, LoggedModelStatus.FAILED)
        best_effort(client, exc, what, client.finalize_logged_model, *failed)
        raise
    return LoggedModelInfo(
        model_uri=f"models:/{logged.model_id}",
        model_id=logged.model_id,
        flavor=prepared.flavor,
        model_class=prepared.model_class,
        requirements=prepared.requirements,
    )


def log_model(
    client: MlflowClient,
    model: Any,
    *,
    experiment_id: str,
    run_id: str,
    input_example: pd.DataFrame,
    name: str = "model",
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    extra_requirements: Sequence[str] = (),
    who: str = "the model",
) -> LoggedModelInfo:
    """``prepare_model`` then ``log_prepared``: log any supported model (see ``flavor_of``) to ``run_id``.

    Requirements are pinned (never MLflow's inference); code from DAG files and other non-installed modules
    is pickled by value, so the gateway can load the model without the DAG file.
    """
    prepared = prepare_model(model, input_example, who=who, extra_requirements=extra_requirements)
    return log_prepared(
        client, prepared, experiment_id=experiment_id, run_id=run_id, name=name, params=params, tags=tags
    )


def resolve_artifact_uri(client: MlflowClient, model_uri: str) -> str:
    """Turn ``models:/`` URIs into the artifact location behind them, using ``client``'s server only.

    MLflow's own resolution of ``models:/m-...`` consults the process-wide tracking store, which in a
    worker is not necessarily the server this task talks to.
    """
    if not model_uri.startswith("models:/"):
        return model_uri
    rest = model_uri.removeprefix("models:/")
    if rest.startswith("m-") and "/" not in rest:
        return client.get_logged_model(rest).artifact_location
    if "@" in rest:
        name, alias = rest.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
    else:
        name, _, version = rest.rpartition("/")
        mv = client.get_model_version(name, version)
    return resolve_artifact_uri(client, mv.source)


def download_model(settings: MlflowSettings, model_uri: str, dst: str | Path) -> str:
    """Download a model's artifacts to ``dst`` using ``settings``' server; return the local path."""
    from airflow_saga.core.mlflow_client import build_client, download_artifacts

    uri = resolve_artifact_uri(build_client(settings, check=False), model_uri)
    return download_artifacts(settings, uri, str(dst))


def load_sklearn_model(settings: MlflowSettings, model_uri: str) -> Any:
    """The raw estimator behind ``model_uri`` (sklearn flavor), for metrics that need ``predict_proba``."""
    import mlflow.sklearn

    with tempfile.TemporaryDirectory(prefix="saga-load-") as tmp:
        return mlflow.sklearn.load_model(download_model(settings, model_uri, tmp))


def load_pyfunc_model(settings: MlflowSettings, model_uri: str) -> Any:
    import mlflow.pyfunc

    # pyfunc keeps reading from the directory lazily for some flavors, so it must outlive this call.
    tmp = tempfile.mkdtemp(prefix="saga-pyfunc-")
    return mlflow.pyfunc.load_model(download_model(settings, model_uri, tmp))
