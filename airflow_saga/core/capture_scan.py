"""The capture reader: windows of capture, shadow results and feedback as Arrow tables (or pandas).

One reader serves everyone: the monitors (shadow comparison and drift) read windows of up to millions of
rows and only some columns, people and tests want a DataFrame. Each file is parsed with pyarrow's
multi-threaded C++ readers (JSONL with an explicit schema sniffed from the file, and Parquet), only the
requested columns are kept, the ``features`` struct is flattened into ``features.<name>`` columns, and the
window is filtered with vectorised string comparison. ``read_capture`` / ``read_feedback`` put a pandas
face on the same tables.

The root is a local directory or a URI of any filesystem ``core.capture_store`` opens (``s3://...``), the
same one the gateway writes to. Only the hour partitions overlapping the window are listed and opened.
Timestamps are compared as strings: ``core.capture.iso`` always writes UTC with microseconds and a
``+00:00`` offset, so lexicographic order is time order.

Durable capture writes a mirrored request's shadow result apart from its record (``_shadow``); whenever
shadow columns are asked for, the reader merges them back by ``(inference_id, row)``, so both capture
modes read the same.

Types: a column keeps its JSON type (integers stay integers: in pandas, an integer column with missing
values is the nullable ``Int64``). A field whose JSON type is not uniform (labels ``1`` and ``"b"``) reads as
text in Arrow and as the original Python values in pandas.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
from typing import TYPE_CHECKING, Any

from airflow_saga.core.capture import (
    FEEDBACK_DIR,
    RECORD_FIELDS,
    SHADOW_DIR,
    SHADOW_PENDING,
    SHADOW_RESULT_FIELDS,
    iso,
    model_dirname,
)
from airflow_saga.core.capture_store import Store
from airflow_saga.core.errors import CaptureError

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator

    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

FEATURE_PREFIX = "features."
MIXED_KEY = b"saga.mixed"  # schema metadata: JSON list of columns whose values mix JSON types

SNIFF_LINES = 1000
BLOCK_SIZE = 8 << 20
REMOTE_READERS = 8  # objects fetched at once from a remote store
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


# --- window bounds and partitions ----------------------------------------------------------------------


def to_utc(value: dt.datetime | str | float | None) -> dt.datetime | None:
    """An aware UTC datetime; naive values are taken as UTC, numbers as epoch seconds; None or "" (an unset
    Param) mean no bound."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def partition_dirs(store: Store, base: str, start: dt.datetime | None, end: dt.datetime | None) -> list[str]:
    """Hour partitions under ``base`` that may hold rows in [start, end), by their names alone."""
    lo = start.replace(minute=0, second=0, microsecond=0) if start else None
    out = []
    for dname, is_dir in store.listdir(base):
        if not is_dir or not dname.startswith("date="):
            continue
        try:
            day = dt.datetime.strptime(dname[5:], "%Y-%m-%d").replace(tzinfo=dt.UTC)
        except ValueError:
            continue
        if (lo is not None and day + dt.timedelta(days=1) <= lo) or (end is not None and day >= end):
            continue
        ddir = store.join(base, dname)
        for hname, h_is_dir in store.listdir(ddir):
            if not h_is_dir or not hname.startswith("hour=") or not hname[5:].isdigit():
                continue
            when = day + dt.timedelta(hours=int(hname[5:]))
            if (lo is None or when >= lo) and (end is None or when < end):
                out.append(store.join(ddir, hname))
    return out


# --- one file ------------------------------------------------------------------------------------------


class _Bounded(io.RawIOBase):
    """A read-only view of the first ``limit`` bytes of a file (cuts off a torn last line)."""

    def __init__(self, fh: Any, limit: int) -> None:
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


def _complete_length(fh: Any, size: int) -> int:
    """Bytes up to and including the last newline (a torn last line is not a record yet)."""
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


def _sniff(fh: Any, limit: int) -> list[dict[str, Any]]:
    """The first and last ``SNIFF_LINES`` records: enough to type the columns and list the features."""
    out: list[dict[str, Any]] = []
    fh.seek(0)
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


def _text(values: list[Any], as_json: bool) -> pa.Array:
    """Values of mixed JSON types as text: JSON for every value (exact), or strings kept as they are."""
    import pyarrow as pa

    def one(v: Any) -> str | None:
        if v is None:
            return None
        if isinstance(v, str) and not as_json:
            return v
        return json.dumps(v)

    return pa.array([one(v) for v in values], pa.string())


