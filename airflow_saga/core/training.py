"""Train a model and record the training run in MLflow, with step caching. Two ways in, one record.

- ``train(client, TrainSpec)`` fits an estimator named by import path (``TrainModelOperator``).
- ``train_function(client, fn, FunctionSpec)`` runs the user's own training function (``@task.saga_train``,
  ``TrainFunctionOperator``), which may return any model ``core.models`` can log: sklearn-API estimators
  (XGBoost and LightGBM wrappers included), native XGBoost/LightGBM Boosters, or an MLflow ``PythonModel``.

Both validate everything that can fail on user input (data, estimator, the model's prediction on its input
example) *before* the MLflow run exists, and then hand over to ``_record``, the one place that creates a
training run: params, dataset inputs with content digest, the model with signature, input example and
pinned requirements, held-out and reference data, Airflow lineage tags. Both return the same training
summary, the contract that evaluate and register take.

The cache (SageMaker's CacheConfig, done better) is opt-in with an expiry. Its key covers the estimator
spec or the training function's source code, hyperparameters, target, split settings, the package version
and the dataset **content** digest, so the same path with changed content is a miss. A hit creates a small
run of its own (so the new Airflow run's lineage is still recorded) that points at the earlier run's model
and says so in its tags; registering it returns the version that model already has.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import re
import time
from typing import TYPE_CHECKING, Any

from airflow_saga import __version__
from airflow_saga.core import tags as T
from airflow_saga.core.errors import DataError, EstimatorError, SagaError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import pandas as pd
    from mlflow import MlflowClient

    from airflow_saga.core.datasets import LoadedData
    from airflow_saga.core.models import PreparedModel
    from airflow_saga.core.sources import SqlLoader

DEFAULT_ALLOWED_PREFIXES: tuple[str, ...] = ("sklearn.",)
_PATH_RE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")
TASKS = ("classification", "regression")
#: What a training function can ask for by parameter name (see ``train_function``).
INJECTED = ("train", "X", "y", "hyperparameters", "target", "features")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    model_name: str
    estimator: str
    data_source: Any
    target: str
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    test_size: float = 0.25
    random_state: int = 42
    experiment_name: str | None = None
    cache_enabled: bool = False
    cache_expire_after: str | int | None = "P30D"
    allowed_prefixes: tuple[str, ...] = DEFAULT_ALLOWED_PREFIXES
    allowed_source_prefixes: tuple[str, ...] = ()
    allowed_sql_conn_ids: tuple[str, ...] | None = None

    @property
    def experiment(self) -> str:
        return self.experiment_name or f"saga/{self.model_name}"


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
    """How to run a user's training function; see ``train_function``.

    :param data_source: any ``core.sources`` spec; None when the function loads its own data (it then
        returns a ``TrainedModel`` with the frame it fitted on).
    :param arguments: further keyword arguments for the function; logged as ``arg.<name>`` params and part of
        the cache key.
    :param task: ``classification`` or ``regression``; inferred from the model (or the target) if None.
    :param extra_requirements: pip requirements added to the model's pinned ones (``"my-lib==1.2"``).
    """

    model_name: str
    data_source: Any = None
    target: str | None = None
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    arguments: dict[str, Any] = dataclasses.field(default_factory=dict)
    test_size: float = 0.25
    random_state: int = 42
    experiment_name: str | None = None
    cache_enabled: bool = False
    cache_expire_after: str | int | None = "P30D"
    task: str | None = None
    allowed_source_prefixes: tuple[str, ...] = ()
    allowed_sql_conn_ids: tuple[str, ...] | None = None
    extra_requirements: tuple[str, ...] = ()

    @property
    def experiment(self) -> str:
        return self.experiment_name or f"saga/{self.model_name}"


@dataclasses.dataclass
class TrainedModel:
    """What a training function may return instead of a bare model: the model plus what it trained on.

    A function that loads its own data returns ``TrainedModel(model, train=frame, target="y",
    holdout=test_frame, source="s3://bucket/churn.parquet")``: ``train`` (target column included) gives the
    dataset digest, input example and reference sample; ``holdout`` is what evaluation scores (without it,
    give evaluate held-out data of its own); ``source`` says what was read (no credentials). ``metrics`` and
    ``params`` are logged on the run, ``task`` overrides the inferred classification/regression.
    """

    model: Any
    train: pd.DataFrame | None = None
    target: str | None = None
    holdout: pd.DataFrame | None = None
    source: str | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    task: str | None = None


# ---------------------------------------------------------------------------------------------- estimators
def resolve_estimator(path: str, allowed_prefixes: tuple[str, ...] = DEFAULT_ALLOWED_PREFIXES) -> Any:
    """Resolve ``pkg.module.Class`` or ``pkg.module:factory`` to a callable.

    Estimator paths can come from a UI trigger form, i.e. from anyone allowed to trigger a DAG, so only
    modules under ``allowed_prefixes`` may be imported.
    """
    if not isinstance(path, str) or not _PATH_RE.match(path.strip()):
        raise EstimatorError(
            f"estimator {path!r} is not an import path like 'sklearn.linear_model.LogisticRegression'"
        )
    path = path.strip()
    if allowed_prefixes and not any(path.startswith(p) for p in allowed_prefixes):
        raise EstimatorError(
            f"estimator {path!r} is outside the allowed prefixes {list(allowed_prefixes)}; "
            "add its package to allowed_estimator_prefixes in the DAG"
        )
    if ":" in path:
        module_name, attr = path.split(":", 1)
    else:
        module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise EstimatorError(f"estimator {path!r} cannot be imported: {exc}") from exc


def build_estimator(
    path: str, hyperparameters: dict[str, Any], allowed_prefixes: tuple[str, ...] = DEFAULT_ALLOWED_PREFIXES
) -> Any:
    from sklearn.base import BaseEstimator

    factory = resolve_estimator(path, allowed_prefixes)
    try:
        est = factory()
    except TypeError as exc:
        raise EstimatorError(f"estimator {path!r} could not be constructed without arguments: {exc}") from exc
    if not isinstance(est, BaseEstimator):
        raise EstimatorError(f"estimator {path!r} built a {type(est).__name__}, not a scikit-learn estimator")
    if hyperparameters:
        valid = set(est.get_params(deep=True))
        unknown = sorted(set(hyperparameters) - valid)
        if unknown:
            raise EstimatorError(
                f"estimator {path!r} has no hyperparameter(s) {unknown}; valid: {sorted(valid)[:40]}"
            )
        try:
            est.set_params(**hyperparameters)
        except (ValueError, TypeError) as exc:
            raise EstimatorError(
                f"estimator {path!r} rejected hyperparameters {hyperparameters}: {exc}"
            ) from exc
    return est


def allows_nan(est: Any) -> bool:
    """Whether ``est`` takes NaN inputs; a Pipeline takes what its first step takes (e.g. an imputer)."""
    from sklearn.pipeline import Pipeline
    from sklearn.utils import get_tags

    if isinstance(est, Pipeline) and est.steps:
        return allows_nan(est.steps[0][1])
    try:
        return bool(get_tags(est).input_tags.allow_nan)
    except (AttributeError, TypeError, ValueError):
        return False


def task_of(est: Any) -> str:
    from sklearn.base import is_classifier

    return "classification" if is_classifier(est) else "regression"


# ---------------------------------------------------------------------------------------------- caching
def cache_key(spec: TrainSpec, dataset_digest: str) -> str:
    """Content-addressed key: same spec + same data **content** + same package version = same key."""
    payload = {
        "estimator": spec.estimator,
        "hyperparameters": spec.hyperparameters,
        "target": spec.target,
        "test_size": spec.test_size,
        "random_state": spec.random_state,
        "dataset_digest": dataset_digest,
    }
    return _hash_key(payload)


def function_cache_key(fn_id: str, fn_sha: str, spec: FunctionSpec, target: str, dataset_digest: str) -> str:
    """The same for a training function: its source code stands in for the estimator path."""
    payload = {
        "function": fn_id,
        "function_sha256": fn_sha,
        "hyperparameters": spec.hyperparameters,
        "arguments": spec.arguments,
        "target": target,
        "test_size": spec.test_size,
        "random_state": spec.random_state,
        "dataset_digest": dataset_digest,
    }
    return _hash_key(payload)


def _hash_key(payload: dict[str, Any]) -> str:
    blob = json.dumps({**payload, "package_version": __version__}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


_DUR_RE = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_expiry(value: str | int | float | None) -> float | None:
    """Seconds from an ISO-8601 duration (``P30D``, ``PT12H``) or a number of seconds; None = never."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        if value <= 0:
            raise DataError(f"cache_expire_after must be positive, got {value!r}")
        return float(value)
    text = str(value).strip().upper()
    if text.replace(".", "", 1).isdigit():
        return parse_expiry(float(text))
    m = _DUR_RE.match(text)
    if not m or text in ("P", "PT"):
        raise DataError(f"cache_expire_after {value!r} is not an ISO-8601 duration like 'P30D' or 'PT6H'")
    parts = {k: float(v) for k, v in m.groupdict().items() if v}
    seconds = (
        parts.get("w", 0) * 604800
        + parts.get("d", 0) * 86400
        + parts.get("h", 0) * 3600
        + parts.get("m", 0) * 60
        + parts.get("s", 0)
    )
    if seconds <= 0:
        raise DataError(f"cache_expire_after {value!r} must be longer than zero")
    return seconds


