"""Logging and loading MLflow models through an explicit client, never through MLflow's global state.

``mlflow.sklearn.log_model`` and ``load_model`` resolve the server from the process-wide tracking URI, and
``mlflow.set_tracking_uri`` writes ``MLFLOW_TRACKING_URI`` into ``os.environ``. Airflow workers serve many
tasks and possibly many servers, so we do what ``Model.log`` does, step by step, with the client we were
given: create a LoggedModel, save the flavor locally, upload, finalize.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from airflow_saga.core.mlflow_client import MlflowSettings


def pinned_requirements() -> list[str]:
    """Exact versions of what an sklearn model needs: skips MLflow's ~11 s requirement inference."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "pandas", "numpy", "cloudpickle")]


def log_sklearn_model(
    client: MlflowClient,
    *,
    experiment_id: str,
    run_id: str,
    model: Any,
    input_example: pd.DataFrame,
    name: str = "model",
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Log ``model`` as a LoggedModel linked to ``run_id``; return its ``models:/m-...`` URI.

    Serialised with cloudpickle so every estimator (trees included) loads without a skops trusted-types
    list; the model is produced by this pipeline, so the pickle is trusted.
    """
    import mlflow.sklearn
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    logged = client.create_logged_model(
        experiment_id=experiment_id,
        name=name,
        source_run_id=run_id,
        params={k: str(v)[:6000] for k, v in (params or {}).items()},
        tags=tags,
        model_type="sklearn",
    )
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        example = input_example.head(5)
        signature = infer_signature(example, model.predict(example))
        mlflow_model = Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            model_id=logged.model_id,
        )
        with tempfile.TemporaryDirectory(prefix="saga-model-") as tmp:
            local = Path(tmp) / "model"
            mlflow.sklearn.save_model(
                model,
                str(local),
                mlflow_model=mlflow_model,
                signature=signature,
                input_example=example,
                pip_requirements=pinned_requirements(),
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            )
            client.log_model_artifacts(logged.model_id, str(local))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except BaseException as exc:
        from airflow_saga.core.runs import best_effort

        # briefly: MLflow may be the failure
        what, failed = f"mark model {logged.model_id} FAILED", (logged.model_id, LoggedModelStatus.FAILED)
        best_effort(client, exc, what, client.finalize_logged_model, *failed)
        raise
    return f"models:/{logged.model_id}"


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
