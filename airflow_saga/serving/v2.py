"""Open Inference Protocol (V2, the KServe / MLServer / Triton REST protocol) on the gateway.

A V2 request is turned into the same ``(columns, rows)`` table an MLflow ``dataframe_split`` request becomes,
and then goes through the very same validation (:func:`protocol.parse`), fast path, variants, shadow,
capture and feedback as ``/invocations``: a V2 client and an MLflow-protocol client get the same answers.

Two tensor layouts are accepted, as KServe's and MLServer's clients send them:

* one tensor per signature column, named after the column, shape ``[n]`` or ``[n, 1]``
  (MLServer's ``PandasCodec``);
* one 2-D tensor of shape ``[n, n_columns]``, any name, columns in signature order (MLServer's
  ``NumpyCodec``, KServe's ``InferInput`` from a matrix).

``data`` may be flat (row-major, as the spec requires) or nested; the binary tensor extension
(``Inference-Header-Content-Length``, the KServe client's default for ``set_data_from_numpy``) is accepted
for every datatype below. Datatypes: FP64, FP32, INT64, INT32, INT16, INT8, UINT8..UINT64, BOOL, BYTES.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_saga.serving.protocol import INFERENCE_ID_RE, BadRequest, decode_json_body, short_repr

if TYPE_CHECKING:
    from airflow_saga.serving.models import LoadedModel

INTS = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
FLOATS = {"FP16", "FP32", "FP64"}
DATATYPES = INTS | FLOATS | {"BOOL", "BYTES"}
# numpy dtype of each datatype in the binary extension (little-endian, as the extension specifies)
_BINARY = {
    "BOOL": "?", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "<u1",
    "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip
# MLflow column type -> the V2 datatypes a client may send for it
_ACCEPTS = {
    "double": INTS | FLOATS,
    "float": INTS | FLOATS,
    "long": INTS,
    "integer": INTS,
    "boolean": {"BOOL"},
    "string": {"BYTES"},
    "binary": {"BYTES"},
}
_TO_V2 = {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32", "boolean": "BOOL"}
MAX_DIMS = 8
MAX_ELEMENTS = 50_000_000


def datatype_of(mlflow_type: str | None) -> str:
    """The V2 datatype of an MLflow column type (strings, binaries, datetimes travel as BYTES)."""
    return _TO_V2.get(mlflow_type or "", "BYTES")


@dataclass
class Request:
    """What a V2 infer request asked for, besides its table."""

    id: str | None
    outputs: list[str] | None
    parameters: dict[str, Any]


# --- request ---------------------------------------------------------------------------------------------


def split_binary(body: bytes, header_length: bytes | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a request; without the extension header the whole body is JSON."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise BadRequest(f"bad Inference-Header-Content-Length {short_repr(header_length)}") from None
    if not 0 < n <= len(body):
        raise BadRequest(f"Inference-Header-Content-Length {n} does not fit a {len(body)}-byte body")
    return body[:n], body[n:]


def parse_request(body: bytes, header_length: bytes | None = None) -> tuple[dict[str, Any], bytes, Request]:
    """Decode and check the envelope; return (the decoded JSON, the binary tail, what was asked)."""
    head, tail = split_binary(body, header_length)
    if not head:
        raise BadRequest('empty request body; expected a V2 inference request {"inputs": [...]}')
    doc = decode_json_body(head)
    if not isinstance(doc, dict):
        raise BadRequest(f"a V2 inference request must be a JSON object, got {type(doc).__name__}")
    unknown = set(doc) - {"id", "inputs", "outputs", "parameters", "model_name", "model_version"}
    if unknown:
        raise BadRequest(f"unknown field(s) {sorted(unknown)} in the V2 inference request")
    rid = doc.get("id")
    if rid is not None and (not isinstance(rid, str) or not INFERENCE_ID_RE.fullmatch(rid)):
        raise BadRequest(f"request id must be 1-128 characters of [A-Za-z0-9._:-], got {short_repr(rid)}")
    params = _parameters(doc.get("parameters"), "request")
    outputs = doc.get("outputs")
    wanted: list[str] | None = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise BadRequest('"outputs" must be a list of objects with a "name"')
        for o in outputs:
            _parameters(o.get("parameters"), f"output {o['name']!r}")
        wanted = [o["name"] for o in outputs]
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('"inputs" must be a non-empty list of tensors {name, shape, datatype, data}')
    return doc, tail, Request(rid, wanted, params)


def row_count(doc: dict[str, Any]) -> int:
    """Rows a decoded V2 request claims (its first tensor's first dimension), in O(1); 0 when unclear."""
    first = doc["inputs"][0]
    shape = first.get("shape") if isinstance(first, dict) else None
    if isinstance(shape, list) and shape and type(shape[0]) is int:
        return shape[0]
    return 0


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where} parameters must be an object, got {type(value).__name__}")
    for k, v in value.items():
        if not isinstance(v, str | int | float | bool) and v is not None:
            raise BadRequest(f"{where} parameter {k!r} must be a string, number or boolean")
    return value


