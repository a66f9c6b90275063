"""The large-request lane's settings are range-checked at start, naming the key and value; the O(1) row
counts that route a request to the lane read every MLflow format and V2 tensors without touching rows."""

from __future__ import annotations

import pytest

from airflow_saga.core.errors import ServingError
from airflow_saga.serving import config, protocol, v2


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"large_body_bytes": 0}, "large_body_bytes must be an integer >= 1, got 0"),
        ({"large_rows": -5}, "large_rows must be an integer >= 1, got -5"),
        ({"large_rows": 2.5}, "large_rows must be an integer >= 1, got 2.5"),
        ({"large_workers": -1}, "large_workers must be an integer >= 0, got -1"),
        ({"large_workers": 65}, "large_workers must be at most 64, got 65"),
        ({"large_max_pending": 0}, "large_max_pending must be an integer >= 1, got 0"),
        ({"large_max_pending": "2"}, "large_max_pending must be an integer >= 1, got '2'"),
    ],
)
def test_out_of_range_large_request_config_is_refused(kwargs, needle):
    with pytest.raises(ServingError) as err:
        config.GatewayConfig(model="m", **kwargs)
    assert needle in str(err.value)


def test_the_cli_flags_reach_the_config():
    cfg = config.build(
        None, model="m", large_body_bytes=10, large_rows=20, large_workers=0, large_max_pending=3
    )
    assert (cfg.large_body_bytes, cfg.large_rows, cfg.large_workers, cfg.large_max_pending) == (10, 20, 0, 3)


@pytest.mark.parametrize(
    ("payload", "n"),
    [
        ({"dataframe_split": {"columns": ["a"], "data": [[1], [2], [3]]}}, 3),
        ({"dataframe_split": {"columns": ["a"], "data": "nope"}}, 0),
        ({"dataframe_records": [{"a": 1}, {"a": 2}]}, 2),
        ({"instances": [[1], [2], [3], [4]]}, 4),
        ({"inputs": {"a": [1, 2, 3, 4, 5], "b": [1, 2, 3, 4, 5]}}, 5),
        ({"inputs": {"a": 1}}, 1),
    ],
)
def test_row_count_of_every_mlflow_format(payload, n):
    assert protocol.row_count(payload) == n


def test_row_count_of_v2_tensors():
    assert v2.row_count({"inputs": [{"name": "x", "shape": [7, 30], "datatype": "FP64", "data": []}]}) == 7
    assert v2.row_count({"inputs": [{"name": "a", "shape": [9], "datatype": "FP64", "data": []}]}) == 9
    assert v2.row_count({"inputs": [{"name": "a", "shape": "x"}]}) == 0  # the parser names the error later
    assert v2.row_count({"inputs": ["not a tensor"]}) == 0
