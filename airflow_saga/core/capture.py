"""Data capture: the record schema and the gateway's partitioned writer (buffered or durable).

The gateway writes what it served; the shadow-comparison and drift DAGs read windows of it through
``core.capture_scan``. Files are plain JSONL or Parquet in hive-style partitions, on a local disk or any
filesystem pyarrow or fsspec opens by URI (``s3://``, ``gs://``, ...), so pandas, pyarrow, DuckDB or Spark
read them directly::

    <root>/<model>/date=YYYY-MM-DD/hour=HH/<writer-id>.jsonl          local JSONL: appended to
    <root>/<model>/date=YYYY-MM-DD/hour=HH/<writer-id>-<seq>.<fmt>    Parquet, and every file on an object
                                                                      store: one file per flush
    <root>/<model>/_feedback/date=.../hour=.../...                    ground truth, joined by inference_id
    <root>/<model>/_shadow/date=.../hour=.../...                      durable mode: shadow results, joined
                                                                      by (inference_id, row)

``_feedback`` and ``_shadow`` start with an underscore so ``pyarrow.dataset`` over ``<root>/<model>`` skips
them by default.

Durability modes
    ``buffered`` (default): records wait in memory and are written every ``flush_interval`` seconds and on
    ``close()`` (the gateway calls it on SIGTERM). A hard kill loses at most the last flush interval.

    ``durable``: every record is written before ``append`` returns, so before the gateway answers. A
    ``write(2)`` into the page cache survives the death of the process (SIGKILL, OOM kill), not a power
    loss: nothing is fsynced per request; open files are fsynced every flush interval, which bounds what a
    power loss can take. Local JSONL files are appended to directly (the capture file is its own log). For
    Parquet and object stores, whose files cannot grow by a record, records go to a local write-ahead spool
    (``core.capture_spool``) published as one file per flush and replayed after a crash. If a record
    cannot be written, ``append`` raises ``CaptureError`` and the gateway refuses the request (503) rather
    than answer it unrecorded.

    Shadow results arrive after the response. In durable mode the champion's record is written before the
    response with ``shadow_error`` = ``SHADOW_PENDING``, and the shadow result goes later to ``_shadow``;
    the reader merges it into the record. A record whose shadow result never arrived reads as "not run".

Local JSONL may end in a torn last line while a writer is active or after a kill inside a write; readers
skip it. Every other file is published whole (renamed into place, or one object upload). Files are created
0640 and directories 0750 unless configured otherwise, whatever the umask.

No Airflow imports here: the module is plain Python, shared by the gateway and the DAG operators.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_saga.core.capture_store import (
    DEFAULT_DIR_MODE,
    DEFAULT_FILE_MODE,
    Store,
    append_record,
    parse_mode,
)
from airflow_saga.core.errors import CaptureError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from airflow_saga.core.capture_spool import Segment, Spool

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FEEDBACK_DIR = "_feedback"
SHADOW_DIR = "_shadow"
SPOOL_DIR = "_spool"
FORMATS = ("jsonl", "parquet")
DURABILITY = ("buffered", "durable")
DEFAULT_REMOTE_SPOOL = ".saga/capture-spool"
REPLAY_EVERY_S = 30.0
#: In durable mode, a mirrored request's record until its shadow result is merged in by the reader.
SHADOW_PENDING = "not run: no shadow result recorded"

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
SHADOW_RESULT_FIELDS = (
    "shadow_variant",
    "shadow_model_version",
    "shadow_prediction",
    "shadow_latency_ms",
    "shadow_error",
)
SHADOW_FIELDS = ("inference_id", "row", "timestamp", *SHADOW_RESULT_FIELDS)
FEEDBACK_FIELDS = ("inference_id", "row", "ground_truth", "timestamp")
STREAM_DIRS = {"capture": None, "shadow": SHADOW_DIR, "feedback": FEEDBACK_DIR}


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
    when written: at flush time in buffered mode, before the response in durable mode.
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

    def shadow_records(self) -> Iterator[dict[str, Any]]:
        """The shadow half of each row (durable mode), keyed like the champion's record."""
        ts = iso(self.ts)
        shadow = self.shadow_predictions
        for i in range(len(self.rows)):
            yield {
                "inference_id": self.inference_id,
                "row": i,
                "timestamp": ts,
                "shadow_variant": self.shadow_variant,
                "shadow_model_version": self.shadow_model_version,
                "shadow_prediction": shadow[i] if shadow is not None and i < len(shadow) else None,
                "shadow_latency_ms": self.shadow_latency_ms,
                "shadow_error": self.shadow_error,
            }