def _shape(t: dict[str, Any], name: str) -> list[int]:
    shape = t.get("shape")
    if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS:
        raise BadRequest(f"tensor {name!r}: shape must be a list of 1 to {MAX_DIMS} integers")
    for d in shape:
        if type(d) is not int or d < 0:
            raise BadRequest(f"tensor {name!r}: shape {short_repr(shape)} must hold non-negative integers")
    if math.prod(shape) > MAX_ELEMENTS:
        raise BadRequest(f"tensor {name!r}: shape {shape} has more than {MAX_ELEMENTS} elements")
    return shape


def _flatten(data: Any, name: str, shape: list[int]) -> list[Any]:
    """Row-major flat ``data``: flat already, or nested exactly as ``shape`` says (checked iteratively, so
    a deeply nested body cannot exhaust the stack)."""
    if not isinstance(data, list):
        raise BadRequest(f"tensor {name!r}: data must be a list, got {type(data).__name__}")
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [(data, 0)]
    while stack:
        items, depth = stack.pop()
        if not isinstance(items, list) or depth >= len(shape) or len(items) != shape[depth]:
            raise BadRequest(f"tensor {name!r}: nested data does not match shape {shape}")
        if depth == len(shape) - 1:
            if any(isinstance(v, list) for v in items):
                raise BadRequest(f"tensor {name!r}: nested data does not match shape {shape}")
            out.extend(items)
        else:
            stack.extend((v, depth + 1) for v in reversed(items))
    return out


def _binary(tail: bytes, offset: int, size: Any, datatype: str, n: int, name: str) -> tuple[list, int]:
    import numpy as np

    if type(size) is not int or size < 0 or offset + size > len(tail):
        raise BadRequest(f"tensor {name!r}: binary_data_size {short_repr(size)} does not fit the body")
    raw = tail[offset : offset + size]
    if datatype == "BYTES":
        values, i = [], 0
        while i < len(raw):
            if i + 4 > len(raw):
                raise BadRequest(f"tensor {name!r}: truncated BYTES element length")
            (k,) = struct.unpack_from("<I", raw, i)
            if i + 4 + k > len(raw):
                raise BadRequest(f"tensor {name!r}: truncated BYTES element")
            values.append(_text(raw[i + 4 : i + 4 + k], name))
            i += 4 + k
        return values, offset + size
    dtype = np.dtype(_BINARY[datatype])
    if size != n * dtype.itemsize:
        raise BadRequest(
            f"tensor {name!r}: {size} binary bytes but shape needs {n} x {dtype.itemsize} for {datatype}"
        )
    return np.frombuffer(raw, dtype=dtype).tolist(), offset + size


def _text(b: Any, name: str) -> str:
    if isinstance(b, str):
        return b
    try:
        return bytes(b).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"tensor {name!r}: BYTES element is not valid UTF-8") from None


def _check(values: list[Any], datatype: str, name: str) -> None:
    """Every value must be of the tensor's declared datatype (JSON has no FP32/INT32 distinction)."""
    if datatype in FLOATS:
        ok: Any = lambda v: type(v) is float or type(v) is int  # noqa: E731
        want = "numbers"
    elif datatype in INTS:
        ok = lambda v: type(v) is int  # noqa: E731
        want = "integers"
    elif datatype == "BOOL":
        ok = lambda v: type(v) is bool  # noqa: E731
        want = "booleans"
    else:
        ok = lambda v: type(v) is str  # noqa: E731
        want = "strings"
    for i, v in enumerate(values):
        if not ok(v):
            raise BadRequest(
                f"tensor {name!r} is {datatype} but element {i} is {type(v).__name__} {short_repr(v)}: "
                f"{datatype} data must be {want}"
            )