def find_cached_run(
    client: MlflowClient,
    experiment_id: str,
    key: str,
    expire_after_s: float | None,
    now_ms: int | None = None,
) -> Any | None:
    """The most recent FINISHED run with ``key`` inside the expiry window (failed runs never count)."""
    now_ms = now_ms or int(time.time() * 1000)
    flt = f"tags.`{T.CACHE_KEY}` = '{key}' and attributes.status = 'FINISHED'"
    if expire_after_s is not None:
        flt += f" and attributes.start_time > {now_ms - int(expire_after_s * 1000)}"
    runs = client.search_runs(
        [experiment_id], filter_string=flt, order_by=["attributes.start_time DESC"], max_results=5
    )
    for run in runs:
        if run.data.tags.get(T.MODEL_URI):
            return run
    return None


# ---------------------------------------------------------------------------------------------- runs
def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as exc:  # a concurrent task created it first
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def _params(base: dict[str, Any], hyperparameters: Mapping[str, Any], prefix: str = "hp.") -> dict[str, str]:
    params = {k: str(v) for k, v in base.items() if v is not None}
    for k, v in hyperparameters.items():
        params[f"{prefix}{k}"] = v if isinstance(v, str) else json.dumps(v, default=str)
    return {k[:250]: v[:6000] for k, v in params.items()}