# --- settings --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureSettings:
    """How and where a writer writes; plain values, so it pickles to the shadow worker process."""

    root: str
    fmt: str = "jsonl"
    flush_interval: float = 1.0
    durability: str = "buffered"
    spool_dir: str | None = None
    file_mode: int = DEFAULT_FILE_MODE
    dir_mode: int = DEFAULT_DIR_MODE
    max_retained_rows: int = 1_000_000

    def __post_init__(self) -> None:
        if not str(self.root).strip():
            raise CaptureError("capture location is empty")
        if self.fmt not in FORMATS:
            raise CaptureError(f"capture format must be one of {FORMATS}, got {self.fmt!r}")
        if self.durability not in DURABILITY:
            raise CaptureError(f"capture durability must be one of {DURABILITY}, got {self.durability!r}")
        if not isinstance(self.flush_interval, int | float) or self.flush_interval <= 0:
            raise CaptureError(f"flush interval must be positive, got {self.flush_interval}")
        object.__setattr__(self, "root", str(self.root))
        object.__setattr__(
            self, "file_mode", parse_mode(self.file_mode, "capture file mode", directory=False)
        )
        object.__setattr__(
            self, "dir_mode", parse_mode(self.dir_mode, "capture directory mode", directory=True)
        )

    def replace(self, **changes: Any) -> CaptureSettings:
        return dataclasses.replace(self, **changes)


# --- writer ------------------------------------------------------------------------------------------


@dataclass
class _Stats:
    requests: int = 0
    rows: int = 0
    shadow_rows: int = 0
    feedback: int = 0
    files: int = 0
    errors: int = 0
    dropped: int = 0
    replayed_segments: int = 0
    last_error: str | None = None