def _tensor(t: Any, tail: bytes, offset: int) -> tuple[str, list[int], str, list[Any], int]:
    if not isinstance(t, dict):
        raise BadRequest(f"every input must be a tensor object, got {type(t).__name__}")
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest('every input tensor needs a "name" string')
    unknown = set(t) - {"name", "shape", "datatype", "data", "parameters"}
    if unknown:
        raise BadRequest(f"tensor {name!r}: unknown field(s) {sorted(unknown)}")
    datatype = t.get("datatype")
    if not isinstance(datatype, str) or datatype.upper() not in DATATYPES:
        raise BadRequest(
            f"tensor {name!r}: unknown datatype {short_repr(datatype)}; one of {sorted(DATATYPES)}"
        )
    datatype = datatype.upper()
    shape = _shape(t, name)
    n = math.prod(shape)
    params = _parameters(t.get("parameters"), f"tensor {name!r}")
    if "binary_data_size" in params:
        if "data" in t:
            raise BadRequest(f"tensor {name!r} has both data and binary_data_size")
        values, offset = _binary(tail, offset, params["binary_data_size"], datatype, n, name)
    else:
        if "data" not in t:
            raise BadRequest(f"tensor {name!r} has no data")
        values = _flatten(t["data"], name, shape)
        if datatype == "FP16":
            raise BadRequest(f"tensor {name!r}: FP16 is only accepted as binary data")
    if len(values) != n:
        raise BadRequest(f"tensor {name!r}: shape {shape} needs {n} elements but data has {len(values)}")
    _check(values, datatype, name)
    return name, shape, datatype, values, offset


def to_table(doc: dict[str, Any], tail: bytes, model: LoadedModel) -> dict[str, Any]:
    """The request's tensors -> a ``dataframe_split`` payload for :func:`protocol.parse`."""
    spec = model.spec
    tensors = []
    offset = 0
    for t in doc["inputs"]:
        name, shape, datatype, values, offset = _tensor(t, tail, offset)
        tensors.append((name, shape, datatype, values))
    if offset != len(tail):
        raise BadRequest(f"{len(tail) - offset} bytes of binary data are not claimed by any tensor")
    cols = list(spec.columns) if spec.columns else None
    types = dict(zip(spec.columns, spec.types, strict=True)) if spec.columns and spec.types else {}
    if len(tensors) == 1 and (cols is None or tensors[0][0] not in types):
        name, shape, datatype, values = tensors[0]
        width = shape[1] if len(shape) == 2 else (1 if len(shape) == 1 else -1)
        if cols is None:
            raise BadRequest(
                f"tensor {name!r}: the model has no column signature, so tensors must be named after columns"
            )
        if width != len(cols):
            if len(tensors) == 1 and len(shape) == 2:
                raise BadRequest(
                    f"tensor {name!r} has shape {shape} but the model takes {len(cols)} columns "
                    f"(shape [n, {len(cols)}]), or one tensor per column named after it"
                )
            raise BadRequest(f"unknown tensor name {name!r}; the model's inputs are {cols[:8]}")
        for c in cols:
            _compatible(c, types.get(c), datatype, name)
        rows = [values[i : i + width] for i in range(0, len(values), width)]
        return {"dataframe_split": {"columns": cols, "data": rows}}
    columns: list[str] = []
    data: list[list[Any]] = []
    n_rows: int | None = None
    for name, shape, datatype, values in tensors:
        if cols is not None and name not in types:
            raise BadRequest(f"unknown tensor name {name!r}; the model's inputs are {cols[:8]}")
        if name in columns:
            raise BadRequest(f"tensor {name!r} is given twice")
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise BadRequest(
                f"tensor {name!r} names a column, so its shape must be [n] or [n, 1], got {shape}"
            )
        if n_rows is None:
            n_rows = shape[0]
        elif shape[0] != n_rows:
            raise BadRequest(f"tensor {name!r} has {shape[0]} rows but tensor {columns[0]!r} has {n_rows}")
        _compatible(name, types.get(name), datatype, name)
        columns.append(name)
        data.append(values)
    return {"dataframe_split": {"columns": columns, "data": [list(r) for r in zip(*data, strict=True)]}}