def _flatten_params(spec: TrainSpec, source: str) -> dict[str, str]:
    return _params(
        {
            "estimator": spec.estimator,
            "target": spec.target,
            "data_source": source,
            "test_size": spec.test_size,
            "random_state": spec.random_state,
        },
        spec.hyperparameters,
    )


def _log_dataset(client: MlflowClient, run_id: str, frame: Any, data: LoadedData, context: str) -> None:
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    from airflow_saga.core.compat import dataset_entity, pandas_dataset

    source: Any = None
    if data.details.get("kind", "file") == "file":
        try:
            source = mlflow.data.dataset_source_registry.resolve_dataset_source(data.source)
        except MlflowException:
            source = None
    if source is None:  # sklearn:<name>, a callable, SQL, a frame: recorded as a code-defined source
        from mlflow.data.code_dataset_source import CodeDatasetSource

        source = CodeDatasetSource(tags={"saga.data_source": data.source, **data.details})
    ds = pandas_dataset(frame, source=source, targets=data.target, name=context, digest=data.digest)
    client.log_inputs(
        run_id,
        datasets=[DatasetInput(dataset_entity(ds), tags=[InputTag("mlflow.data.context", context)])],
    )


def _log_frames(client: MlflowClient, run_id: str, frames: dict[str, Any]) -> dict[str, str]:
    """Parquet copies of the held-out and reference data as run artifacts; returns their ``runs:/`` URIs."""
    import tempfile
    from pathlib import Path

    uris = {}
    with tempfile.TemporaryDirectory(prefix="saga-data-") as tmp:
        for name, frame in frames.items():
            path = Path(tmp) / f"{name}.parquet"
            frame.to_parquet(path, index=False)
            client.log_artifact(run_id, str(path), artifact_path="data")
            uris[name] = f"runs:/{run_id}/data/{name}.parquet"
    return uris


