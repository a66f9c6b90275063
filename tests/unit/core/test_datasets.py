"""Data loading and validation errors: each names the field and the value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_saga.core import datasets
from airflow_saga.core.errors import DataError


def test_bundled_sklearn_dataset_loads_with_target():
    data = datasets.load_dataset("sklearn:breast_cancer", "target")
    assert data.rows == 569 and "target" not in data.features and len(data.features) == 30
    assert len(data.digest) == 16


def test_unknown_bundled_dataset(tmp_path):
    with pytest.raises(DataError, match="sklearn:nope"):
        datasets.load_dataset("sklearn:nope", "target")


def test_missing_target_column_names_it_and_lists_columns(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"a": [1, 2], "b": [3, 4]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"target column 'label' is not in .*columns are: a, b"):
        datasets.load_dataset(str(path), "label")


def test_empty_csv_header_only(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("a,b,target\n")
    with pytest.raises(DataError, match="is empty: 0 rows"):
        datasets.load_dataset(str(path), "target")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.csv"
    path.write_text("")
    with pytest.raises(DataError, match="is empty"):
        datasets.load_dataset(str(path), "target")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        datasets.load_dataset(str(tmp_path / "nope.parquet"), "target")


def test_unsupported_format(tmp_path):
    with pytest.raises(DataError, match="unsupported format"):
        datasets.load_dataset(str(tmp_path / "x.xlsx"), "target")


def test_parquet_roundtrip(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "target": [0, 1, 0, 1]}).to_parquet(path)
    assert datasets.load_dataset(str(path), "target").rows == 4


def test_nan_and_inf_are_refused_with_columns_and_counts():
    frame = pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [np.inf, 1.0, 2.0], "target": [0, 1, 0]})
    with pytest.raises(DataError, match=r"'a': 1 NaN.*|'b': 1 inf") as exc:
        datasets.check_features(frame, "target", allow_nan=False)
    assert "'a': 1 NaN value(s)" in str(exc.value) and "'b': 1 inf value(s)" in str(exc.value)


def test_nan_allowed_for_estimators_that_take_it_but_inf_never():
    frame = pd.DataFrame({"a": [1.0, np.nan, 3.0], "target": [0, 1, 0]})
    datasets.check_features(frame, "target", allow_nan=True)
    frame.loc[0, "a"] = -np.inf
    with pytest.raises(DataError, match="inf"):
        datasets.check_features(frame, "target", allow_nan=True)


def test_split_rejects_bad_test_size():
    data = datasets.load_dataset("sklearn:iris", "target")
    with pytest.raises(DataError, match="test_size"):
        datasets.split(data, test_size=1.5, random_state=0, stratify=True)
