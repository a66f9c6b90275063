"""The scoring-protocol parser: every accepted shape and every bad input gives a precise 4xx."""

from __future__ import annotations

import json

import numpy as np
import pytest

from airflow_saga.serving.protocol import BadRequest, InputSpec, decode_body, jsonable, parse

COLS = ("a", "b", "c")
SPEC = InputSpec(COLS, ("double", "double", "long"), None)


def _parse(payload: dict) -> tuple[list, np.ndarray]:
    batch = parse(decode_body(json.dumps(payload).encode(), "application/json"), SPEC)
    return batch.rows, batch.array


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1.0, 2, 3], [4, 5.5, 6]]}},
        {"dataframe_split": {"columns": ["c", "a", "b"], "data": [[3, 1.0, 2], [6, 4, 5.5]]}},
        {"dataframe_split": {"data": [[1.0, 2, 3], [4, 5.5, 6]]}},
        {"dataframe_records": [{"a": 1.0, "b": 2, "c": 3}, {"c": 6, "b": 5.5, "a": 4}]},
        {"instances": [[1.0, 2, 3], [4, 5.5, 6]]},
        {"instances": [{"a": 1.0, "b": 2, "c": 3}, {"a": 4, "b": 5.5, "c": 6}]},
        {"inputs": {"a": [1.0, 4], "b": [2, 5.5], "c": [3, 6]}},
        {"inputs": [[1.0, 2, 3], [4, 5.5, 6]]},
    ],
)
def test_all_four_formats_give_the_same_matrix(payload):
    rows, array = _parse(payload)
    assert array.dtype == np.float64
    np.testing.assert_array_equal(array, [[1.0, 2, 3], [4, 5.5, 6]])
    assert rows == [[1.0, 2, 3], [4, 5.5, 6]]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{", 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (b"", 400, "empty request body"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"foo": 1}', 400, "exactly one of"),
        (b'{"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}', 400, "exactly one of"),
        (b'{"instances": [[1, 2]]}', 400, "has 2 values"),
        (b'{"instances": []}', 400, "non-empty"),
        (b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}', 400, "missing column(s) ['c']"),
        (b'{"dataframe_split": {"columns": ["a", "b", "x"], "data": [[1, 2, 3]]}}', 400, "missing column"),
        (b'{"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2]]}}', 400, "row 0 has 2 values"),
        (b'{"dataframe_split": "nope"}', 400, "dataframe_split must be"),
        (b'{"dataframe_records": [{"a": 1, "b": 2, "c": 3, "evil": 4}]}', 400, "unknown column(s) ['evil']"),
        (b'{"dataframe_records": [{"a": 1, "b": 2}]}', 400, "missing column 'c'"),
        (b'{"dataframe_records": [5]}', 400, "record 0 is a int"),
        (b'{"instances": [["x", 2, 3]]}', 400, "column 'a' row 0: expected double, got str"),
        (b'{"instances": [[1, null, 3]]}', 400, "column 'b' row 0: expected double, got NoneType"),
        (b'{"instances": [[1, true, 3]]}', 400, "column 'b' row 0: expected double, got bool"),
        (b'{"instances": [[1, 2, 3.5]]}', 400, "column 'c' row 0: expected long, got float"),
        (b'{"instances": [[1e999, 2, 3]]}', 400, "malformed JSON"),
        (b'{"inputs": {"a": [1, 2], "b": [1], "c": [1, 2]}}', 400, "column 'b' has 1 values"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_problem(body, status, needle):
    with pytest.raises(BadRequest) as err:
        parse(decode_body(body, "application/json"), SPEC)
    assert err.value.status == status
    assert needle in err.value.message, err.value.message
    assert json.loads(err.value.body())["message"] == err.value.message


def test_unsupported_content_type_is_415():
    with pytest.raises(BadRequest) as err:
        decode_body(b"x", "application/xml")
    assert err.value.status == 415


def test_csv_is_accepted_like_mlflow_models_serve():
    batch = parse(decode_body(b"c,a,b\n3,1.0,2\n", "text/csv"), SPEC)
    assert batch.rows == [[1.0, 2, 3]]


def test_jsonable_shapes():
    assert jsonable(np.array([1, 0])) == [1, 0]
    assert jsonable([np.int64(1), 2]) == [1, 2]
    import pandas as pd

    assert jsonable(pd.DataFrame({"p": [0.5]})) == [{"p": 0.5}]