REFERENCE_SAMPLE_ROWS = 50_000


@dataclasses.dataclass
class _Record:
    """Everything ``_record`` writes, gathered and validated before the run exists."""

    experiment_id: str
    model_name: str
    data: LoadedData
    train_df: pd.DataFrame
    test_df: pd.DataFrame | None
    task: str
    estimator: str
    params: dict[str, str]
    tags: dict[str, str]
    key: str
    cached: Any | None
    prepared: PreparedModel | None
    fit_seconds: float
    random_state: int
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)


def _record(client: MlflowClient, rec: _Record, *, airflow: dict[str, str], say: Any) -> dict[str, Any]:
    """Create and fill the training run (the only place one is created); return the training summary."""
    from mlflow.entities import Metric, Param

    from airflow_saga.core.models import log_prepared
    from airflow_saga.core.runs import create_run, ended_on_error

    data, cached = rec.data, rec.cached
    run_tags = {
        T.RUN_KIND: "train",
        T.DATASET_DIGEST: data.digest,
        T.DATASET_SOURCE: data.source[:5000],
        T.DATASET_ROWS: str(data.rows),
        T.ESTIMATOR: rec.estimator,
        T.PACKAGE_VERSION: __version__,
        "saga.model_name": rec.model_name,
        **rec.tags,
        **{f"saga.airflow.{k}": v for k, v in airflow.items() if v is not None},
    }
    if rec.key:
        run_tags[T.CACHE_KEY] = rec.key
    if airflow.get("dag_file_hash"):
        run_tags[T.DAG_FILE_HASH] = airflow["dag_file_hash"]
    source_run = (cached.data.tags.get(T.CACHE_SOURCE_RUN) or cached.info.run_id) if cached else None
    if cached is not None:
        flavor = cached.data.tags.get(T.MODEL_FLAVOR, "sklearn")
        model_class = cached.data.tags.get(T.MODEL_CLASS, rec.estimator)
    else:
        assert rec.prepared is not None
        flavor, model_class = rec.prepared.flavor, rec.prepared.model_class
    run_tags[T.MODEL_FLAVOR] = flavor
    run_tags[T.MODEL_CLASS] = model_class
    run_tags[T.ORIGIN] = "cache" if cached is not None else "trained"
    run_name = f"train-{airflow.get('run_id', 'manual')}"[:250]
    run = create_run(client, rec.experiment_id, run_name=run_name, tags=run_tags)  # closes earlier orphans
    run_id = run.info.run_id
    with ended_on_error(client, run_id):  # FAILED on error, KILLED when interrupted
        client.log_batch(run_id, params=[Param(k, v) for k, v in rec.params.items()])
        _log_dataset(client, run_id, rec.train_df, data, "training")
        if rec.test_df is not None:
            _log_dataset(client, run_id, rec.test_df, data, "evaluation")
        frames = {} if rec.test_df is None else {"holdout": rec.test_df}
        if cached is not None:
            model_uri = cached.data.tags[T.MODEL_URI]
            say(
                "Cache HIT for key %s: reusing model %s from run %s (no training)",
                rec.key,
                model_uri,
                source_run,
            )
            client.set_tag(run_id, T.CACHE_HIT, "true")
            client.set_tag(run_id, T.CACHE_SOURCE_RUN, source_run)
        else:
            assert rec.prepared is not None
            model_uri = log_prepared(
                client,
                rec.prepared,
                experiment_id=rec.experiment_id,
                run_id=run_id,
                params=rec.params,
                tags={T.DATASET_DIGEST: data.digest},
            ).model_uri
            client.set_tag(run_id, T.CACHE_HIT, "false")
            ref = rec.train_df[data.features]
            if len(ref) > REFERENCE_SAMPLE_ROWS:
                ref = ref.sample(REFERENCE_SAMPLE_ROWS, random_state=rec.random_state)
            frames["reference"] = ref
        now = int(time.time() * 1000)
        metrics = {"fit_seconds": rec.fit_seconds, **rec.metrics}
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        uris = _log_frames(client, run_id, frames)
        if "reference" in frames:  # issue 5: the baseline's summary statistics (saga.baseline.stats_uri)
            from airflow_saga.core.baselines import log_reference_stats

            uris["reference_stats"] = log_reference_stats(client, run_id, frames["reference"])
        if cached is not None:
            uris["reference"] = (
                cached.data.tags.get(T.BASELINE_URI) or f"runs:/{source_run}/data/reference.parquet"
            )
            if cached.data.tags.get(T.BASELINE_STATS_URI):
                uris["reference_stats"] = cached.data.tags[T.BASELINE_STATS_URI]
        client.set_tag(run_id, T.MODEL_URI, model_uri)
        client.set_tag(run_id, T.BASELINE_URI, uris["reference"])
        client.set_terminated(run_id, "FINISHED")
    return {
        "run_id": run_id,
        "experiment_id": rec.experiment_id,
        "model_uri": model_uri,
        "model_name": rec.model_name,
        "task": rec.task,
        "target": data.target,
        "features": data.features,
        "estimator": rec.estimator,
        "dataset": data.describe(),
        "holdout_uri": uris.get("holdout"),
        "reference_uri": uris["reference"],
        "reference_stats_uri": uris.get("reference_stats"),
        "cache_key": rec.key,
        "cache_hit": cached is not None,
        "cache_source_run_id": source_run,
        "fit_seconds": round(rec.fit_seconds, 4),
        "flavor": flavor,
        "model_class": model_class,
        "origin": "cache" if cached is not None else "trained",
        **rec.summary,
    }


