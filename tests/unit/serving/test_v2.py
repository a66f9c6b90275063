# ruff: noqa: E501  (one line per case reads better than wrapped tensors)
"""V2 tensors -> the MLflow table: both layouts, flat and nested data, binary data, every datatype check."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from airflow_saga.serving import v2
from airflow_saga.serving.models import LoadedModel
from airflow_saga.serving.protocol import BadRequest, InputSpec, parse

SPEC = InputSpec(("a", "b", "c"), ("double", "double", "long"), None)
MODEL = LoadedModel("champion", "1", None, SPEC, None)
DOUBLES = LoadedModel("champion", "1", None, InputSpec(("a", "b", "c"), ("double",) * 3, None), None)
MIXED = LoadedModel("m", "2", None, InputSpec(("s", "f"), ("string", "boolean"), None), None)


def _table(body: dict, model: LoadedModel = MODEL, tail: bytes = b"", header: bytes | None = None):
    raw = json.dumps(body).encode()
    doc, rest, request = v2.parse_request(raw + tail, str(len(raw)).encode() if header else None)
    return v2.to_table(doc, rest, model)["dataframe_split"], request


@pytest.mark.parametrize(
    "inputs",
    [
        [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1.0, 2, 3, 4, 5.5, 6]}],
        [{"name": "x", "shape": [2, 3], "datatype": "INT64", "data": [[1, 2, 3], [4, 5, 6]]}],
        [
            {"name": "c", "shape": [2], "datatype": "INT32", "data": [3, 6]},
            {"name": "a", "shape": [2, 1], "datatype": "FP32", "data": [[1.0], [4]]},
            {"name": "b", "shape": [2, 1], "datatype": "FP64", "data": [2, 5.5]},
        ],
    ],
)
def test_layouts_become_the_same_table(inputs):
    model = DOUBLES if inputs[0]["datatype"] == "FP64" else MODEL  # an FP64 matrix cannot feed a long column
    table, _ = _table({"inputs": inputs}, model)
    batch = parse({"dataframe_split": table}, SPEC)
    assert batch.columns == ["a", "b", "c"]
    assert batch.array.tolist()[0] == [1.0, 2.0, 3.0]
    assert batch.array.shape == (2, 3)


def test_binary_extension_and_bytes():
    raw = struct.pack("<6d", 1, 2, 3, 4, 5, 6)
    body = {"id": "r-1", "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64",
                                     "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
    table, req = _table(body, DOUBLES, tail=raw, header=True)
    assert table["data"] == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]] and req.id == "r-1"
    strings = b"".join(struct.pack("<I", len(s)) + s for s in (b"hi", "\u00e9".encode()))
    body = {"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(strings)}},
                       {"name": "f", "shape": [2], "datatype": "BOOL", "data": [True, False]}]}  # fmt: skip
    table, _ = _table(body, MIXED, tail=strings, header=True)
    assert table == {"columns": ["s", "f"], "data": [["hi", True], ["\u00e9", False]]}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "int64", "data": [1, 2, 3]}]}, None),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FLOAT64", "data": [1, 2, 3]}]}, "unknown datatype"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "BOOL", "data": [1, 2, 3]}]}, "is BOOL but element 0"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, None, 3]}]}, "element 1 is NoneType"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP16", "data": [1, 2, 3]}]}, "only accepted as binary"),
        ({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3]}]}, "needs 6 elements"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [[1, 2], [3]]}]}, "does not match"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": 5}]}, "must be a list"),
        ({"inputs": [{"name": "x", "shape": [10**12, 3], "datatype": "FP64", "data": [1]}]}, "more than"),
        ({"inputs": [{"name": "x", "shape": [1.5, 3], "datatype": "FP64", "data": [1]}]}, "non-negative integers"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3], "evil": 1}]}, "unknown field"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                     {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]}, "given twice"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                     {"name": "c", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}, "has 2 rows"),
        ({"inputs": [{"name": "c", "shape": [1], "datatype": "FP64", "data": [1.0]},
                     {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]}, "column 'c' is long"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}], "parameters": []},
         "parameters must be an object"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}], "id": 5}, "request id"),
        ({"inputs": {"x": 1}}, '"inputs" must be a non-empty list'),
        ({"inputs": [1]}, "tensor object"),
        ({"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}, '"name"'),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64"}]}, "has no data"),
    ],
)  # fmt: skip
def test_bad_tensors_are_400s_naming_the_problem(body, needle):
    if needle is None:  # lower-case datatypes are accepted, as KServe's client upper-cases them
        _table(body)
        return
    with pytest.raises(BadRequest) as err:
        _table(body)
    assert err.value.status == 400 and needle in err.value.message, err.value.message


def test_binary_sizes_are_checked():
    raw = struct.pack("<3d", 1, 2, 3)
    body = {
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]
    }
    with pytest.raises(BadRequest, match="16 binary bytes but shape needs 3 x 8"):
        _table(body, DOUBLES, tail=raw[:16], header=True)
    with pytest.raises(BadRequest, match="not claimed by any tensor"):
        body["inputs"][0]["parameters"]["binary_data_size"] = 24
        _table(body, DOUBLES, tail=raw + b"\x00", header=True)
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        v2.parse_request(b"{}", b"500")


def test_deep_nesting_is_refused_without_recursion():
    deep: list = [1.0]
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(BadRequest, match="does not match shape"):
        v2.to_table(
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": deep}]}, b"", MODEL
        )


def test_outputs_and_response_shape():
    req = v2.Request("r", None, {})
    assert v2.response("m", "1", req, "r", [0, 1], ["predict"])["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 1]}
    ]
    probs = v2.outputs([[0.25, 0.75], [1.0, 0.0]], ["predict"])
    assert probs == [{"name": "predict", "datatype": "FP64", "shape": [2, 2], "data": [0.25, 0.75, 1.0, 0.0]}]
    records = v2.outputs([{"label": "a", "p": 0.5}, {"label": "b", "p": 1}], ["predict"])
    assert [o["name"] for o in records] == ["label", "p"] and records[0]["datatype"] == "BYTES"
    with pytest.raises(BadRequest, match=r"unknown output\(s\) \['x'\]"):
        v2.response("m", "1", v2.Request(None, ["x"], {}), "i", [1], ["predict"])
    assert np.array(records[1]["data"]).dtype.kind == "f"
