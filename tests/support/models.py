"""Log and register small real models (sklearn breast_cancer, misbehaving pyfuncs) for tests/benchmarks.

Everything goes through an ``MlflowClient`` (LoggedModel API), never the fluent ``mlflow.start_run``, because
the fluent API needs ``mlflow.set_tracking_uri`` and that mutates process-wide state.
"""

from __future__ import annotations

import functools
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import mlflow.sklearn

from airflow_saga.core import tags

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

EXPERIMENT = "saga-test-models"
SKLEARN_REQ = "scikit-learn"


@functools.cache
def breast_cancer() -> tuple[pd.DataFrame, Any]:
    """Features as float64 (avoids MLflow's integer-schema hint) and the 0/1 target."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    return data.data.astype("float64"), data.target


def fit(kind: str = "logreg", seed: int = 0) -> Any:
    """A fitted estimator on breast_cancer; ``kind`` is ``logreg`` or ``tree``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    X, y = breast_cancer()
    if kind == "logreg":
        est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0 + seed))
    elif kind == "tree":
        est = DecisionTreeClassifier(max_depth=3 + seed, random_state=seed)
    else:
        raise ValueError(kind)
    return est.fit(X, y)


with warnings.catch_warnings():  # MLflow nags about predict() type hints at class creation
    warnings.simplefilter("ignore")

    class SlowOrFailingModel(mlflow.pyfunc.PythonModel):
        """A pyfunc that sleeps ``delay`` seconds and/or raises: the misbehaving shadow of benchmark (d)."""

        def __init__(self, delay: float = 0.0, fail: bool = False, value: int = 0) -> None:
            self.delay = delay
            self.fail = fail
            self.value = value

        def predict(self, context, model_input, params=None):
            if self.delay:
                time.sleep(self.delay)
            if self.fail:
                raise RuntimeError("shadow model exploded on purpose")
            return [self.value] * len(model_input)

    class HeldLargeModel(mlflow.pyfunc.PythonModel):
        """Answers ``value`` per row. A batch of more than ``big`` rows is held, with the GIL taken in
        long C calls (``sum(range(...))``, as a big decode does), until the file ``release`` exists; a
        batch whose first value is ``-999`` kills the scoring process (as an out-of-memory kill would).
        The pid of the process that scored a large batch is written to ``release + ".pid"``."""

        def __init__(self, release: str, big: int = 1000, value: int = 5) -> None:
            self.release = release
            self.big = big
            self.value = value

        def predict(self, context, model_input, params=None):
            import os

            if len(model_input) > self.big:
                if float(model_input.iloc[0, 0]) == -999:
                    os._exit(3)
                with open(self.release + ".pid", "w") as fh:  # which process scored it
                    fh.write(str(os.getpid()))
                while not os.path.exists(self.release):
                    sum(range(20_000_000))
            return [self.value] * len(model_input)

    class GatedLoadModel(mlflow.pyfunc.PythonModel):
        """``load_context`` waits until the file ``release`` exists: a model that takes long to load."""

        def __init__(self, release: str, value: int = 4) -> None:
            self.release = release
            self.value = value

        def load_context(self, context):
            import os

            while not os.path.exists(self.release):
                time.sleep(0.1)

        def predict(self, context, model_input, params=None):
            return [self.value] * len(model_input)

    class BrokenOnLoad(mlflow.pyfunc.PythonModel):
        """Registers fine, fails in ``load_context``: a promotion the gateway must refuse to swap in."""

        def load_context(self, context):
            raise RuntimeError("this model version cannot be loaded")

        def predict(self, context, model_input, params=None):
            return [0] * len(model_input)


def _experiment_id(client: MlflowClient) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(EXPERIMENT)
    except Exception:  # created concurrently by another test process
        return client.get_experiment_by_name(EXPERIMENT).experiment_id


def _register_dir(client: MlflowClient, name: str, local_dir: str, version_tags: dict[str, str]) -> str:
    exp_id = _experiment_id(client)
    run = client.create_run(exp_id)
    lm = client.create_logged_model(exp_id, name="model", source_run_id=run.info.run_id)
    client.log_model_artifacts(lm.model_id, local_dir)
    client.finalize_logged_model(lm.model_id, "READY")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(
        name, source=f"models:/{lm.model_id}", run_id=run.info.run_id, tags=version_tags, model_id=lm.model_id
    )
    return str(mv.version)


def _finish(client: MlflowClient, name: str, version: str, aliases: tuple[str, ...]) -> str:
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version)
    return version


def register_sklearn(
    client: MlflowClient,
    name: str,
    estimator: Any | None = None,
    aliases: tuple[str, ...] = (),
    approved: bool = True,
) -> str:
    """Save ``estimator`` (default: a LogisticRegression pipeline) as a new version of ``name``; return it."""
    from mlflow.models import infer_signature

    X, _ = breast_cancer()
    est = estimator if estimator is not None else fit()
    signature = infer_signature(X.head(5), est.predict(X.head(5)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        mlflow.sklearn.save_model(
            est,
            str(path),
            signature=signature,
            pip_requirements=[SKLEARN_REQ],
            serialization_format="cloudpickle",
        )
        version = _register_dir(
            client, name, str(path), {tags.APPROVAL_STATUS: tags.APPROVED if approved else tags.PENDING}
        )
    return _finish(client, name, version, aliases)


def register_estimator(
    client: MlflowClient, name: str, estimator: Any, example: pd.DataFrame, aliases: tuple[str, ...] = ()
) -> str:
    """Save any fitted sklearn-API ``estimator`` (signature from ``example``) as a new Approved version."""
    from mlflow.models import infer_signature

    signature = infer_signature(example, estimator.predict(example))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        mlflow.sklearn.save_model(
            estimator,
            str(path),
            signature=signature,
            pip_requirements=[SKLEARN_REQ],
            serialization_format="cloudpickle",
        )
        version = _register_dir(client, name, str(path), {tags.APPROVAL_STATUS: tags.APPROVED})
    return _finish(client, name, version, aliases)


def register_pyfunc(
    client: MlflowClient,
    name: str,
    python_model: mlflow.pyfunc.PythonModel,
    aliases: tuple[str, ...] = (),
    example: pd.DataFrame | None = None,
) -> str:
    """Save a custom pyfunc as a new version of ``name``; return it. Its signature is breast_cancer's, or
    that of the ``example`` frame."""
    import cloudpickle
    from mlflow.models import infer_signature

    import tests.support.models as me

    X, y = breast_cancer()
    if example is not None:
        signature = infer_signature(example, y.head(len(example)).to_numpy())
    else:
        signature = infer_signature(X.head(5), y.head(5).to_numpy())
    # Pickle by value so the serving process need not import tests.support.
    cloudpickle.register_pickle_by_value(me)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model"
            mlflow.pyfunc.save_model(
                str(path), python_model=python_model, signature=signature, pip_requirements=["mlflow"]
            )
            version = _register_dir(client, name, str(path), {tags.APPROVAL_STATUS: tags.APPROVED})
    finally:
        cloudpickle.unregister_pickle_by_value(me)
    return _finish(client, name, version, aliases)


def sample_rows(n: int = 1, start: int = 0) -> list[list[float]]:
    X, _ = breast_cancer()
    return X.iloc[start : start + n].to_numpy().tolist()


def columns() -> list[str]:
    X, _ = breast_cancer()
    return list(X.columns)
