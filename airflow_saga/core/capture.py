"""Data capture: the record schema, a partitioned buffered writer, and a windowed reader.

The gateway appends what it served; the shadow-comparison and drift DAGs read windows of it. Files are
plain JSONL or Parquet in hive-style partitions so pandas, pyarrow, DuckDB or Spark read them directly::

    <root>/<model>/date=YYYY-MM-DD/hour=HH/<writer-id>.jsonl            predictions (one line per input row)
    <root>/<model>/date=YYYY-MM-DD/hour=HH/<writer-id>-<seq>.parquet    (Parquet: one file per flush)
    <root>/<model>/_feedback/date=YYYY-MM-DD/hour=HH/<writer-id>.jsonl  ground truth, joined by inference_id

``_feedback`` starts with an underscore so ``pyarrow.dataset`` over ``<root>/<model>`` skips it by default.

Durability: records are buffered in memory and written every ``flush_interval`` seconds and on ``close()``
(the gateway calls it on SIGTERM). A hard kill (SIGKILL, power loss) loses at most the records of the
last flush interval. JSONL files are appended to, so a reader may see a torn last line while a writer is
active or after a hard kill; the reader skips such lines. Parquet files are written under a dot-prefixed
temporary name and renamed into place, so a reader never sees half a file.

No Airflow imports here: the module is plain Python, shared by the gateway and the DAG operators.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_saga.core.errors import CaptureError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import pandas as pd

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FEEDBACK_DIR = "_feedback"
FORMATS = ("jsonl", "parquet")

#: Columns of a capture row, in file order (``features`` is a mapping column -> value).
RECORD_FIELDS = (
    "inference_id",
    "row",
    "timestamp",
    "model_name",
    "variant",
    "model_version",
    "features",
    "prediction",
    "latency_ms",
    "shadow_variant",
    "shadow_model_version",
    "shadow_prediction",
    "shadow_latency_ms",
    "shadow_error",
)
FEEDBACK_FIELDS = ("inference_id", "row", "ground_truth", "timestamp")


# --- confinement -----------------------------------------------------------------------------------


def model_dirname(model: str) -> str:
    """The directory name for ``model``: percent-encoded so it can never contain a separator or ``..``.

    MLflow allows almost any character in model names; encoding (rather than rejecting) keeps every valid
    name usable, and a leading ``.`` or ``_`` is encoded too so no model is hidden from pyarrow readers.
    """
    if not isinstance(model, str) or not model or "\x00" in model:
        raise CaptureError(f"invalid model name for capture: {model!r}")
    name = quote(model, safe="-=+@,~")
    if name[0] in "._":
        name = f"%{ord(name[0]):02X}{name[1:]}"
    return name


def confined(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root/parts...``, refusing any result that resolves outside ``root`` (symlinks included)."""
    base = Path(root).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and not path.is_relative_to(base):
        raise CaptureError(f"capture path {path} escapes capture root {base}")
    return path


def partition_of(ts: float) -> tuple[str, str]:
    """(date, hour) partition values of an epoch timestamp, in UTC."""
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    return d.strftime("%Y-%m-%d"), d.strftime("%H")


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")


# --- what the gateway hands over -------------------------------------------------------------------


@dataclass(slots=True)
class CaptureEntry:
    """One served request, as cheap to build on the response path as possible.

    It is expanded into one row per input row (features as a mapping, timestamps as ISO strings) only
    when flushed, off the response path.
    """

    inference_id: str
    ts: float
    variant: str
    model_version: str
    columns: list[str]
    rows: list[list[Any]]
    predictions: list[Any]
    latency_ms: float
    shadow_variant: str | None = None
    shadow_model_version: str | None = None
    shadow_predictions: list[Any] | None = None
    shadow_latency_ms: float | None = None
    shadow_error: str | None = None

    def records(self, model_name: str) -> Iterator[dict[str, Any]]:
        ts = iso(self.ts)
        cols = self.columns
        shadow = self.shadow_predictions
        for i, values in enumerate(self.rows):
            yield {
                "inference_id": self.inference_id,
                "row": i,
                "timestamp": ts,
                "model_name": model_name,
                "variant": self.variant,
                "model_version": self.model_version,
                "features": dict(zip(cols, values, strict=False)),
                "prediction": self.predictions[i] if i < len(self.predictions) else None,
                "latency_ms": self.latency_ms,
                "shadow_variant": self.shadow_variant,
                "shadow_model_version": self.shadow_model_version,
                "shadow_prediction": shadow[i] if shadow is not None and i < len(shadow) else None,
                "shadow_latency_ms": self.shadow_latency_ms,
                "shadow_error": self.shadow_error,
            }