def _load(spec: TrainSpec | FunctionSpec, sql_loader: SqlLoader | None) -> LoadedData:
    from airflow_saga.core import datasets

    return datasets.load_dataset(
        spec.data_source,
        str(spec.target),
        sql_loader=sql_loader,
        allowed_prefixes=spec.allowed_source_prefixes,
        allowed_conn_ids=spec.allowed_sql_conn_ids,
    )


def _say(log: Any) -> Callable[..., None]:
    return log.info if log is not None else (lambda *a, **k: None)


def train(
    client: MlflowClient,
    spec: TrainSpec,
    *,
    airflow: dict[str, str] | None = None,
    log: Any = None,
    sql_loader: SqlLoader | None = None,
) -> dict[str, Any]:
    """Validate, fit (or reuse from cache), and log one training run. Returns the XCom-able summary.

    All validation that can fail on user input happens before the MLflow run is created, so bad input
    leaves nothing behind in MLflow.
    """
    from airflow_saga.core import datasets
    from airflow_saga.core.models import prepare_model

    say = _say(log)
    data = _load(spec, sql_loader)
    est = build_estimator(spec.estimator, spec.hyperparameters, spec.allowed_prefixes)
    datasets.check_features(data.frame, data.target, allow_nan=allows_nan(est))
    task = task_of(est)
    train_df, test_df = datasets.split(
        data, test_size=spec.test_size, random_state=spec.random_state, stratify=task == "classification"
    )
    expire_s = parse_expiry(spec.cache_expire_after) if spec.cache_enabled else None
    key = cache_key(spec, data.digest)
    experiment_id = get_or_create_experiment(client, spec.experiment)

    cached = find_cached_run(client, experiment_id, key, expire_s) if spec.cache_enabled else None
    fit_seconds, prepared = 0.0, None
    if cached is None:
        if spec.cache_enabled:
            say("Cache MISS for key %s: training %s", key, spec.estimator)
        # Fit before creating the MLflow run, so an estimator that rejects the data leaves nothing behind.
        t0 = time.perf_counter()
        try:
            est.fit(train_df[data.features], train_df[data.target])
        except (ValueError, TypeError) as exc:
            who = f"estimator {spec.estimator!r} on {data.source!r}"
            raise EstimatorError(datasets.explain_fit_failure(train_df[data.features], who, exc)) from exc
        fit_seconds = time.perf_counter() - t0
        prepared = prepare_model(est, train_df[data.features], who=f"estimator {spec.estimator!r}")
    return _record(
        client,
        _Record(
            experiment_id=experiment_id,
            model_name=spec.model_name,
            data=data,
            train_df=train_df,
            test_df=test_df,
            task=task,
            estimator=spec.estimator,
            params=_flatten_params(spec, data.source),
            tags={},
            key=key,
            cached=cached,
            prepared=prepared,
            fit_seconds=fit_seconds,
            random_state=spec.random_state,
        ),
        airflow=airflow or {},
        say=say,
    )


