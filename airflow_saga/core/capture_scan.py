"""Columnar, windowed reading of capture files for the monitors (shadow comparison and drift).

``core.capture.read_capture`` is the general reader: it parses JSONL line by line into Python dicts, which
is right for small windows and for people poking at data, but costs ~10 s per million rows. The monitors
read windows of up to millions of rows, and only some columns, so this module parses each file with
pyarrow's multi-threaded C++ readers (JSONL and Parquet), keeps only the requested columns, flattens the
``features`` struct into ``features.<name>`` columns, and filters the window with vectorised string
comparison. The on-disk layout, confinement and torn-line rules are those of ``core.capture``.

Timestamps are compared as strings: ``core.capture.iso`` always writes UTC with microseconds and a
``+00:00`` offset, so lexicographic order is time order.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import TYPE_CHECKING, Any

from airflow_saga.core.capture import FEEDBACK_DIR, confined, iso, model_dirname, partition_dirs, to_utc
from airflow_saga.core.errors import CaptureError

if TYPE_CHECKING:
    import datetime as dt
    import os
    from pathlib import Path

    import pyarrow as pa

log = logging.getLogger(__name__)

FEATURE_PREFIX = "features."

SNIFF_LINES = 1000
BLOCK_SIZE = 8 << 20
_KNOWN_TYPES = {
    "inference_id": "string",
    "row": "int64",
    "timestamp": "string",
    "model_name": "string",
    "variant": "string",
    "model_version": "string",
    "latency_ms": "float64",
    "shadow_variant": "string",
    "shadow_model_version": "string",
    "shadow_latency_ms": "float64",
    "shadow_error": "string",
}


class _Bounded(io.RawIOBase):
    """A read-only view of the first ``limit`` bytes of a file (cuts off a torn last line)."""

    def __init__(self, fh: io.BufferedReader, limit: int) -> None:
        self._fh, self._left = fh, limit

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        data = self._fh.read(n)
        b[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _complete_length(path: Path) -> int:
    """Bytes up to and including the last newline (a torn last line is not a record yet)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        pos = size
        while pos > 0:
            step = min(pos, 1 << 20)
            fh.seek(pos - step)
            chunk = fh.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return pos - step + cut + 1
            pos -= step
    return 0


def _sniff(path: Path, limit: int) -> list[dict[str, Any]]:
    """The first and last ``SNIFF_LINES`` records: enough to type the columns and list the features."""
    import json

    out: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            if i >= SNIFF_LINES or fh.tell() > limit:
                break
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        fh.seek(max(0, limit - (4 << 20)))
        tail = fh.read(limit - fh.tell()).split(b"\n")[1:-1][-SNIFF_LINES:]
    for line in tail:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def _json_type(values: list[Any]) -> str | None:
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return None
    if kinds <= {int}:
        return "int64"
    if kinds <= {int, float}:
        return "float64"
    if kinds == {str}:
        return "string"
    if kinds == {bool}:
        return "bool"
    return "mixed"


def _explicit_schema(
    sample: list[dict[str, Any]], columns: list[str] | None, features: bool
) -> pa.Schema | None:
    """An Arrow schema for the requested fields, or None when a field's JSON type is not uniform."""
    import pyarrow as pa

    names = list(dict.fromkeys(k for r in sample for k in r)) if columns is None else columns
    fields = []
    for name in names:
        if name == "features":
            continue
        kind = _KNOWN_TYPES.get(name) or _json_type([r.get(name) for r in sample]) or "float64"
        if kind == "mixed":
            return None
        if name in ("prediction", "shadow_prediction") and kind == "int64":
            kind = "float64"  # labels 0/1 and scores 0.5 in one column must not flip the type mid-file
        fields.append(pa.field(name, pa.type_for_alias(kind)))
    if features:
        keys = list(dict.fromkeys(k for r in sample for k in (r.get("features") or {})))
        sub = []
        for k in keys:
            kind = _json_type([(r.get("features") or {}).get(k) for r in sample]) or "float64"
            if kind == "mixed":
                return None
            sub.append(pa.field(k, pa.float64() if kind in ("int64", "float64") else pa.type_for_alias(kind)))
        fields.append(pa.field("features", pa.struct(sub)))
    return pa.schema(fields)