def _from_records(records: list[dict[str, Any]], columns: list[str] | None, features: bool, as_json: bool):
    """Python records -> Arrow, column by column, so one odd field does not fail the whole file."""
    import pyarrow as pa

    flat: list[dict[str, Any]] = []
    for r in records:
        feats = r.pop("features", None)
        if features and isinstance(feats, dict):
            r.update({FEATURE_PREFIX + k: v for k, v in feats.items()})
        flat.append(r)
    names = list(dict.fromkeys(k for r in flat for k in r))
    arrays, mixed = {}, []
    for name in names:
        if columns is not None and name not in columns and not name.startswith(FEATURE_PREFIX):
            continue
        values = [r.get(name) for r in flat]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays[name] = _text(values, as_json)
            mixed.append(name)
    table = pa.table(arrays)
    return _mark_mixed(table, mixed)


def _mark_mixed(table: pa.Table, mixed: list[str] | set[str]) -> pa.Table:
    if not mixed:
        return table
    meta = dict(table.schema.metadata or {})
    meta[MIXED_KEY] = json.dumps(sorted(mixed)).encode()
    return table.replace_schema_metadata(meta)


def _mixed(table: pa.Table) -> set[str]:
    raw = (table.schema.metadata or {}).get(MIXED_KEY)
    return set(json.loads(raw)) if raw else set()


def _iter_jsonl(
    fh: Any, size: int, columns: list[str] | None, features: bool, as_json: bool, batch_rows: int
) -> Iterator[pa.Table]:
    """Parse only the needed fields with an explicit schema, streamed in blocks (bounded memory).

    If the typed parse fails (a field changes JSON type mid-file), the rest of the file is read the
    tolerant way: pyarrow's type inference, then Python column by column if even that fails.
    """
    import pyarrow as pa
    import pyarrow.json as pj

    limit = _complete_length(fh, size)
    if limit == 0:
        return
    schema = _explicit_schema(_sniff(fh, limit), columns, features)
    done = 0
    if schema is not None:
        try:
            fh.seek(0)
            reader = pj.open_json(
                io.BufferedReader(_Bounded(fh, limit), 1 << 20),
                read_options=pj.ReadOptions(block_size=BLOCK_SIZE),
                parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
            )
            for batch in reader:
                done += batch.num_rows
                yield pa.Table.from_batches([batch])
            return
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            log.info("typed JSON parse failed after %d rows (%s); reading the rest with inference", done, exc)
    table = _read_jsonl_tolerant(fh, limit, columns, features, as_json)
    for off in range(done, table.num_rows, batch_rows):
        yield table.slice(off, batch_rows)


def _read_jsonl_tolerant(fh: Any, limit: int, columns: list[str] | None, features: bool, as_json: bool):
    import pyarrow as pa
    import pyarrow.json as pj

    try:
        fh.seek(0)
        return pj.read_json(io.BufferedReader(_Bounded(fh, limit), 1 << 20))
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        log.info("JSON type inference failed (%s); parsing in Python", exc)
    fh.seek(0)
    records = []
    for line in io.BufferedReader(_Bounded(fh, limit), 1 << 20):
        try:
            records.append(json.loads(line))
        except ValueError:
            log.warning("skipping an unreadable capture line")
    return _from_records(records, columns, features, as_json)


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


def _iter_file(
    store: Store, path: str, columns: list[str] | None, features: bool, as_json: bool, batch_rows: int
) -> Iterator[pa.Table]:
    """One file in pieces of about ``batch_rows`` rows (JSONL: one parse block), shaped for the reader."""
    import pyarrow as pa

    def shape(t: pa.Table) -> pa.Table:
        t = _flatten(t, features)
        if columns is not None:
            keep = [c for c in t.column_names if c in columns or (features and c.startswith(FEATURE_PREFIX))]
            t = t.select(keep)
        return t

    if path.endswith(".jsonl"):
        if store.remote:  # objects are one flush each: small, and fetched in one request
            data = store.read_bytes(path)
            pieces = _iter_jsonl(io.BytesIO(data), len(data), columns, features, as_json, batch_rows)
            yield from map(shape, pieces)
        else:
            with open(path, "rb") as fh:
                size = fh.seek(0, io.SEEK_END)
                yield from map(shape, _iter_jsonl(fh, size, columns, features, as_json, batch_rows))
    elif path.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(pa.BufferReader(store.read_bytes(path)) if store.remote else path)
        names = pf.schema_arrow.names
        wanted = (
            None if columns is None else [c for c in names if c in columns or (c == "features" and features)]
        )
        for batch in pf.iter_batches(batch_size=batch_rows, columns=wanted):
            yield shape(pa.Table.from_batches([batch]))