# ---------------------------------------------------------------------------------------------- functions
def function_id(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a training function (a DAG file's module without Airflow's prefix)."""
    from airflow_saga.core.models import clean_module_name

    return f"{clean_module_name(getattr(fn, '__module__', '?'))}:{getattr(fn, '__qualname__', repr(fn))}"


def function_sha256(fn: Callable[..., Any]) -> str | None:
    """A digest of the function's source code, or None when Python cannot show it (then: no caching)."""
    try:
        source = inspect.getsource(inspect.unwrap(fn))
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _call_kwargs(
    fn: Callable[..., Any], args: Sequence[Any], available: dict[str, Any], given: Mapping[str, Any]
) -> dict[str, Any]:
    """Keyword arguments for ``fn`` by parameter name: what was given wins, then what we can supply."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    taken = {p.name for p in positional[: len(args)]}
    out: dict[str, Any] = {}
    for p in params:
        if p.name in taken or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in given:
            out[p.name] = given[p.name]
        elif p.name in available:
            out[p.name] = available[p.name]
        elif p.default is p.empty:
            can = ", ".join(sorted(available)) or "nothing (no data_source)"
            raise EstimatorError(
                f"training function {function_id(fn)} needs argument {p.name!r}, which was not given; "
                f"it can ask for {can} by name, or take it as an argument of the call"
            )
    if any(p.kind == p.VAR_KEYWORD for p in params):
        out.update({k: v for k, v in given.items() if k not in out and k not in taken})
    return out


def infer_task(model: Any, flavor: str, y: pd.Series | None) -> str:
    """classification or regression, from the model when it says, else from the target's values."""
    if flavor == "sklearn":
        from sklearn.base import is_classifier, is_regressor

        try:
            if is_classifier(model):
                return "classification"
            if is_regressor(model):
                return "regression"
        except (AttributeError, TypeError):  # a duck-typed model without sklearn's estimator tags
            pass
    elif flavor == "xgboost":
        objective = str(json.loads(model.save_config())["learner"]["objective"]["name"])
        return "classification" if objective.startswith(("binary:", "multi:")) else "regression"
    elif flavor == "lightgbm":
        objective = str((getattr(model, "params", None) or {}).get("objective", ""))
        classify = ("binary", "multiclass", "multiclassova", "softmax", "cross_entropy", "xentropy")
        return "classification" if objective in classify else "regression"
    return target_task(y)


def target_task(y: pd.Series | None) -> str:
    """classification for labels (bool, text, categories, few integer values), else regression."""
    import pandas as pd

    if y is None:
        return "regression"
    values = y.dropna()
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return "classification"
    distinct = values.nunique()
    if pd.api.types.is_integer_dtype(values) and distinct <= 20:
        return "classification"
    if len(values) and (values % 1 == 0).all() and distinct <= 10:
        return "classification"
    return "regression"


def _check_task(task: str | None, field: str = "task") -> str | None:
    if task is not None and task not in TASKS:
        raise EstimatorError(f"{field} must be one of {list(TASKS)}, got {task!r}")
    return task


def _numbers(values: Any, field: str) -> dict[str, float]:
    import math

    if not values:
        return {}
    if not isinstance(values, dict):
        raise EstimatorError(
            f"{field} must be a mapping of metric names to numbers, got {type(values).__name__}"
        )
    out = {}
    for k, v in values.items():
        try:
            number = float(v)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or isinstance(v, bool):
            raise EstimatorError(f"{field}[{k!r}] must be a finite number, got {v!r}")
        out[str(k)] = number
    return out


def _own_data(result: TrainedModel, fn_id: str, target: str | None) -> tuple[LoadedData, Any, Any]:
    """The LoadedData, train and held-out frames of a function that loaded its own data."""
    import pandas as pd

    from airflow_saga.core import datasets
    from airflow_saga.core.sources import redact_uri

    target = result.target or target
    if result.train is None or not isinstance(result.train, pd.DataFrame):
        raise EstimatorError(
            f"training function {fn_id} has no data_source, so it must return TrainedModel(model, "
            f"train=<the DataFrame it fitted on>, target=...); got train={type(result.train).__name__}"
        )
    if not target:
        raise EstimatorError(f"training function {fn_id}: name the target column (TrainedModel.target)")
    source = redact_uri(result.source) if result.source else f"<data loaded by {fn_id}>"
    holdout = result.holdout
    if holdout is not None:
        if not isinstance(holdout, pd.DataFrame):
            raise EstimatorError(
                f"training function {fn_id}: TrainedModel.holdout must be a DataFrame, "
                f"got {type(holdout).__name__}"
            )
        missing = sorted(set(map(str, result.train.columns)) - set(map(str, holdout.columns)))
        if missing:
            raise DataError(
                f"training function {fn_id}: holdout lacks column(s) {missing} of the train frame"
            )
        holdout = holdout[list(result.train.columns)]
    full = result.train if holdout is None else pd.concat([result.train, holdout], ignore_index=True)
    data = datasets.validated(full, target, source=source, details={"kind": "function", "function": fn_id})
    return data, result.train, holdout


def train_function(
    client: MlflowClient,
    fn: Callable[..., Any],
    spec: FunctionSpec,
    *,
    args: Sequence[Any] = (),
    runtime_kwargs: Mapping[str, Any] | None = None,
    airflow: dict[str, str] | None = None,
    log: Any = None,
    sql_loader: SqlLoader | None = None,
) -> dict[str, Any]:
    """Run the user's training function and record it exactly like ``train`` does; return the summary.

    Calling convention (by parameter name): with a ``data_source``, the data is loaded, checked and split
    (``test_size``) here, and the function may ask for ``train`` (the training rows, target included),
    ``X`` and ``y`` (features and target of those rows), ``hyperparameters``, ``target`` and ``features``.
    Anything in ``spec.arguments`` (and ``runtime_kwargs``, e.g. Airflow context values) is passed by name
    too, and wins. Positional ``args`` go first. Without a ``data_source`` the function loads its own data
    and returns a ``TrainedModel`` naming the frames (see there).

    It returns a fitted model (or a ``TrainedModel``): anything ``core.models.flavor_of`` accepts. The model
    must predict on its input example before the run is created, so a function that returns no model or a
    non-model leaves nothing in MLflow.
    """
    from airflow_saga.core import datasets
    from airflow_saga.core.models import flavor_of, prepare_model

    say = _say(log)
    fn_id = function_id(fn)
    _check_task(spec.task)
    available: dict[str, Any] = {"hyperparameters": dict(spec.hyperparameters)}
    data = train_df = test_df = None
    key, cached = "", None
    fn_sha = function_sha256(fn)
    if spec.data_source is not None:
        if not spec.target:
            raise DataError(f"training function {fn_id}: data_source is given, so target must be too")
        data = _load(spec, sql_loader)
        datasets.check_features(data.frame, data.target, allow_nan=True)
        stratify = (spec.task or target_task(data.frame[data.target])) == "classification"
        train_df, test_df = datasets.split(
            data, test_size=spec.test_size, random_state=spec.random_state, stratify=stratify
        )
        available |= {
            "train": train_df,
            "X": train_df[data.features],
            "y": train_df[data.target],
            "target": data.target,
            "features": list(data.features),
        }
        if fn_sha is not None:
            key = function_cache_key(fn_id, fn_sha, spec, data.target, data.digest)
        if spec.cache_enabled and fn_sha is None:
            say("Cache disabled: the source of %s cannot be read, so it cannot be part of the key", fn_id)
    elif spec.cache_enabled:
        say("Cache disabled: %s loads its own data, so its digest is unknown before it runs", fn_id)
    if spec.target:
        available.setdefault("target", spec.target)
    expire_s = parse_expiry(spec.cache_expire_after) if spec.cache_enabled and key else None
    experiment_id = get_or_create_experiment(client, spec.experiment)
    if spec.cache_enabled and key:
        cached = find_cached_run(client, experiment_id, key, expire_s)

    fit_seconds, prepared, result = 0.0, None, TrainedModel(model=None)
    if cached is None:
        if spec.cache_enabled and key:
            say("Cache MISS for key %s: running %s", key, fn_id)
        kwargs = _call_kwargs(fn, args, available, {**spec.arguments, **(runtime_kwargs or {})})
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except SagaError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as exc:
            who = f"training function {fn_id}"
            if train_df is not None:
                raise EstimatorError(datasets.explain_fit_failure(available["X"], who, exc)) from exc
            raise EstimatorError(f"{who} failed: {type(exc).__name__}: {exc}") from exc
        fit_seconds = time.perf_counter() - t0
        result = out if isinstance(out, TrainedModel) else TrainedModel(model=out)
        _check_task(result.task, "TrainedModel.task")
        who = f"training function {fn_id}"
        result.metrics = _numbers(result.metrics, f"{who}: TrainedModel.metrics")
        flavor = flavor_of(result.model, who)
        if data is None:
            data, train_df, test_df = _own_data(result, fn_id, spec.target)
        elif result.train is not None or result.holdout is not None:
            raise EstimatorError(
                f"{who}: data_source {data.source!r} was given, so return the model (or TrainedModel with "
                "metrics/params), not frames of its own"
            )
        assert train_df is not None
        task = spec.task or result.task or infer_task(result.model, flavor, train_df[data.target])
        prepared = prepare_model(
            result.model, train_df[data.features], who=who, extra_requirements=spec.extra_requirements
        )
        estimator = prepared.model_class
    else:
        assert data is not None
        task = spec.task or cached.data.tags.get("saga.task") or target_task(data.frame[data.target])
        estimator = cached.data.tags.get(T.ESTIMATOR, fn_id)
    assert data is not None and train_df is not None
    base_params = {
        "training_function": fn_id,
        "target": data.target,
        "data_source": data.source,
        "test_size": spec.test_size if spec.data_source is not None else None,
        "random_state": spec.random_state if spec.data_source is not None else None,
    }
    params = _params(base_params, spec.hyperparameters)
    params |= _params({}, spec.arguments, prefix="arg.")
    params |= _params({}, result.params, prefix="fn.")
    tags = {T.TRAINING_FUNCTION: fn_id, "saga.task": task}
    if fn_sha:
        tags[T.FUNCTION_HASH] = fn_sha
    return _record(
        client,
        _Record(
            experiment_id=experiment_id,
            model_name=spec.model_name,
            data=data,
            train_df=train_df,
            test_df=test_df,
            task=task,
            estimator=estimator,
            params=params,
            tags=tags,
            key=key,
            cached=cached,
            prepared=prepared,
            fit_seconds=fit_seconds,
            random_state=spec.random_state,
            metrics=result.metrics,
            summary={"training_function": fn_id},
        ),
        airflow=airflow or {},
        say=say,
    )
