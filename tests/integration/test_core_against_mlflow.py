"""Core training/registration against a real MLflow server: errors name the value, nothing is left behind."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from airflow_saga.core import tags as T
from airflow_saga.core.errors import DataError, EstimatorError, MlflowUnreachableError
from airflow_saga.core.mlflow_client import MlflowSettings, build_client
from airflow_saga.core.registry import register_version
from airflow_saga.core.training import TrainSpec, train

pytestmark = pytest.mark.integration


def _spec(model_name, **kw):
    base = {
        "model_name": model_name,
        "estimator": "sklearn.linear_model.LogisticRegression",
        "data_source": "sklearn:breast_cancer",
        "target": "target",
        "hyperparameters": {"max_iter": 5000},
    }
    return TrainSpec(**{**base, **kw})


def _runs(client, model_name):
    exp = client.get_experiment_by_name(f"saga/{model_name}")
    return [] if exp is None else client.search_runs([exp.experiment_id])


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"target": "nope"}, DataError, "target column 'nope'"),
        ({"estimator": "sklearn.nothing.Here"}, EstimatorError, "sklearn.nothing.Here"),
        ({"hyperparameters": {"bogus": 1}}, EstimatorError, "bogus"),
    ],
)
def test_bad_input_creates_no_run(mlflow_client, model_name, kw, error, match):
    with pytest.raises(error, match=match):
        train(mlflow_client, _spec(model_name, **kw))
    assert _runs(mlflow_client, model_name) == []


def test_nan_features_refused_before_any_run(mlflow_client, model_name, tmp_path):
    path = tmp_path / "nan.csv"
    pd.DataFrame({"a": [1.0, np.nan, 2.0, 3.0] * 5, "target": [0, 1] * 10}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"'a': 5 NaN value\(s\)"):
        train(mlflow_client, _spec(model_name, data_source=str(path)))
    assert _runs(mlflow_client, model_name) == []
    # an estimator pipeline with an imputer takes the same data
    out = train(
        mlflow_client,
        TrainSpec(
            **{
                **_spec(model_name, data_source=str(path)).__dict__,
                "estimator": "tests.support.factories:scaled_logreg",
                "hyperparameters": {},
                "allowed_prefixes": ("tests.support.",),
            }
        ),
    )
    assert out["model_uri"].startswith("models:/")


def test_changed_content_at_same_path_is_a_cache_miss(mlflow_client, model_name, tmp_path):
    path = tmp_path / "d.csv"
    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7, "target": [0, 1] * 20})
    frame.to_csv(path, index=False)
    spec = _spec(model_name, data_source=str(path), cache_enabled=True)
    first = train(mlflow_client, spec)
    assert train(mlflow_client, spec)["cache_hit"] is True
    frame.loc[39, "a"] = 1000.0
    frame.to_csv(path, index=False)
    third = train(mlflow_client, spec)
    assert third["cache_hit"] is False and third["dataset"]["digest"] != first["dataset"]["digest"]


def test_expired_cache_entries_are_misses(mlflow_client, model_name):
    spec = _spec(model_name, cache_enabled=True, cache_expire_after="PT1S")
    train(mlflow_client, spec)
    time.sleep(1.5)
    assert train(mlflow_client, spec)["cache_hit"] is False


def test_register_is_idempotent_under_retries_and_races(mlflow_client, model_name):
    out = train(mlflow_client, _spec(model_name))
    results = []

    def go():
        mv, created = register_version(
            mlflow_client, model_name, model_uri=out["model_uri"], run_id=out["run_id"], tags={}
        )
        results.append((str(mv.version), created))

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    go()  # and a later retry
    versions = mlflow_client.search_model_versions(f"name='{model_name}'")
    assert [v.version for v in versions] == [results[0][0]] or len(versions) == 1
    assert {v for v, _ in results} == {str(versions[0].version)}
    assert versions[0].tags[T.APPROVAL_STATUS] == T.PENDING


def test_unreachable_mlflow_fails_fast_naming_the_uri():
    from tests.support.procs import free_port

    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(MlflowUnreachableError, match=url):
        build_client(MlflowSettings(tracking_uri=url))
    assert time.monotonic() - t0 < 30


def test_silent_mlflow_is_bounded_by_timeouts_not_minutes_of_retries():
    """A server that accepts connections and never answers: every client call is bounded too."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        settings = MlflowSettings(tracking_uri=url, connect_timeout=1.0, call_timeout=2.0, max_retries=1)
        t0 = time.monotonic()
        with pytest.raises(MlflowUnreachableError, match=url):
            build_client(settings)
        client = build_client(settings, check=False)
        with pytest.raises(MlflowUnreachableError, match=url):
            client.search_experiments(max_results=1)
        assert time.monotonic() - t0 < 30
    finally:
        sock.close()
