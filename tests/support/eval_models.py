"""Real models of several MLflow flavours and real data for the evaluation tests.

``site_data`` is breast_cancer (real measurements) with a ``site`` column: 10% of rows come from site C.
``site_models`` fits a champion (a regularised logistic regression) and a candidate trained on data whose
site-C labels were corrupted: overall the candidate is within 0.01 F1 of the champion, on site C it is
about 0.1 worse. Exactly the regression an overall metric hides.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc

from tests.support.models import _experiment_id as experiment_id

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient


@functools.cache
def site_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout) frames: 30 float features, ``site_c`` (a feature), ``site`` (text) and ``target``."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer(as_frame=True)
    frame = data.data.astype(float)
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    site = np.random.default_rng(7).choice(["A", "B", "C"], size=len(frame), p=[0.45, 0.45, 0.10])
    frame["site_c"] = (site == "C").astype(float)
    frame["site"] = site
    frame["target"] = data.target.to_numpy()
    train, holdout = train_test_split(frame, test_size=0.5, random_state=0, stratify=frame["target"])
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def features(with_site: bool) -> list[str]:
    train, _ = site_data()
    drop = {"site", "target"} | (set() if with_site else {"site_c"})
    return [c for c in train.columns if c not in drop]


@functools.cache
def site_models() -> tuple[Any, Any]:
    """(champion, candidate) fitted estimators; see the module docstring."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, _ = site_data()
    champ = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    champ.fit(train[features(False)], train["target"])
    corrupted = train["target"].where(train["site"] != "C", 1 - train["target"])
    cand = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    cand.fit(train[features(True)], corrupted)
    return champ, cand


def log_sklearn(client: MlflowClient, model: Any, X: pd.DataFrame) -> dict[str, str]:
    """Log ``model`` as a LoggedModel of a finished run (as a notebook elsewhere would); its URIs."""
    from airflow_saga.core.models import log_model

    exp = experiment_id(client)
    run = client.create_run(exp, run_name="trained-elsewhere")
    uri = log_model(client, model, experiment_id=exp, run_id=run.info.run_id, input_example=X).model_uri
    client.set_terminated(run.info.run_id)
    return {"model_uri": uri, "run_id": run.info.run_id, "model_id": uri.removeprefix("models:/")}


def log_dir(client: MlflowClient, local_dir: str, *, as_run_artifact: bool = False) -> dict[str, str]:
    """Upload a saved MLflow model directory: as a LoggedModel, or as plain run artifacts (MLflow 2 style)."""
    exp = experiment_id(client)
    run = client.create_run(exp, run_name="trained-elsewhere")
    run_id = run.info.run_id
    if as_run_artifact:
        client.log_artifacts(run_id, local_dir, artifact_path="model")
        client.set_terminated(run_id)
        return {"model_uri": f"runs:/{run_id}/model", "run_id": run_id, "model_id": ""}
    logged = client.create_logged_model(exp, name="model", source_run_id=run_id)
    client.log_model_artifacts(logged.model_id, local_dir)
    client.finalize_logged_model(logged.model_id, "READY")
    client.set_terminated(run_id)
    return {"model_uri": f"models:/{logged.model_id}", "run_id": run_id, "model_id": logged.model_id}


def register(client: MlflowClient, name: str, logged: dict[str, str], aliases: tuple[str, ...] = ()) -> str:
    try:
        client.create_registered_model(name)
    except Exception as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(
        name, source=logged["model_uri"], run_id=logged["run_id"], model_id=logged["model_id"] or None
    )
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(mv.version))
    return str(mv.version)


with warnings.catch_warnings():  # MLflow nags about predict() type hints at class creation
    warnings.simplefilter("ignore")

    class RuleScorer(mlflow.pyfunc.PythonModel):
        """A rule-based classifier with no scikit-learn: 1 when a feature exceeds a threshold (its params)."""

        def __init__(self, feature: str = "worst_area", threshold: float = 880.0) -> None:
            self.feature = feature
            self.threshold = threshold

        def predict(self, context, model_input, params=None):
            return (model_input[self.feature] <= self.threshold).astype(int).to_numpy()


def save_pyfunc(model: Any, X: pd.DataFrame, dst: str) -> str:
    """Save a PythonModel (pickled by value, so loading needs no tests package) with a signature."""
    import cloudpickle
    from mlflow.models import infer_signature

    import tests.support.eval_models as me

    cloudpickle.register_pickle_by_value(me)
    try:
        path = str(Path(dst) / "model")
        signature = infer_signature(X.head(5), model.predict(None, X.head(5)))
        mlflow.pyfunc.save_model(path, python_model=model, signature=signature, pip_requirements=["mlflow"])
    finally:
        cloudpickle.unregister_pickle_by_value(me)
    return path


def save_xgboost_booster(X: pd.DataFrame, y: Any, dst: str) -> str:
    """A native XGBoost Booster (binary:logistic), saved with MLflow's xgboost flavour."""
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature

    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0},
        xgb.DMatrix(X, label=y),
        num_boost_round=20,
    )
    path = str(Path(dst) / "model")
    signature = infer_signature(X.head(5), booster.predict(xgb.DMatrix(X.head(5))))
    mlflow.xgboost.save_model(booster, path, signature=signature, pip_requirements=["xgboost"])
    return path


def tmpdir() -> str:
    return tempfile.mkdtemp(prefix="saga-eval-test-")
