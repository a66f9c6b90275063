"""MLflow's scoring protocol: request payloads in, ``{"predictions": ...}`` out.

``mlflow models serve`` spends most of a one-row request turning JSON into a DataFrame and casting each
column. When the model signature is all numeric we skip pandas: the JSON rows are checked value by value
against the signature (so a bad value gets a 400 naming its column) and become one float64 ndarray in
signature order. Other signatures fall back to MLflow's own parser, so anything ``mlflow models serve``
accepts is accepted here too.
"""

from __future__ import annotations

import json
import re
import reprlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

try:  # msgspec ships with mlflow; it parses and encodes several times faster than json
    import msgspec

    _decoder = msgspec.json.Decoder()
    _encoder = msgspec.json.Encoder()

    def decode_json(body: bytes) -> Any:
        return _decoder.decode(body)

    def encode_json(obj: Any) -> bytes:
        return _encoder.encode(obj)

    # msgspec raises RecursionError past its nesting limit (~1000 levels): a client error, not a crash.
    _DecodeErrors: tuple[type[Exception], ...] = (msgspec.DecodeError, ValueError, RecursionError)
except ImportError:  # pragma: no cover - msgspec is a dependency of mlflow

    def decode_json(body: bytes) -> Any:
        return json.loads(body)

    def encode_json(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    _DecodeErrors = (ValueError, RecursionError)

INFERENCE_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_short = reprlib.Repr()  # bounded depth and length: a hostile value never costs more than a few items
_short.maxlevel, _short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 2, 40, 40, 4, 4


def short_repr(value: Any) -> str:
    """``repr`` for error messages, safe on deep, long or huge values (a plain repr recurses and grows)."""
    if type(value) is int and value.bit_length() > 128:
        return (
            f"an integer of {len(str(abs(value)))} digits"
            if value.bit_length() < 10_000
            else "a huge integer"
        )
    try:
        return _short.repr(value)
    except (RecursionError, ValueError):  # pragma: no cover - reprlib bounds depth; belt and braces
        return f"a {type(value).__name__}"


NUMERIC_TYPES = {"double": float, "float": float, "long": int, "integer": int}


def expected(cols: Any) -> str:
    """The model's columns for an error message, shortened when there are many."""
    cols = list(cols)
    if len(cols) <= 8:
        return f"the model expects {cols}"
    return f"the model expects {len(cols)} columns: {cols[:6]} ... {cols[-1:]}"


class BadRequest(Exception):
    """A client error: becomes an HTTP 4xx with ``message`` as the body's ``message``."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        error_code: str = "BAD_REQUEST",
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code
        self.retry_after = retry_after  # seconds, sent as Retry-After (503: loading, large lane full)

    def body(self) -> bytes:
        return encode_json({"error_code": self.error_code, "message": self.message})


@dataclass(frozen=True)
class InputSpec:
    """What a model's signature says about its input; ``columns`` is None for models without one."""

    columns: tuple[str, ...] | None
    types: tuple[str, ...] | None
    schema: Any  # mlflow.types.Schema or None, for the generic path

    @property
    def numeric(self) -> bool:
        return self.types is not None and all(t in NUMERIC_TYPES for t in self.types)

    @classmethod
    def from_pyfunc(cls, model: Any) -> InputSpec:
        schema = model.metadata.get_input_schema()
        if schema is None or not schema.has_input_names() or schema.is_tensor_spec():
            return cls(None, None, schema)
        types = []
        for spec in schema.inputs:
            t = getattr(spec.type, "name", None)
            types.append(t if isinstance(t, str) else str(spec.type))
        return cls(tuple(schema.input_names()), tuple(types), schema)


@dataclass(slots=True)
class Batch:
    """A validated request: rows as plain values in ``columns`` order, plus an ndarray when numeric."""

    columns: list[str]
    rows: list[list[Any]]
    array: np.ndarray | None = None
    frame: pd.DataFrame | None = None


def decode_json_body(body: bytes) -> Any:
    """JSON bytes -> Python values; any malformed, non-UTF-8 or too deeply nested body is a 400."""
    try:
        return decode_json(body)
    except _DecodeErrors as exc:
        reason = "nesting too deep" if isinstance(exc, RecursionError) else str(exc)
        raise BadRequest(f"malformed JSON: {reason}") from None


def row_count(payload: dict[str, Any]) -> int:
    """How many rows a decoded MLflow payload holds, in O(1) (before any per-row validation)."""
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        data = split.get("data") if isinstance(split, dict) else None
        return len(data) if isinstance(data, list) else 0
    for key in ("dataframe_records", "instances", "inputs"):
        data = payload.get(key)
        if isinstance(data, list):
            return len(data)
        if isinstance(data, dict) and data:
            first = next(iter(data.values()))
            return len(first) if isinstance(first, list) else 1
    return 0


def decode_body(body: bytes, content_type: str) -> Any:
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "text/csv":
        return _csv_payload(body)
    if mime not in ("application/json", ""):
        raise BadRequest(
            f"unsupported content type {content_type!r}; send application/json or text/csv", status=415
        )
    if not body:
        raise BadRequest("empty request body; expected a JSON object with one of " + ", ".join(FORMATS))
    payload = decode_json_body(body)
    if not isinstance(payload, dict):
        raise BadRequest(
            f"the input must be a JSON object with exactly one of {list(FORMATS)}, "
            f"got {type(payload).__name__}"
        )
    keys = [k for k in FORMATS if k in payload]
    if len(keys) != 1:
        raise BadRequest(f"the input must hold exactly one of {list(FORMATS)}; got keys {sorted(payload)}")
    return payload


def _csv_payload(body: bytes) -> dict[str, Any]:
    """CSV (as ``mlflow models serve`` accepts it) -> a dataframe_split payload: one validator for both."""
    import io
    import warnings

    import pandas as pd

    try:
        with warnings.catch_warnings():
            # A row longer than the header would silently become the index (pandas' default), shifting
            # every value one column: refuse it instead (ParserWarning raised as an error).
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.BytesIO(body), index_col=False)
    except Exception as exc:  # pandas raises many types (ParserError, UnicodeDecodeError, EmptyDataError...)
        raise BadRequest(f"malformed CSV: {type(exc).__name__}: {str(exc)[:200]}") from None
    return {
        "dataframe_split": {
            "columns": [str(c) for c in frame.columns],
            "data": frame.astype(object).to_numpy().tolist(),
        }
    }