def _read_file(store: Store, path: str, columns: list[str] | None, features: bool, as_json: bool) -> pa.Table:
    import pyarrow as pa

    pieces = [t for t in _iter_file(store, path, columns, features, as_json, 1 << 30) if t.num_rows]
    if not pieces:
        return pa.table({})
    return _concat(pieces, as_json) if len(pieces) > 1 else pieces[0]


# --- many files ----------------------------------------------------------------------------------------


def _concat(tables: list[pa.Table], as_json: bool) -> pa.Table:
    """One table; a column whose type differs between files (ints vs strings) becomes text."""
    import pyarrow as pa

    mixed = set().union(*(_mixed(t) for t in tables))
    try:
        out = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        types: dict[str, set] = {}
        for t in tables:
            for f in t.schema:
                if not pa.types.is_null(f.type):
                    types.setdefault(f.name, set()).add(f.type)
        clash = {
            n for n, ts in types.items() if len(ts) > 1 and not all(pa.types.is_integer(x) or
                                                                   pa.types.is_floating(x) for x in ts)
        }  # fmt: skip
        fixed = []
        for t in tables:
            for name in clash & set(t.column_names):
                col = t.column(name)
                if not (pa.types.is_string(col.type) and name in _mixed(t)):
                    i = t.column_names.index(name)
                    t = t.set_column(i, name, _text(col.to_pylist(), as_json))
            fixed.append(t.replace_schema_metadata(None))
        out = pa.concat_tables(fixed, promote_options="permissive")
        mixed |= clash
    return _mark_mixed(out.replace_schema_metadata(None), mixed)


def _files(store: Store, base: str, start: dt.datetime | None, end: dt.datetime | None) -> list[str]:
    """Data files of the hour partitions overlapping the window, in a stable (sorted) order."""
    files = []
    for d in partition_dirs(store, base, start, end):
        for name, is_dir in store.listdir(d):
            if not is_dir and not name.startswith((".", "_")) and name.endswith((".jsonl", ".parquet")):
                files.append(store.join(d, name))
    return files


def _in_window(table: pa.Table, start: dt.datetime | None, end: dt.datetime | None) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    if "timestamp" not in table.column_names or (start is None and end is None):
        return table
    ts = table.column("timestamp").cast(pa.string())
    mask = None
    if start is not None:
        mask = pc.greater_equal(ts, iso(start.timestamp()))
    if end is not None:
        m2 = pc.less(ts, iso(end.timestamp()))
        mask = m2 if mask is None else pc.and_(mask, m2)
    return table.filter(mask)


def _empty(cols: list[str] | None) -> pa.Table:
    import pyarrow as pa

    return pa.table({c: pa.array([], pa.null()) for c in (cols or ["timestamp"])})


def scan_dir(
    store: Store,
    base: str,
    start: dt.datetime | None,
    end: dt.datetime | None,
    columns: list[str] | None = None,
    *,
    features: bool = False,
    as_json: bool = False,
) -> pa.Table:
    """All rows under ``base`` with ``start <= timestamp < end``, only ``columns`` (+ features if asked)."""
    cols = None if columns is None else list(dict.fromkeys([*columns, "timestamp"]))
    files = _files(store, base, start, end)

    def read(path: str) -> pa.Table:
        return _read_file(store, path, cols, features, as_json)

    if store.remote and len(files) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(REMOTE_READERS, len(files))) as pool:
            tables = [t for t in pool.map(read, files) if t.num_rows]
    else:
        tables = [t for t in map(read, files) if t.num_rows]
    if not tables:
        return _empty(cols)
    return _in_window(_concat(tables, as_json) if len(tables) > 1 else tables[0], start, end)


# --- shadow results of durable capture -----------------------------------------------------------------


def _keys(table: pa.Table) -> pa.ChunkedArray:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(
        table.column("inference_id").cast(pa.string()), table.column("row").cast(pa.string()), "\x1f"
    )


