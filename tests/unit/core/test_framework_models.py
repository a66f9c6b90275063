"""Framework models outside scikit-learn's type system: what the monitors ask of them must not raise."""

from __future__ import annotations

import mlflow.pyfunc
import pytest

from airflow_saga.core.estimation import task_of


class _Rules(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return (model_input["x"] > 0).astype(int).to_numpy()


def test_task_of_a_python_model_is_the_fallback():
    """sklearn's tag lookup raises on a PythonModel; the task then comes from the predictions."""
    assert task_of(_Rules(), "classification") == "classification"
    assert task_of(_Rules(), "regression") == "regression"
    assert task_of(object(), "regression") == "regression"


@pytest.mark.parametrize(
    ("make", "task"),
    [
        (lambda: __import__("xgboost").XGBClassifier(n_estimators=2), "classification"),
        (lambda: __import__("lightgbm").LGBMRegressor(n_estimators=2), "regression"),
    ],
)
def test_task_of_sklearn_api_wrappers_is_their_own(make, task):
    other = "regression" if task == "classification" else "classification"
    assert task_of(make(), other) == task