def _columnar_to_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    cols = list(data)
    values = [data[c] if isinstance(data[c], list) else [data[c]] for c in cols]
    n = len(values[0]) if values else 0
    for c, v in zip(cols, values, strict=True):
        if len(v) != n:
            raise BadRequest(f"column {c!r} has {len(v)} values but column {cols[0]!r} has {n}")
    return cols, [list(r) for r in zip(*values, strict=True)]


def _records_to_rows(
    records: list[Any], spec_cols: tuple[str, ...] | None
) -> tuple[list[str], list[list[Any]]]:
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise BadRequest(f"record {i} is a {type(r).__name__}, expected an object of column: value")
    cols = list(spec_cols) if spec_cols else list(records[0])
    known = set(cols)
    rows = []
    for i, r in enumerate(records):
        extra = [k for k in r if k not in known]
        if extra:
            raise BadRequest(f"record {i} has unknown column(s) {extra}; {expected(cols)}")
        try:
            rows.append([r[c] for c in cols])
        except KeyError as exc:
            raise BadRequest(f"record {i} is missing column {exc.args[0]!r}") from None
    return cols, rows


def extract_rows(
    payload: dict[str, Any], spec_cols: tuple[str, ...] | None
) -> tuple[list[str], list[list[Any]]]:
    """Any of the four formats -> (columns, rows)."""
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise BadRequest('dataframe_split must be an object with a "data" list (and usually "columns")')
        data = split["data"]
        cols = split.get("columns")
        if cols is None:
            if spec_cols is None:
                raise BadRequest('dataframe_split needs "columns": the model has no signature to supply them')
            cols = list(spec_cols)
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise BadRequest('dataframe_split "columns" must be a list of strings')
        rows = []
        for i, r in enumerate(data):
            if not isinstance(r, list):
                r = [r]  # a single-column frame may be sent as a flat list
            if len(r) != len(cols):
                raise BadRequest(f"dataframe_split row {i} has {len(r)} values but {len(cols)} columns")
            rows.append(r)
        return cols, rows
    if "dataframe_records" in payload:
        records = payload["dataframe_records"]
        if not isinstance(records, list):
            raise BadRequest("dataframe_records must be a list of objects")
        if not records:
            raise BadRequest("no rows to score")
        return _records_to_rows(records, spec_cols)
    key = "instances" if "instances" in payload else "inputs"
    data = payload[key]
    if isinstance(data, dict):
        return _columnar_to_rows(data)
    if not isinstance(data, list) or not data:
        raise BadRequest(f"{key} must be a non-empty list of rows/records or an object of columns")
    if isinstance(data[0], dict):
        return _records_to_rows(data, spec_cols)
    if spec_cols is None:
        raise BadRequest(f"{key} as a list of rows needs a model signature to name the columns")
    rows = []
    for i, r in enumerate(data):
        if not isinstance(r, list):
            r = [r]
        if len(r) != len(spec_cols):
            raise BadRequest(
                f"{key} row {i} has {len(r)} values but the model expects {len(spec_cols)} columns"
            )
        rows.append(r)
    return list(spec_cols), rows