# --- writer ------------------------------------------------------------------------------------------


@dataclass
class _Stats:
    requests: int = 0
    rows: int = 0
    feedback: int = 0
    files: int = 0
    errors: int = 0
    last_error: str | None = None
    extra: dict[str, int] = field(default_factory=dict)


class CaptureWriter:
    """Buffer capture entries and feedback in memory; a background thread writes them every interval.

    ``append`` is a lock-free ``deque.append`` so the response path pays almost nothing; serialisation and
    file I/O happen on the flusher thread. Files are named by a per-writer id, so several gateway workers or
    replicas can share one root without coordination.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        model_name: str,
        fmt: str = "jsonl",
        flush_interval: float = 1.0,
    ) -> None:
        if fmt not in FORMATS:
            raise CaptureError(f"capture format must be one of {FORMATS}, got {fmt!r}")
        if flush_interval <= 0:
            raise CaptureError(f"flush interval must be positive, got {flush_interval}")
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.model_name = model_name
        self.model_dir = confined(self.root, model_dirname(model_name))
        self.fmt = fmt
        self.flush_interval = flush_interval
        self.writer_id = uuid.uuid4().hex
        self.stats = _Stats()
        self._entries: collections.deque[CaptureEntry] = collections.deque()
        self._feedback: collections.deque[dict[str, Any]] = collections.deque()
        self._seq = 0
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # response path
    def append(self, entry: CaptureEntry) -> None:
        self._entries.append(entry)

    def append_feedback(self, inference_id: str, ground_truth: Any, row: int | None, ts: float) -> None:
        self._feedback.append(
            {"inference_id": inference_id, "row": row, "ground_truth": ground_truth, "ts": ts}
        )

    @property
    def backlog(self) -> int:
        """Entries accepted but not yet on disk."""
        return len(self._entries) + len(self._feedback)

    # lifecycle
    def start(self) -> CaptureWriter:
        self._thread = threading.Thread(target=self._run, name="saga-capture-flush", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the flusher and write everything still buffered."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception as exc:  # never let the flusher die; the next tick retries
                log.exception("capture flush failed")
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"

    def flush(self) -> int:
        """Write every buffered entry now; return the number of rows written."""
        with self._flush_lock:
            entries = _drain(self._entries)
            feedback = _drain(self._feedback)
            written = 0
            if entries:
                by_part: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
                for e in entries:
                    by_part[partition_of(e.ts)].extend(e.records(self.model_name))
                for (date, hour), rows in by_part.items():
                    self._write(self._part_dir(None, date, hour), rows, self.fmt)
                    written += len(rows)
                self.stats.requests += len(entries)
                self.stats.rows += written
            if feedback:
                fb_parts: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
                for f in feedback:
                    ts = f.pop("ts")
                    f["timestamp"] = iso(ts)
                    fb_parts[partition_of(ts)].append(f)
                for (date, hour), rows in fb_parts.items():
                    self._write(self._part_dir(FEEDBACK_DIR, date, hour), rows, "jsonl")
                self.stats.feedback += len(feedback)
            return written

    def _part_dir(self, sub: str | None, date: str, hour: str) -> Path:
        parts = [sub] if sub else []
        path = confined(self.model_dir, *parts, f"date={date}", f"hour={hour}")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _write(self, directory: Path, rows: list[dict[str, Any]], fmt: str) -> None:
        if fmt == "jsonl":
            data = _encode_lines(rows)
            with open(directory / f"{self.writer_id}.jsonl", "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            self._seq += 1
            name = f"{self.writer_id}-{self._seq:06d}.parquet"
            tmp = directory / f".{name}.tmp"
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            os.replace(tmp, directory / name)
        self.stats.files += 1


def _drain(dq: collections.deque) -> list:
    out = []
    for _ in range(len(dq)):
        out.append(dq.popleft())
    return out


def _encode_lines(rows: list[dict[str, Any]]) -> bytes:
    """JSON lines; msgspec (an mlflow dependency) is several times faster than json, in the server process."""
    try:
        import msgspec
    except ImportError:  # pragma: no cover
        return "".join(json.dumps(r, default=_json_default) + "\n" for r in rows).encode()
    enc = msgspec.json.Encoder(enc_hook=_json_default)
    buf = bytearray()
    for r in rows:
        enc.encode_into(r, buf, len(buf))
        buf += b"\n"
    return bytes(buf)


def _json_default(obj: Any) -> Any:
    """Numpy scalars/arrays and other odd values reach JSON as plain Python values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


