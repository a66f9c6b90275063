"""``core.training.train_function`` against a real MLflow: bad returns leave nothing, own data, caching."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_saga.core import sources
from airflow_saga.core import tags as T
from airflow_saga.core.errors import DataError, EstimatorError
from airflow_saga.core.training import FunctionSpec, TrainSpec, train, train_function
from tests.support import training_functions as F

pytestmark = pytest.mark.integration


def _runs(client, model_name):
    exp = client.get_experiment_by_name(f"saga/{model_name}")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _spec(model_name, **kw):
    return FunctionSpec(
        **{"model_name": model_name, "data_source": "sklearn:breast_cancer", "target": "target", **kw}
    )


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (F.returns_none, r"training_functions:returns_none returned no model \(None\)"),
        (F.returns_a_dict, r"returned a builtins.dict \(\{'coef': \[1, 2, 3\]\}\), which is not a model"),
        (F.returns_unfitted, "returned an unfitted sklearn.linear_model._logistic.LogisticRegression"),
        (F.returns_broken_predict, r"predict\(\) failed on the input example .*predict exploded"),
        (F.bad_metrics, r"TrainedModel.metrics\['auc'\] must be a finite number, got 'high'"),
    ],
    ids=["none", "not-a-model", "unfitted", "predict-fails", "bad-metric"],
)
def test_a_function_that_returns_no_usable_model_leaves_nothing(mlflow_client, model_name, fn, match):
    with pytest.raises(EstimatorError, match=match):
        train_function(mlflow_client, fn, _spec(model_name))
    assert _runs(mlflow_client, model_name) == []


def test_missing_argument_is_named_before_anything_runs(mlflow_client, model_name):
    def needs_more(X, y, learning_rate):
        raise AssertionError("never called")

    with pytest.raises(EstimatorError, match="needs argument 'learning_rate'"):
        train_function(mlflow_client, needs_more, _spec(model_name))
    assert _runs(mlflow_client, model_name) == []


def test_string_column_the_estimator_cannot_take_is_named_before_any_run(mlflow_client, model_name, tmp_path):
    path = tmp_path / "cities.csv"
    pd.DataFrame(
        {"a": [0.1 * i for i in range(40)], "city": ["Paris", "Lyon"] * 20, "target": [0, 1] * 20}
    ).to_csv(path, index=False)
    with pytest.raises(EstimatorError, match=r"not numeric: 'city' \(object, e.g. '(Paris|Lyon)'\)"):
        train(
            mlflow_client,
            TrainSpec(
                model_name=model_name,
                estimator="sklearn.linear_model.LogisticRegression",
                data_source=str(path),
                target="target",
            ),
        )
    with pytest.raises(EstimatorError, match=r"city_column failed to fit, .*'city' \(object"):
        train_function(mlflow_client, F.city_column, _spec(model_name, data_source=str(path)))
    assert _runs(mlflow_client, model_name) == []


def test_function_loading_its_own_data(mlflow_client, model_name):
    out = train_function(mlflow_client, F.loads_its_own_data, FunctionSpec(model_name=model_name))
    assert out["origin"] == "trained" and out["flavor"] == "sklearn" and out["task"] == "classification"
    ds = out["dataset"]
    assert ds["source"] == "https://***@data.example/breast_cancer.parquet?***"
    assert ds["kind"] == "function" and ds["rows"] == 569 and out["holdout_uri"].endswith("holdout.parquet")
    run = mlflow_client.get_run(out["run_id"])
    assert run.data.metrics["train_accuracy"] > 0.9
    everything = json_dump(run.data.tags, run.data.params, out)
    assert "hunter2" not in everything and "token=abc" not in everything


def json_dump(*objs) -> str:
    import json

    return json.dumps(objs, default=str)


def test_function_cache_hits_on_same_code_and_data_and_misses_on_change(mlflow_client, model_name):
    first = train_function(mlflow_client, F.logreg, _spec(model_name, cache_enabled=True))
    second = train_function(mlflow_client, F.logreg, _spec(model_name, cache_enabled=True))
    assert first["cache_hit"] is False and second["cache_hit"] is True and second["origin"] == "cache"
    assert second["model_uri"] == first["model_uri"] and second["cache_source_run_id"] == first["run_id"]
    assert second["flavor"] == "sklearn" and second["estimator"] == first["estimator"]
    other = train_function(
        mlflow_client, F.logreg, _spec(model_name, cache_enabled=True, hyperparameters={"C": 0.3})
    )
    assert other["cache_hit"] is False
    tags = mlflow_client.get_run(second["run_id"]).data.tags
    assert tags[T.CACHE_HIT] == "true" and tags[T.ORIGIN] == "cache"


def test_callable_data_source_feeds_a_training_function(mlflow_client, model_name):
    spec = _spec(
        model_name,
        data_source={"callable": "tests.support.data_sources:small_frame", "kwargs": {"rows": 60}},
        allowed_source_prefixes=("tests.support.",),
    )
    out = train_function(mlflow_client, F.logreg, spec)
    expected = sources.load_source(spec.data_source, allowed_prefixes=("tests.support.",))
    assert out["dataset"]["digest"] == expected.digest and out["dataset"]["kind"] == "callable"
    with pytest.raises(DataError, match="returned list"):
        train_function(
            mlflow_client,
            F.logreg,
            _spec(
                model_name,
                data_source="tests.support.data_sources:not_a_frame",
                allowed_source_prefixes=("tests.",),
            ),
        )