def to_numeric_batch(cols: list[str], rows: list[list[Any]], spec: InputSpec) -> Batch:
    """Reorder to signature order, check every value's type, and build the float64 ndarray."""
    assert spec.columns is not None and spec.types is not None
    if not rows:
        raise BadRequest("no rows to score")
    if cols != list(spec.columns):
        missing = [c for c in spec.columns if c not in cols]
        if missing:
            raise BadRequest(f"missing column(s) {missing}; {expected(spec.columns)}")
        extra = [c for c in cols if c not in spec.columns]
        if extra:
            raise BadRequest(f"unknown column(s) {extra}; {expected(spec.columns)}")
        if len(set(cols)) != len(cols):
            raise BadRequest(f"duplicate column names in {cols}")
        index = [cols.index(c) for c in spec.columns]
        rows = [[r[i] for i in index] for r in rows]
    for r in rows:
        for v in r:
            t = type(v)
            if t is not float and t is not int:
                _raise_bad_value(rows, spec)
    if any(t not in ("double", "float") for t in spec.types):  # integer columns must hold integers
        for r in rows:
            for v, t in zip(r, spec.types, strict=True):
                if t in ("long", "integer") and type(v) is not int:
                    _raise_bad_value(rows, spec)
    try:
        array = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond float64's range (over ~309 digits)
        for i, r in enumerate(rows):
            for c, v in zip(spec.columns, r, strict=True):
                if type(v) is int and abs(v).bit_length() > 1023:
                    raise BadRequest(f"column {c!r} row {i}: {short_repr(v)} is out of range") from None
        raise BadRequest("a value is out of range for float64") from None  # pragma: no cover
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise BadRequest(
            f"column {spec.columns[bad[1]]!r} row {bad[0]}: value {array[tuple(bad)]} is not finite"
        )
    return Batch(list(spec.columns), rows, array)


def _raise_bad_value(rows: list[list[Any]], spec: InputSpec) -> None:
    assert spec.columns is not None and spec.types is not None
    for i, r in enumerate(rows):
        for c, t, v in zip(spec.columns, spec.types, r, strict=True):
            want = NUMERIC_TYPES[t]
            ok = type(v) is int or (type(v) is float and want is float)
            if not ok:
                raise BadRequest(
                    f"column {c!r} row {i}: expected {t}, got {type(v).__name__} {short_repr(v)}"
                )
    raise BadRequest("invalid input values")  # pragma: no cover


def generic_batch(payload: dict[str, Any], spec: InputSpec) -> Batch:
    """Use MLflow's own parser for signatures the numeric fast path does not cover."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    data = {k: v for k, v in payload.items() if k in FORMATS}
    try:
        parsed = infer_and_parse_data(data, spec.schema)
    except MlflowException as exc:
        raise BadRequest(exc.message[:1000]) from None
    except Exception as exc:  # MLflow's parser lets pandas/numpy errors through (and RecursionError)
        raise BadRequest(f"cannot parse input: {type(exc).__name__}: {str(exc)[:300]}") from None
    import pandas as pd

    try:
        frame = parsed if isinstance(parsed, pd.DataFrame) else pd.DataFrame(parsed)
        if frame.empty:
            raise BadRequest("no rows to score")
        return Batch([str(c) for c in frame.columns], frame.to_numpy().tolist(), None, frame)
    except BadRequest:
        raise
    except Exception as exc:  # e.g. a tensor input that is not two-dimensional
        raise BadRequest(f"cannot use input as a table: {type(exc).__name__}: {str(exc)[:300]}") from None


def parse(payload: dict[str, Any], spec: InputSpec) -> Batch:
    if spec.numeric:
        cols, rows = extract_rows(payload, spec.columns)
        return to_numeric_batch(cols, rows, spec)
    return generic_batch(payload, spec)


def jsonable(predictions: Any) -> list[Any]:
    """Model output -> plain JSON values, the way MLflow's scoring server shapes them."""
    if isinstance(predictions, np.ndarray):
        return predictions.tolist()
    if isinstance(predictions, list):
        return [p.item() if isinstance(p, np.generic) else p for p in predictions]
    from airflow_saga.core.compat import jsonable as mlflow_jsonable

    out = mlflow_jsonable(predictions, pandas_orient="records")
    return out if isinstance(out, list) else [out]