# --- reader --------------------------------------------------------------------------------------------


def to_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """An aware UTC datetime; naive values are taken as UTC; None or "" (an unset Param) mean no bound."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def partition_dirs(base: Path, start: dt.datetime | None, end: dt.datetime | None) -> list[Path]:
    """Hour partitions under ``base`` that may hold rows in [start, end), by their names alone."""
    if not base.is_dir():
        return []
    lo = start.replace(minute=0, second=0, microsecond=0) if start else None
    out = []
    for ddir in sorted(base.glob("date=*")):
        for hdir in sorted(ddir.glob("hour=*")):
            try:
                when = dt.datetime.strptime(f"{ddir.name[5:]} {hdir.name[5:]}", "%Y-%m-%d %H").replace(
                    tzinfo=dt.UTC
                )
            except ValueError:
                continue
            if (lo is None or when >= lo) and (end is None or when < end):
                out.append(hdir)
    return out


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):  # torn last line of an active or killed writer
                break
            try:
                yield json.loads(line)
            except ValueError:
                log.warning("skipping unreadable capture line in %s", path)


def _read_dirs(dirs: list[Path]) -> pd.DataFrame:
    import pandas as pd

    frames: list[pd.DataFrame] = []
    records: list[dict[str, Any]] = []
    for d in dirs:
        for f in sorted(d.iterdir()):
            if f.name.startswith((".", "_")):
                continue
            if f.suffix == ".jsonl":
                records.extend(_read_jsonl(f))
            elif f.suffix == ".parquet":
                import pyarrow.parquet as pq

                frames.append(pq.read_table(f).to_pandas())
    if records:
        frames.append(pd.DataFrame.from_records(records))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _window(df: pd.DataFrame, start: dt.datetime | None, end: dt.datetime | None) -> pd.DataFrame:
    import pandas as pd

    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    mask = pd.Series(True, index=df.index)
    if start is not None:
        mask &= df["timestamp"] >= pd.Timestamp(start)
    if end is not None:
        mask &= df["timestamp"] < pd.Timestamp(end)
    return df.loc[mask].reset_index(drop=True)


def _flatten_features(df: pd.DataFrame) -> pd.DataFrame:
    """``features`` (dicts) -> one ``features.<name>`` column per feature, like pyarrow's flatten()."""
    import pandas as pd

    if "features" not in df.columns:
        return df
    if df.empty:
        return df.drop(columns=["features"])
    feats = pd.DataFrame.from_records(
        [f if isinstance(f, dict) else {} for f in df["features"]], index=df.index
    )
    feats.columns = [f"features.{c}" for c in feats.columns]
    return pd.concat([df.drop(columns=["features"]), feats], axis=1)


