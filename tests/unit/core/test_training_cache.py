"""Cache keys, expiry and estimator resolution: pure functions, no MLflow."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_saga.core import datasets
from airflow_saga.core.errors import DataError, EstimatorError
from airflow_saga.core.training import TrainSpec, build_estimator, cache_key, parse_expiry, resolve_estimator

SPEC = TrainSpec(
    model_name="m",
    estimator="sklearn.linear_model.LogisticRegression",
    data_source="/data/a.csv",
    target="y",
    hyperparameters={"C": 1.0},
)


def _frame(values):
    return pd.DataFrame({"x": values, "y": [0, 1] * (len(values) // 2)})


def test_same_content_same_key_even_from_another_path():
    d1 = datasets.content_digest(_frame([1.0, 2.0, 3.0, 4.0]))
    d2 = datasets.content_digest(_frame([1.0, 2.0, 3.0, 4.0]))
    spec2 = TrainSpec(**{**SPEC.__dict__, "data_source": "/elsewhere/b.parquet"})
    assert cache_key(SPEC, d1) == cache_key(spec2, d2)


def test_changed_content_at_same_path_is_a_different_key():
    d1 = datasets.content_digest(_frame([1.0, 2.0, 3.0, 4.0]))
    d2 = datasets.content_digest(_frame([1.0, 2.0, 3.0, 4.5]))
    assert d1 != d2
    assert cache_key(SPEC, d1) != cache_key(SPEC, d2)


def test_digest_sees_a_change_beyond_any_sample():
    big = pd.DataFrame({"x": range(200_000), "y": [0, 1] * 100_000})
    changed = big.copy()
    changed.loc[199_999, "x"] = -1
    assert datasets.content_digest(big) != datasets.content_digest(changed)


def test_digest_ignores_index_labels_but_not_column_names():
    f = _frame([1.0, 2.0])
    assert datasets.content_digest(f) == datasets.content_digest(f.set_axis([10, 11]))
    assert datasets.content_digest(f) != datasets.content_digest(f.rename(columns={"x": "z"}))


@pytest.mark.parametrize(
    "change",
    [
        {"estimator": "sklearn.ensemble.RandomForestClassifier"},
        {"hyperparameters": {"C": 2.0}},
        {"target": "z"},
        {"test_size": 0.3},
        {"random_state": 7},
    ],
)
def test_key_covers_spec(change):
    other = TrainSpec(**{**SPEC.__dict__, **change})
    assert cache_key(SPEC, "abc") != cache_key(other, "abc")


def test_key_covers_package_version(monkeypatch):
    import airflow_saga.core.training as training

    before = cache_key(SPEC, "abc")
    monkeypatch.setattr(training, "__version__", "9.9.9")
    assert cache_key(SPEC, "abc") != before


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("P30D", 30 * 86400),
        ("PT6H", 6 * 3600),
        ("P1DT1H30M", 86400 + 5400),
        ("PT0.5S", 0.5),
        ("P2W", 14 * 86400),
        (3600, 3600.0),
        ("120", 120.0),
        (None, None),
    ],
)
def test_parse_expiry(text, seconds):
    assert parse_expiry(text) == seconds


@pytest.mark.parametrize("bad", ["30 days", "P", "PT", "P0D", -5, "1y"])
def test_parse_expiry_rejects(bad):
    with pytest.raises(DataError, match="cache_expire_after"):
        parse_expiry(bad)


def test_unknown_estimator_path_is_named():
    with pytest.raises(EstimatorError, match=r"sklearn\.linear_model\.NoSuchModel"):
        resolve_estimator("sklearn.linear_model.NoSuchModel")


def test_estimator_outside_allowed_prefixes_is_refused():
    with pytest.raises(EstimatorError, match="allowed prefixes"):
        resolve_estimator("os.system")


def test_estimator_path_must_look_like_an_import_path():
    with pytest.raises(EstimatorError, match="not an import path"):
        resolve_estimator("sklearn.linear_model.LogisticRegression(); import os")


def test_unknown_hyperparameter_is_named():
    with pytest.raises(EstimatorError, match="no_such_param"):
        build_estimator("sklearn.linear_model.LogisticRegression", {"no_such_param": 1})


def test_factory_callable_builds_a_pipeline_with_nested_params():
    est = build_estimator(
        "tests.support.factories:scaled_logreg", {"logisticregression__C": 0.5}, ("tests.support.",)
    )
    assert est.get_params()["logisticregression__C"] == 0.5
    rf = build_estimator("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 7})
    assert rf.n_estimators == 7
