"""Fit an estimator spec on a data source and record the training run in MLflow, with step caching.

The cache (SageMaker's CacheConfig, done better) is opt-in with an expiry. Its key covers the estimator
spec, hyperparameters, target, split settings, the package version and the dataset **content** digest, so the
same path with changed content is a miss. A hit creates a small run of its own (so the new Airflow run's
lineage is still recorded) that points at the earlier run's model and says so in its tags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import re
import time
from typing import TYPE_CHECKING, Any

from airflow_saga import __version__
from airflow_saga.core import tags as T
from airflow_saga.core.errors import DataError, EstimatorError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_ALLOWED_PREFIXES: tuple[str, ...] = ("sklearn.",)
_PATH_RE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    model_name: str
    estimator: str
    data_source: str
    target: str
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    test_size: float = 0.25
    random_state: int = 42
    experiment_name: str | None = None
    cache_enabled: bool = False
    cache_expire_after: str | int | None = "P30D"
    allowed_prefixes: tuple[str, ...] = DEFAULT_ALLOWED_PREFIXES

    @property
    def experiment(self) -> str:
        return self.experiment_name or f"saga/{self.model_name}"


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
        "package_version": __version__,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
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


def _flatten_params(spec: TrainSpec) -> dict[str, str]:
    params = {
        "estimator": spec.estimator,
        "target": spec.target,
        "data_source": spec.data_source,
        "test_size": str(spec.test_size),
        "random_state": str(spec.random_state),
    }
    for k, v in spec.hyperparameters.items():
        params[f"hp.{k}"] = json.dumps(v) if not isinstance(v, str) else v
    return {k: v[:6000] for k, v in params.items()}


def _log_dataset(client: MlflowClient, run_id: str, frame: Any, data: Any, context: str) -> None:
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    from airflow_saga.core.compat import dataset_entity

    try:
        source: Any = mlflow.data.dataset_source_registry.resolve_dataset_source(data.source)
    except MlflowException:  # e.g. sklearn:<name>; record the name as a code-defined source
        from mlflow.data.code_dataset_source import CodeDatasetSource

        source = CodeDatasetSource(tags={"saga.data_source": data.source})
    ds = mlflow.data.from_pandas(frame, source=source, targets=data.target, name=context, digest=data.digest)
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


def train(
    client: MlflowClient,
    spec: TrainSpec,
    *,
    airflow: dict[str, str] | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Validate, fit (or reuse from cache), and log one training run. Returns the XCom-able summary.

    All validation that can fail on user input happens before the MLflow run is created, so bad input
    leaves nothing behind in MLflow.
    """
    from airflow_saga.core import datasets
    from airflow_saga.core.models import log_sklearn_model
    from airflow_saga.core.runs import create_run, ended_on_error

    say = log.info if log is not None else (lambda *a, **k: None)
    data = datasets.load_dataset(spec.data_source, spec.target)
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
    fit_seconds = 0.0
    if cached is None:
        if spec.cache_enabled:
            say("Cache MISS for key %s: training %s", key, spec.estimator)
        # Fit before creating the MLflow run, so an estimator that rejects the data leaves nothing behind.
        t0 = time.perf_counter()
        try:
            est.fit(train_df[data.features], train_df[data.target])
        except (ValueError, TypeError) as exc:
            raise EstimatorError(
                f"estimator {spec.estimator!r} failed to fit on {data.source!r}: {exc}"
            ) from exc
        fit_seconds = time.perf_counter() - t0
    airflow = airflow or {}
    run_tags = {
        T.RUN_KIND: "train",
        T.CACHE_KEY: key,
        T.DATASET_DIGEST: data.digest,
        T.DATASET_SOURCE: data.source,
        T.DATASET_ROWS: str(data.rows),
        T.ESTIMATOR: spec.estimator,
        T.PACKAGE_VERSION: __version__,
        "saga.model_name": spec.model_name,
        **{f"saga.airflow.{k}": v for k, v in airflow.items() if v is not None},
    }
    if airflow.get("dag_file_hash"):
        run_tags[T.DAG_FILE_HASH] = airflow["dag_file_hash"]
    run_name = f"train-{airflow.get('run_id', 'manual')}"[:250]
    run = create_run(client, experiment_id, run_name=run_name, tags=run_tags)  # closes earlier tries' orphans
    run_id = run.info.run_id
    with ended_on_error(client, run_id):  # FAILED on error, KILLED when interrupted
        from mlflow.entities import Param

        client.log_batch(run_id, params=[Param(k, v) for k, v in _flatten_params(spec).items()])
        _log_dataset(client, run_id, train_df, data, "training")
        _log_dataset(client, run_id, test_df, data, "evaluation")
        if cached is not None:
            source_run = cached.data.tags.get(T.CACHE_SOURCE_RUN) or cached.info.run_id
            model_uri = cached.data.tags[T.MODEL_URI]
            say(
                "Cache HIT for key %s: reusing model %s from run %s (no training)", key, model_uri, source_run
            )
            frames = {"holdout": test_df}
            client.set_tag(run_id, T.CACHE_HIT, "true")
            client.set_tag(run_id, T.CACHE_SOURCE_RUN, source_run)
        else:
            model_uri = log_sklearn_model(
                client,
                experiment_id=experiment_id,
                run_id=run_id,
                model=est,
                input_example=train_df[data.features],
                params=_flatten_params(spec),
                tags={T.DATASET_DIGEST: data.digest},
            )
            client.set_tag(run_id, T.CACHE_HIT, "false")
            ref = train_df[data.features]
            if len(ref) > REFERENCE_SAMPLE_ROWS:
                ref = ref.sample(REFERENCE_SAMPLE_ROWS, random_state=spec.random_state)
            frames = {"holdout": test_df, "reference": ref}
        client.log_metric(run_id, "fit_seconds", fit_seconds)
        uris = _log_frames(client, run_id, frames)
        if "reference" in frames:  # issue 5: the baseline's summary statistics (saga.baseline.stats_uri)
            from airflow_saga.core.baselines import log_reference_stats

            uris["reference_stats"] = log_reference_stats(client, run_id, frames["reference"])
        if cached is not None:
            uris["reference"] = (
                cached.data.tags.get(T.BASELINE_URI) or f"runs:/{source_run}/data/reference.parquet"
            )
        client.set_tag(run_id, T.MODEL_URI, model_uri)
        client.set_tag(run_id, T.BASELINE_URI, uris["reference"])
        client.set_terminated(run_id, "FINISHED")
    return {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_uri": model_uri,
        "model_name": spec.model_name,
        "task": task,
        "target": data.target,
        "features": data.features,
        "estimator": spec.estimator,
        "dataset": data.describe(),
        "holdout_uri": uris["holdout"],
        "reference_uri": uris["reference"],
        "reference_stats_uri": uris.get("reference_stats"),
        "cache_key": key,
        "cache_hit": cached is not None,
        "cache_source_run_id": (cached.data.tags.get(T.CACHE_SOURCE_RUN) or cached.info.run_id)
        if cached
        else None,
        "fit_seconds": round(fit_seconds, 4),
    }