def _common(a: pa.ChunkedArray, b: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    import pyarrow as pa

    if a.type == b.type:
        return a, b
    if pa.types.is_null(a.type):
        return a.cast(b.type), b
    if pa.types.is_null(b.type):
        return a, b.cast(a.type)
    numeric = all(pa.types.is_integer(x.type) or pa.types.is_floating(x.type) for x in (a, b))
    target = pa.float64() if numeric else pa.string()
    return a.cast(target), b.cast(target)


def merge_shadow(table: pa.Table, shadow: pa.Table) -> pa.Table:
    """Fill the shadow columns of pending records (durable mode) from their ``_shadow`` results.

    When a result was recorded twice (a shadow process that died between writing and acknowledging, and
    the gateway's record of that death), a scored result wins over an error.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if shadow.num_rows == 0 or table.num_rows == 0 or "shadow_error" not in table.column_names:
        return table
    pending = pc.fill_null(pc.equal(table.column("shadow_error").cast(pa.string()), SHADOW_PENDING), False)
    if not pc.any(pending).as_py():
        return table
    err = (
        shadow.column("shadow_error") if "shadow_error" in shadow.column_names else pa.nulls(shadow.num_rows)
    )
    shadow = shadow.append_column("__err", pc.is_valid(err).cast(pa.int8())).sort_by("__err")
    idx = pc.index_in(_keys(table), value_set=_keys(shadow).combine_chunks())
    idx = pc.if_else(pending, idx, pa.scalar(None, idx.type))
    hit = pc.is_valid(idx)
    for name in SHADOW_RESULT_FIELDS:
        if name not in shadow.column_names or name not in table.column_names:
            continue
        new = pc.take(shadow.column(name), idx)
        if not isinstance(new, pa.ChunkedArray):
            new = pa.chunked_array([new])
        old, new = _common(table.column(name), new)
        table = table.set_column(table.column_names.index(name), name, pc.if_else(hit, new, old))
    return table


# --- public readers -----------------------------------------------------------------------------------------


def _base(root: str | os.PathLike[str] | Store, model: str, *sub: str) -> tuple[Store, str]:
    store = root if isinstance(root, Store) else Store(root)
    return store, store.join(store.root, model_dirname(model), *sub)


def scan_capture(
    root: str | os.PathLike[str] | Store,
    model: str,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    columns: list[str] | None = None,
    *,
    features: bool = False,
    as_json: bool = False,
) -> pa.Table:
    """Capture rows of ``model`` in [start, end) as an Arrow table of ``columns`` (and ``features.*``).

    ``root`` is a directory or a URI (``s3://bucket/prefix``). Shadow columns of durable capture are merged
    in whenever one is asked for (``columns=None`` asks for all).
    """
    store, base = _base(root, model)
    s, e = to_utc(start), to_utc(end)
    cols, extra, merge = _shadow_plan(store, base, columns)
    table = scan_dir(store, base, s, e, cols, features=features, as_json=as_json)
    shadow = None
    if merge and table.num_rows:
        shadow = scan_dir(store, store.join(base, SHADOW_DIR), s, e, None, as_json=as_json)
    return _finish(table, shadow, extra)


def _shadow_plan(
    store: Store, base: str, columns: list[str] | None
) -> tuple[list[str] | None, list[str], bool]:
    """Columns to read so durable-mode shadow results can be merged, helper columns to drop after the
    merge, and whether there is anything to merge (a ``_shadow`` folder, and shadow columns asked for)."""
    wanted = columns is None or any(c in SHADOW_RESULT_FIELDS for c in columns)
    merge = wanted and any(name == SHADOW_DIR for name, _ in store.listdir(base))
    if columns is None or not merge:
        return columns, [], merge
    extra = [c for c in ("inference_id", "row", "shadow_error") if c not in columns]
    return [*columns, *extra], extra, merge


def _finish(table: pa.Table, shadow: pa.Table | None, extra: list[str]) -> pa.Table:
    if shadow is not None:
        table = merge_shadow(table, shadow)
    if extra:
        table = table.drop_columns([c for c in extra if c in table.column_names])
    return table


def iter_capture(
    root: str | os.PathLike[str] | Store,
    model: str,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    columns: list[str] | None = None,
    *,
    features: bool = False,
    batch_rows: int = 200_000,
) -> Iterator[pa.Table]:
    """``scan_capture`` in bounded pieces: tables of at most about ``batch_rows`` rows, in file order.

    Files are visited in the same (sorted) order every time, so a consumer that samples or deduplicates
    over the stream gets the same answer for the same window. Shadow columns are merged as in
    ``scan_capture`` (the window's ``_shadow`` results, small, are read once).
    """
    store, base = _base(root, model)
    s, e = to_utc(start), to_utc(end)
    cols, extra, merge = _shadow_plan(store, base, columns)
    cols = None if cols is None else list(dict.fromkeys([*cols, "timestamp"]))
    shadow = scan_dir(store, store.join(base, SHADOW_DIR), s, e, None) if merge else None
    for path in _files(store, base, s, e):
        for block in _iter_file(store, path, cols, features, False, batch_rows):
            block = _in_window(block, s, e)
            for off in range(0, block.num_rows, batch_rows):  # a JSONL parse block may be larger
                yield _finish(block.slice(off, batch_rows), shadow, extra)


def scan_feedback(
    root: str | os.PathLike[str] | Store,
    model: str,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    *,
    as_json: bool = False,
) -> pa.Table:
    """Ground truth of ``model`` received in [start, end) (labels arrive late: leave ``end`` unset)."""
    store, base = _base(root, model, FEEDBACK_DIR)
    return scan_dir(store, base, to_utc(start), to_utc(end), ["inference_id", "row", "ground_truth"],
                    as_json=as_json)  # fmt: skip


def feature_names(table: pa.Table) -> list[str]:
    return [c[len(FEATURE_PREFIX) :] for c in table.column_names if c.startswith(FEATURE_PREFIX)]


# --- pandas convenience --------------------------------------------------------------------------------


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas keeping types: integers stay integers (``Int64`` where values are missing), booleans
    ``boolean`` where missing, mixed-type columns their Python values, ``timestamp`` an aware UTC datetime."""
    import pandas as pd
    import pyarrow as pa

    mixed = _mixed(table)
    data = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if name in mixed:
            data[name] = pd.Series(
                [None if v is None else json.loads(v) for v in col.to_pylist()], dtype=object
            )
        elif pa.types.is_integer(col.type) and col.null_count:
            data[name] = pd.Series(col.to_pylist(), dtype="Int64")
        elif pa.types.is_boolean(col.type) and col.null_count:
            data[name] = pd.Series(col.to_pylist(), dtype="boolean")
        elif pa.types.is_null(col.type):
            data[name] = pd.Series([None] * len(col), dtype=object)
        else:
            data[name] = col.to_pandas()
    df = pd.DataFrame(data, index=pd.RangeIndex(table.num_rows))
    if "timestamp" in df:
        df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    return df


def read_capture(
    root: str | os.PathLike[str],
    model: str,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    columns: list[str] | None = None,
    *,
    variant: str | None = None,
    with_feedback: bool = False,
) -> pd.DataFrame:
    """Capture rows of ``model`` with ``start <= timestamp < end`` as a DataFrame (see ``scan_capture``).

    Features come as ``features.<name>`` columns; ``columns`` selects output columns (``"features.*"`` for
    all feature columns). ``with_feedback`` left-joins ``ground_truth`` and ``feedback_timestamp`` (see
    :func:`join_feedback`), reading feedback from ``start`` onwards because labels arrive late.
    """
    import pandas as pd

    fb_cols = ("ground_truth", "feedback_timestamp")
    want_features = columns is None or any(c.startswith(FEATURE_PREFIX) for c in columns)
    scan_cols = None
    if columns is not None:
        known = {*RECORD_FIELDS, *(fb_cols if with_feedback else ())} - {"features"}
        for c in columns:
            if c not in known and not c.startswith(FEATURE_PREFIX):
                raise CaptureError(f"capture of model {model!r} has no column {c!r}")
        scan_cols = [c for c in columns if not c.startswith(FEATURE_PREFIX) and c not in fb_cols]
        scan_cols += [c for c in ("variant",) if variant is not None and c not in scan_cols]
        scan_cols += [c for c in ("inference_id", "row") if with_feedback and c not in scan_cols]
    table = scan_capture(root, model, start, end, scan_cols, features=want_features, as_json=True)
    df = to_pandas(table)
    for c in RECORD_FIELDS:
        if c != "features" and c not in df and (scan_cols is None or c in scan_cols):
            df[c] = pd.Series([None] * len(df), dtype=object)
    if df.empty and "timestamp" in df:
        df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    if scan_cols is None:  # record order, features last
        df = df[[c for c in RECORD_FIELDS if c in df] + [c for c in df if c.startswith(FEATURE_PREFIX)]]
    if variant is not None:
        df = df.loc[df["variant"] == variant].reset_index(drop=True)
    if with_feedback:
        df = join_feedback(df, read_feedback(root, model, start=start))
    if columns is not None:
        wanted: list[str] = []
        for c in columns:
            if c == "features.*":
                wanted.extend(x for x in df.columns if x.startswith(FEATURE_PREFIX))
            elif c not in df.columns:
                raise CaptureError(f"capture of model {model!r} has no column {c!r}")
            else:
                wanted.append(c)
        df = df[wanted]
    return df


def read_feedback(
    root: str | os.PathLike[str],
    model: str,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
) -> pd.DataFrame:
    """Ground truth of ``model`` received in [start, end); the latest per (inference_id, row) wins.

    ``ground_truth`` keeps its type: integers as ``Int64``, floats as ``float64``, booleans as ``boolean``,
    strings (and mixed types) as Python objects.
    """
    import pandas as pd

    store, base = _base(root, model, FEEDBACK_DIR)
    table = scan_dir(store, base, to_utc(start), to_utc(end), ["inference_id", "row", "ground_truth"],
                     as_json=True)  # fmt: skip
    df = to_pandas(table)
    for c in ("inference_id", "ground_truth"):
        if c not in df:
            df[c] = pd.Series([None] * len(df), dtype=object)
    df["row"] = pd.array(df["row"] if "row" in df else [pd.NA] * len(df), dtype="Int64")
    truth = df["ground_truth"]
    if pd.api.types.is_integer_dtype(truth.dtype):
        df["ground_truth"] = truth.astype("Int64")  # the join will leave rows without a label
    elif pd.api.types.is_bool_dtype(truth.dtype):
        df["ground_truth"] = truth.astype("boolean")
    if df.empty:
        df["timestamp"] = pd.to_datetime(pd.Series([], dtype=object), utc=True)
    df = df.sort_values("timestamp", kind="stable")
    df = df.drop_duplicates(["inference_id", "row"], keep="last").reset_index(drop=True)
    return df[["inference_id", "row", "ground_truth", "timestamp"]]


def join_feedback(capture: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Left-join ``ground_truth`` and ``feedback_timestamp`` onto capture rows, keeping the label type.

    Feedback that names a ``row`` matches that row of the request; feedback without one matches every row
    of its inference id (the usual one-row request). A row-specific label wins over a request-wide one. A
    capture row without a label gets ``<NA>`` (Int64, boolean), ``NaN`` (float) or ``None`` (objects).
    """
    import numpy as np
    import pandas as pd

    out = capture.copy()
    pos = np.full(len(out), -1, dtype=np.int64)
    fb = feedback.reset_index(drop=True)
    if len(fb) and len(out):
        fb = fb.assign(_i=np.arange(len(fb)))
        general = fb[fb["row"].isna()].drop_duplicates("inference_id", keep="last")
        specific = fb[fb["row"].notna()].astype({"row": "int64"})
        if len(general):
            m = out[["inference_id"]].merge(general[["inference_id", "_i"]], on="inference_id", how="left")
            pos = np.where(m["_i"].notna(), m["_i"].fillna(-1).astype(np.int64), pos)
        if len(specific):
            left = out[["inference_id", "row"]].astype({"row": "int64"})
            m = left.merge(specific[["inference_id", "row", "_i"]], on=["inference_id", "row"], how="left")
            pos = np.where(m["_i"].notna(), m["_i"].fillna(-1).astype(np.int64), pos)
    labels = fb["ground_truth"] if "ground_truth" in fb else pd.Series([], dtype=object)
    if labels.dtype == object:
        values = labels.to_numpy(dtype=object)
        taken = np.array([values[i] if i >= 0 else None for i in pos], dtype=object)
        out["ground_truth"] = pd.Series(taken, index=out.index, dtype=object)
    else:
        out["ground_truth"] = pd.Series(labels.array.take(pos, allow_fill=True), index=out.index)
    stamps = fb["timestamp"] if "timestamp" in fb else pd.Series([], dtype="datetime64[ns, UTC]")
    stamps = pd.to_datetime(stamps, utc=True)
    out["feedback_timestamp"] = pd.Series(stamps.array.take(pos, allow_fill=True), index=out.index)
    return out