class CaptureWriter:
    """Write capture entries, shadow results and feedback of one model, buffered or durably.

    Buffered: ``append`` is a lock-free ``deque.append`` (the response path pays almost nothing) and a
    background thread serialises and writes every interval. Durable: ``append`` encodes the records and
    writes them with one ``write(2)`` before returning. Files are named by a per-writer id, so several
    gateway workers or replicas share one root without coordination. A write that fails in buffered mode
    (an object store briefly unreachable) is retried at the next flush, up to ``max_retained_rows`` rows.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | CaptureSettings,
        model_name: str,
        fmt: str = "jsonl",
        flush_interval: float = 1.0,
        **options: Any,
    ) -> None:
        if isinstance(root, CaptureSettings):
            settings = root.replace(**options) if options else root
        else:
            settings = CaptureSettings(str(root), fmt, flush_interval, **options)
        self.settings = settings
        self.fmt = settings.fmt
        self.flush_interval = settings.flush_interval
        self.durable = settings.durability == "durable"
        self.store = Store(settings.root, file_mode=settings.file_mode, dir_mode=settings.dir_mode)
        self.store.check_writable()
        self.root = self.store.root
        self.model_name = model_name
        self.model_dirname = model_dirname(model_name)
        self.model_dir = self.store.join(self.store.root, self.model_dirname)
        self.writer_id = uuid.uuid4().hex
        self.stats = _Stats()
        self._entries: collections.deque[CaptureEntry] = collections.deque()
        self._shadow: collections.deque[CaptureEntry] = collections.deque()
        self._feedback: collections.deque[dict[str, Any]] = collections.deque()
        self._retained: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self._seq = 0
        self._flush_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._fds: dict[tuple[str, str, str], int] = {}
        self._fds_used: set[tuple[str, str, str]] = set()
        self._hour: tuple[int, tuple[str, str]] = (-1, ("", ""))
        self._spooled = 0
        self._failed_segments: list[Segment] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.spool_base = self._spool_base()
        self._spool: Spool | None = None
        if self.durable and (self.store.remote or self.fmt == "parquet"):
            from airflow_saga.core.capture_spool import Spool

            self._spool = Spool(
                self.spool_base, self.model_dirname, self.writer_id, self.store.uri, settings.file_mode,
                settings.dir_mode,
            )  # fmt: skip

    @property
    def location(self) -> str:
        """Where the model's capture goes, safe to show (URIs are redacted)."""
        return self.store.uri.rstrip("/") + "/" + self.model_dirname

    def _spool_base(self) -> Path:
        if self.settings.spool_dir:
            return Path(self.settings.spool_dir).resolve()
        if self.store.remote:
            return Path(os.environ.get("SAGA_CAPTURE_SPOOL_DIR") or DEFAULT_REMOTE_SPOOL).resolve()
        return Path(self.store.root) / SPOOL_DIR

    # --- response path ----------------------------------------------------------------------------------
    def append(self, entry: CaptureEntry) -> None:
        """The champion's record(s) of one request. Durable mode: written when this returns."""
        if not self.durable:
            self._entries.append(entry)
            return
        rows = list(entry.records(self.model_name))
        self._log("capture", entry.ts, rows)
        self.stats.requests += 1
        self.stats.rows += len(rows)

    def append_shadow(self, entry: CaptureEntry) -> None:
        """The shadow result of a request whose record was written with ``SHADOW_PENDING`` (durable mode)."""
        if not self.durable:
            self._shadow.append(entry)
            return
        rows = list(entry.shadow_records())
        self._log("shadow", entry.ts, rows)
        self.stats.shadow_rows += len(rows)

    def append_feedback(self, inference_id: str, ground_truth: Any, row: int | None, ts: float) -> None:
        record = {"inference_id": inference_id, "row": row, "ground_truth": ground_truth, "ts": ts}
        if not self.durable:
            self._feedback.append(record)
            return
        self._log("feedback", ts, [_feedback_row(record)])
        self.stats.feedback += 1

    def _partition(self, ts: float) -> tuple[str, str]:
        hour = int(ts // 3600)
        cached = self._hour
        if cached[0] == hour:
            return cached[1]
        part = partition_of(ts)
        self._hour = (hour, part)
        return part

    def _log(self, stream: str, ts: float, rows: list[dict[str, Any]]) -> None:
        """Durable mode: write ``rows`` now, to the destination file or the spool."""
        date, hour = self._partition(ts)
        key = (stream, date, hour)
        data = _encode_lines(rows)
        try:
            if self._spool is not None and (self.store.remote or stream == "capture"):
                self._spool.write(key, data)
                self._spooled += len(rows)
            else:
                with self._io_lock:
                    fd = self._fds.get(key)
                    if fd is None:
                        fd = self.store.open_append(self._part_dir(*key), f"{self.writer_id}.jsonl")
                        self._fds[key] = fd
                    self._fds_used.add(key)
                    append_record(fd, data)
        except (OSError, CaptureError) as exc:
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            raise CaptureError(f"capture of model {self.model_name!r} could not be written: {exc}") from exc

    @property
    def retained_rows(self) -> int:
        """Rows whose write failed, kept for the next flush (buffered mode)."""
        return sum(len(r) for r in self._retained.values())

    @property
    def backlog(self) -> int:
        """Records accepted but not yet in the destination."""
        queued = len(self._entries) + len(self._shadow) + len(self._feedback)
        return queued + self.retained_rows + self._spooled

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> CaptureWriter:
        self._thread = threading.Thread(target=self._run, name="saga-capture-flush", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the flusher and write everything still buffered (or spooled)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.flush()
        with self._io_lock:
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.fsync(fd)
                os.close(fd)
            self._fds.clear()
        if self._spool is not None:
            self._spool.close()

    def _run(self) -> None:
        self._guarded(self.replay_orphans)
        last_replay = time.monotonic()
        while not self._stop.wait(self.flush_interval):
            self._guarded(self.flush)
            if self._spool is not None and time.monotonic() - last_replay > REPLAY_EVERY_S:
                self._guarded(self.replay_orphans)
                last_replay = time.monotonic()

    def _guarded(self, fn: Any) -> None:
        try:
            fn()
        except Exception as exc:  # never let the flusher die; the next tick retries
            log.exception("capture flush failed")
            self._error(exc)

    def _error(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"

    def flush(self) -> int:
        """Write everything accepted so far; return the number of capture rows written."""
        with self._flush_lock:
            if self.durable:
                return self._flush_durable()
            return self._flush_buffered()

    def _flush_buffered(self) -> int:
        entries = _drain(self._entries)
        shadow = _drain(self._shadow)
        feedback = _drain(self._feedback)
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = self._retained
        self._retained = {}
        requests: dict[tuple[str, str, str], int] = collections.Counter()
        for e in entries:
            key = ("capture", *partition_of(e.ts))
            groups.setdefault(key, []).extend(e.records(self.model_name))
            requests[key] += 1
        for e in shadow:
            groups.setdefault(("shadow", *partition_of(e.ts)), []).extend(e.shadow_records())
        for f in feedback:
            groups.setdefault(("feedback", *partition_of(f["ts"])), []).append(_feedback_row(f))
        written = 0
        for key, rows in groups.items():
            try:
                self._write_rows(key, rows)
            except Exception as exc:
                log.warning("capture write to %s failed (%s); retrying at the next flush", self.location, exc)
                self._error(exc)
                self._retained[key] = rows
                continue
            if key[0] == "capture":
                written += len(rows)
                self.stats.requests += requests.get(key, 0)
            elif key[0] == "shadow":
                self.stats.shadow_rows += len(rows)
            else:
                self.stats.feedback += len(rows)
        self.stats.rows += written
        self._bound_retained()
        return written

    def _bound_retained(self) -> None:
        total = sum(len(r) for r in self._retained.values())
        while total > self.settings.max_retained_rows and self._retained:
            key = next(iter(self._retained))
            lost = self._retained.pop(key)
            total -= len(lost)
            self.stats.dropped += len(lost)
            log.error("capture of %s: dropped %d unwritable rows of %s", self.model_name, len(lost), key)

    def _write_rows(self, key: tuple[str, str, str], rows: list[dict[str, Any]]) -> None:
        stream = key[0]
        fmt = self.fmt if stream == "capture" else "jsonl"
        directory = self._part_dir(*key)
        if fmt == "jsonl" and not self.store.remote:
            fd = self.store.open_append(directory, f"{self.writer_id}.jsonl")
            try:
                append_record(fd, _encode_lines(rows))
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            self._seq += 1
            data = _encode_lines(rows) if fmt == "jsonl" else _parquet_bytes(rows)
            self.store.publish(directory, f"{self.writer_id}-{self._seq:06d}.{fmt}", data)
        self.stats.files += 1

    def _flush_durable(self) -> int:
        with self._io_lock:  # records are on disk already; fsync bounds what a power loss can take
            for key in list(self._fds):
                fd = self._fds[key]
                with contextlib.suppress(OSError):
                    os.fsync(fd)
                if key not in self._fds_used:  # an hour that has passed
                    os.close(fd)
                    del self._fds[key]
            self._fds_used = set()
        if self._spool is None:
            return 0
        segments = [*self._failed_segments, *self._spool.rotate()]
        self._failed_segments = []
        rows = 0
        for seg in segments:
            try:
                n = self._publish(seg)
            except Exception as exc:
                log.warning("capture publish of %s failed (%s); retrying at the next flush", seg.path, exc)
                self._error(exc)
                self._failed_segments.append(seg)
                continue
            self._spooled = max(0, self._spooled - n)
            rows += n if seg.stream == "capture" else 0
        return rows

    def _publish(self, seg: Segment) -> int:
        """Publish one spool segment as one destination file, then delete it; return its record count."""
        data = seg.complete_bytes()
        n = data.count(b"\n")
        if n:
            fmt = self.fmt if seg.stream == "capture" else "jsonl"
            payload = data if fmt == "jsonl" else _parquet_bytes(_decode_lines(data))
            self.store.publish(
                self._part_dir(seg.stream, seg.date, seg.hour),
                f"{seg.writer_id}-{seg.seq:06d}.{fmt}",
                payload,
            )
            self.stats.files += 1
        seg.path.unlink(missing_ok=True)
        return n

    def replay_orphans(self) -> int:
        """Publish the spooled records of dead writers of this model and root; return the segment count."""
        from airflow_saga.core.capture_spool import orphan

        base = self.spool_base / self.model_dirname
        if not base.is_dir():
            return 0
        own = self._spool.dir if self._spool is not None else None
        dirs = sorted(p for p in base.iterdir() if p.is_dir() and p != own)
        done = 0
        for d in dirs:
            with orphan(d, self.store.uri) as segments:
                if not segments:
                    continue
                for seg in segments:
                    self._publish(seg)
                    done += 1
                log.warning(
                    "capture: replayed %d spooled segment(s) of dead writer %s", len(segments), d.name
                )
        self.stats.replayed_segments += done
        return done

    def _part_dir(self, stream: str, date: str, hour: str) -> str:
        sub = STREAM_DIRS[stream]
        parts = [sub] if sub else []
        return self.store.join(self.model_dir, *parts, f"date={date}", f"hour={hour}")


def _feedback_row(f: dict[str, Any]) -> dict[str, Any]:
    return {
        "inference_id": f["inference_id"],
        "row": f["row"],
        "ground_truth": f["ground_truth"],
        "timestamp": iso(f["ts"]),
    }


def _drain(dq: collections.deque) -> list:
    out = []
    for _ in range(len(dq)):
        out.append(dq.popleft())
    return out


_ENCODERS = threading.local()  # one msgspec encoder per thread: durable mode encodes on every request


def _encode_lines(rows: Iterable[dict[str, Any]]) -> bytes:
    """JSON lines; msgspec (an mlflow dependency) is several times faster than json, in the server process."""
    enc = getattr(_ENCODERS, "enc", None)
    if enc is None:
        try:
            import msgspec
        except ImportError:  # pragma: no cover
            return "".join(json.dumps(r, default=_json_default) + "\n" for r in rows).encode()
        enc = _ENCODERS.enc = msgspec.json.Encoder(enc_hook=_json_default)
    buf = bytearray()
    for r in rows:
        enc.encode_into(r, buf, len(buf))
        buf += b"\n"
    return bytes(buf)


def _decode_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def _json_default(obj: Any) -> Any:
    """Numpy scalars/arrays and other odd values reach JSON as plain Python values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


@contextlib.contextmanager
def capture_writer(root: str | os.PathLike[str], model: str, **kwargs: Any) -> Iterator[CaptureWriter]:
    """A started writer that is flushed and closed on exit (for scripts and tests)."""
    w = CaptureWriter(root, model, **kwargs).start()
    try:
        yield w
    finally:
        w.close()