def read_capture(
    root: str | os.PathLike[str],
    model: str,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    columns: list[str] | None = None,
    *,
    variant: str | None = None,
    flatten: bool = True,
    with_feedback: bool = False,
) -> pd.DataFrame:
    """Capture rows of ``model`` with ``start <= timestamp < end`` (UTC; naive datetimes are taken as UTC).

    Only hour partitions overlapping the window are opened. ``flatten`` expands ``features`` into one
    ``features.<name>`` column per feature. ``columns`` selects output columns (after flattening; use
    ``"features.*"`` for all feature columns). ``with_feedback`` left-joins ground truth (see
    :func:`join_feedback`), reading feedback from ``start`` onwards because labels arrive late.
    """
    import pandas as pd

    s, e = to_utc(start), to_utc(end)
    base = confined(root, model_dirname(model))
    df = _read_dirs(partition_dirs(base, s, e))
    if df.empty:
        df = pd.DataFrame({c: pd.Series(dtype="object") for c in RECORD_FIELDS})
        df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    else:
        df = _window(df, s, e)
    if variant is not None:
        df = df.loc[df["variant"] == variant].reset_index(drop=True)
    if flatten:
        df = _flatten_features(df)
    if with_feedback:
        df = join_feedback(df, read_feedback(root, model, start=s))
    if columns is not None:
        wanted: list[str] = []
        for c in columns:
            if c == "features.*":
                wanted.extend(x for x in df.columns if x.startswith("features."))
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
    """Ground-truth records of ``model`` received in [start, end); the latest per (inference_id, row) wins."""
    import pandas as pd

    s, e = to_utc(start), to_utc(end)
    base = confined(root, model_dirname(model), FEEDBACK_DIR)
    df = _read_dirs(partition_dirs(base, s, e))
    if df.empty:
        out = pd.DataFrame({c: pd.Series(dtype="object") for c in FEEDBACK_FIELDS})
        out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
        return out
    df = _window(df, s, e).sort_values("timestamp", kind="stable")
    df["row"] = df["row"].astype("Int64") if "row" in df else pd.array([pd.NA] * len(df), dtype="Int64")
    return df.drop_duplicates(["inference_id", "row"], keep="last").reset_index(drop=True)


def join_feedback(capture: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Left-join ``ground_truth`` and ``feedback_timestamp`` onto capture rows.

    Feedback that names a ``row`` matches that row of the request; feedback without one matches every row
    of its inference id (the usual one-row request). A row-specific label wins over a request-wide one.
    """
    import pandas as pd

    out = capture.copy()
    out["ground_truth"] = pd.Series([None] * len(out), index=out.index, dtype="object")
    out["feedback_timestamp"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns, UTC]")
    if feedback.empty or out.empty:
        return out
    fb = feedback.rename(columns={"timestamp": "feedback_timestamp"})
    general = fb[fb["row"].isna()].drop(columns=["row"]).drop_duplicates("inference_id", keep="last")
    specific = fb[fb["row"].notna()].astype({"row": "int64"})
    for part, keys in ((general, ["inference_id"]), (specific, ["inference_id", "row"])):
        if part.empty:
            continue
        left = out[keys].astype({"row": "int64"}) if "row" in keys else out[keys]
        merged = left.merge(part, on=keys, how="left")
        hit = merged["ground_truth"].notna().to_numpy() | merged["feedback_timestamp"].notna().to_numpy()
        out.loc[hit, "ground_truth"] = merged.loc[hit, "ground_truth"].to_numpy()
        out.loc[hit, "feedback_timestamp"] = merged.loc[hit, "feedback_timestamp"].to_numpy()
    return out


@contextlib.contextmanager
def capture_writer(root: str | os.PathLike[str], model: str, **kwargs: Any) -> Iterator[CaptureWriter]:
    """A started writer that is flushed and closed on exit (for scripts and tests)."""
    w = CaptureWriter(root, model, **kwargs).start()
    try:
        yield w
    finally:
        w.close()
