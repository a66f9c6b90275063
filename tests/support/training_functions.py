"""Training functions for core tests of ``train_function`` (plain module functions, like a user's)."""

from __future__ import annotations

from typing import Any


def logreg(X, y, hyperparameters):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, **hyperparameters).fit(X, y)


def returns_none(X, y):
    return None


def returns_a_dict(X, y):
    return {"coef": [1, 2, 3]}


def returns_unfitted(X, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


class _BrokenPredict:
    def get_params(self, deep=True):
        return {}

    def fit(self, X, y):
        return self

    def predict(self, X):
        raise RuntimeError("predict exploded")


def returns_broken_predict(X, y):
    return _BrokenPredict()


def bad_metrics(X, y):
    from airflow_saga.core.training import TrainedModel

    return TrainedModel(logreg(X, y, {}), metrics={"auc": "high"})


def loads_its_own_data() -> Any:
    """No data_source: read the data here and say what was read."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from airflow_saga.core.training import TrainedModel

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    train, test = train_test_split(frame, test_size=0.2, random_state=1)
    model = logreg(train.drop(columns="target"), train["target"], {})
    return TrainedModel(
        model,
        train=train,
        target="target",
        holdout=test,
        source="https://analyst:hunter2@data.example/breast_cancer.parquet?token=abc",
        metrics={"train_accuracy": float(model.score(train.drop(columns="target"), train["target"]))},
    )


def city_column(X, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(X, y)