def _read_jsonl(path: Path, columns: list[str] | None = None, features: bool = True) -> pa.Table:
    """Parse only the needed fields with an explicit schema (fast, bounded memory, streamed in blocks).

    If the typed parse fails (a field changes JSON type mid-file) we fall back to full inference, and to
    the line reader of ``core.capture`` if even that fails.
    """
    import pyarrow as pa
    import pyarrow.json as pj

    limit = _complete_length(path)
    if limit == 0:
        return pa.table({})
    schema = _explicit_schema(_sniff(path, limit), columns, features)
    attempts = []
    if schema is not None:
        attempts.append(pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
    attempts.append(pj.ParseOptions())
    for opts in attempts:
        try:
            with open(path, "rb") as fh:
                reader = pj.open_json(
                    io.BufferedReader(_Bounded(fh, limit), 1 << 20),
                    read_options=pj.ReadOptions(block_size=BLOCK_SIZE),
                    parse_options=opts,
                )
                return reader.read_all()
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            log.info("typed JSON parse of %s failed (%s); retrying with inference", path, exc)
    from airflow_saga.core.capture import _read_jsonl as read_lines

    return pa.Table.from_pylist(list(read_lines(path)))


def _flatten(table: pa.Table, features: bool) -> pa.Table:
    if "features" not in table.column_names:
        return table
    import pyarrow as pa

    col = table.column("features")
    rest = table.drop_columns(["features"])
    if not features or not pa.types.is_struct(col.type):
        return rest
    for i in range(col.type.num_fields):
        name = col.type.field(i).name
        child = pa.chunked_array([chunk.field(i) for chunk in col.chunks], type=col.type.field(i).type)
        rest = rest.append_column(FEATURE_PREFIX + name, child)
    return rest


def _read_file(path: Path, columns: list[str] | None, features: bool) -> pa.Table:
    if path.suffix == ".jsonl":
        table = _read_jsonl(path, columns, features)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        wanted = (
            None if columns is None else [c for c in names if c in columns or (c == "features" and features)]
        )
        table = pq.read_table(path, columns=wanted)
    else:
        import pyarrow as pa

        return pa.table({})
    table = _flatten(table, features)
    if columns is not None:
        keep = [c for c in table.column_names if c in columns or (features and c.startswith(FEATURE_PREFIX))]
        table = table.select(keep)
    return table


def scan_dir(
    base: Path,
    start: dt.datetime | None,
    end: dt.datetime | None,
    columns: list[str] | None = None,
    *,
    features: bool = False,
) -> pa.Table:
    """All rows under ``base`` with ``start <= timestamp < end``, only ``columns`` (+ features if asked)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = None if columns is None else list(dict.fromkeys([*columns, "timestamp"]))
    tables = []
    for d in partition_dirs(base, start, end):
        for f in sorted(d.iterdir()):
            if f.name.startswith((".", "_")) or not f.is_file():
                continue
            t = _read_file(f, cols, features)
            if t.num_rows:
                tables.append(t)
    if not tables:
        return pa.table({c: pa.array([], pa.null()) for c in (cols or ["timestamp"])})
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    if "timestamp" in table.column_names and (start is not None or end is not None):
        ts = table.column("timestamp").cast(pa.string())
        mask = None
        if start is not None:
            mask = pc.greater_equal(ts, iso(start.timestamp()))
        if end is not None:
            m2 = pc.less(ts, iso(end.timestamp()))
            mask = m2 if mask is None else pc.and_(mask, m2)
        table = table.filter(mask)
    return table


def scan_capture(
    root: str | os.PathLike[str],
    model: str,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    columns: list[str] | None = None,
    *,
    features: bool = False,
) -> pa.Table:
    """Capture rows of ``model`` in [start, end) as an Arrow table of ``columns`` (and ``features.*``)."""
    if not str(root):
        raise CaptureError("capture directory is empty")
    base = confined(root, model_dirname(model))
    return scan_dir(base, to_utc(start), to_utc(end), columns, features=features)


def scan_feedback(
    root: str | os.PathLike[str], model: str, start: dt.datetime | str | None = None
) -> pa.Table:
    """Ground truth of ``model`` received since ``start`` (labels arrive late, so there is no end)."""
    base = confined(root, model_dirname(model), FEEDBACK_DIR)
    return scan_dir(base, to_utc(start), None, ["inference_id", "row", "ground_truth"])


def feature_names(table: pa.Table) -> list[str]:
    return [c[len(FEATURE_PREFIX) :] for c in table.column_names if c.startswith(FEATURE_PREFIX)]