def _compatible(column: str, mlflow_type: str | None, datatype: str, tensor: str) -> None:
    accepted = _ACCEPTS.get(mlflow_type or "")
    if accepted is not None and datatype not in accepted:
        raise BadRequest(
            f"tensor {tensor!r} has datatype {datatype}, but column {column!r} is {mlflow_type} "
            f"(send {' or '.join(sorted(accepted & {'FP64', 'FP32', 'INT64', 'INT32', 'BOOL', 'BYTES'}))})"
        )


# --- response --------------------------------------------------------------------------------------------


def _output(name: str, values: list[Any]) -> dict[str, Any]:
    n = len(values)
    if values and all(isinstance(v, list) for v in values):
        width = len(values[0])
        if all(len(v) == width for v in values):
            flat = [x for v in values for x in v]
            return {"name": name, "datatype": _datatype(flat), "shape": [n, width], "data": flat}
    if any(isinstance(v, list | dict) for v in values):
        import json

        values = [json.dumps(v) if isinstance(v, list | dict) else v for v in values]
    return {"name": name, "datatype": _datatype(values), "shape": [n], "data": values}


def _datatype(values: list[Any]) -> str:
    kinds = {type(v) for v in values}
    if kinds <= {bool}:
        return "BOOL"
    if kinds <= {int}:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


def outputs(predictions: list[Any], names: list[str]) -> list[dict[str, Any]]:
    """Predictions as V2 output tensors: one per output column for record predictions, else one."""
    if predictions and all(isinstance(p, dict) for p in predictions):
        keys = list(predictions[0])
        if all(list(p) == keys for p in predictions):
            return [_output(str(k), [p[k] for p in predictions]) for k in keys]
    return [_output(names[0] if len(names) == 1 else "predict", predictions)]


def response(
    model_name: str,
    version: str,
    request: Request,
    inference_id: str,
    predictions: list[Any],
    names: list[str],
) -> dict[str, Any]:
    outs = outputs(predictions, names)
    if request.outputs is not None:
        have = {o["name"]: o for o in outs}
        missing = [n for n in request.outputs if n not in have]
        if missing:
            raise BadRequest(f"unknown output(s) {missing}; the model's outputs are {list(have)}")
        outs = [have[n] for n in request.outputs]
    return {"model_name": model_name, "model_version": version, "id": inference_id, "outputs": outs}


# --- metadata --------------------------------------------------------------------------------------------


def output_names(model: LoadedModel) -> list[str]:
    schema = _output_schema(model)
    if schema is not None and schema.has_input_names():
        return [str(n) for n in schema.input_names()]
    return ["predict"]


def _output_schema(model: LoadedModel) -> Any:
    try:
        return model.pyfunc.metadata.get_output_schema()
    except Exception:
        return None


def _tensors(schema: Any, prefix: str) -> list[dict[str, Any]]:
    if schema is None:
        return []
    out = []
    if schema.is_tensor_spec():
        for i, spec in enumerate(schema.inputs):
            shape = [-1 if d is None else int(d) for d in (spec.shape or ())]
            datatype = _numpy_datatype(spec.type)
            out.append({"name": spec.name or f"{prefix}-{i}", "datatype": datatype, "shape": shape})
    else:
        for i, spec in enumerate(schema.inputs):
            t = getattr(spec.type, "name", None)
            out.append({"name": spec.name or f"{prefix}-{i}", "datatype": datatype_of(t), "shape": [-1]})
    if prefix == "output" and len(out) == 1 and not schema.has_input_names():
        out[0]["name"] = "predict"  # what responses call an unnamed output (as MLServer's runtimes do)
    return out


def _numpy_datatype(dtype: Any) -> str:
    kind = getattr(dtype, "kind", "")
    size = getattr(dtype, "itemsize", 8)
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{8 * size}"
    if kind == "f":
        return f"FP{8 * size}"
    return "BYTES"


def metadata(model_name: str, models: list[LoadedModel], model: LoadedModel) -> dict[str, Any]:
    """Model metadata from the signature of the version a request would reach."""
    unknown = [{"name": "predict", "datatype": "BYTES", "shape": [-1]}]  # a model without an output schema
    outs = _tensors(_output_schema(model), "output") or unknown
    try:
        inputs = _tensors(model.pyfunc.metadata.get_input_schema(), "input")
    except Exception:
        inputs = []
    return {
        "name": model_name,
        "versions": sorted({m.version for m in models}, key=lambda v: (len(v), v)),
        "platform": "mlflow",
        "inputs": inputs,
        "outputs": outs,
    }
