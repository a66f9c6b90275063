"""The local write-ahead spool of durable capture, for destinations that cannot be appended to.

Durable capture promises that a request's record exists before its response is sent. An object store
cannot append, and a Parquet file cannot grow by one record, so for those destinations (and only those)
each record is first appended, with one ``write(2)``, to a JSON-lines *segment* on a local disk::

    <spool>/<model>/<writer-id>/lock                                   held (flock) while the writer lives
    <spool>/<model>/<writer-id>/meta.json                              the destination root it belongs to
    <spool>/<model>/<writer-id>/<seq>~<stream>~<date>~<hour>.jsonl     records of one flush interval

Every flush interval the writer closes its open segments and publishes each as one destination file
(``<writer-id>-<seq>.jsonl`` or ``.parquet``), then deletes it. The page cache keeps a written segment
through the death of the process (not through a power loss: nothing is fsynced per request).

After a crash, the writer's ``lock`` is free (the kernel drops an flock with its process). Any writer of
the same model and root that starts later (a restarted gateway, another worker) takes the lock of each
dead writer's directory, publishes its segments under the dead writer's id and sequence numbers, and
removes it. Publishing is idempotent (same name, same bytes), so a replay interrupted by another crash is
simply done again, never duplicated. A torn last line (the process died inside a write, before it could
answer the request) is not a record and is dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_saga.core.capture_store import append_record, make_local_dirs, open_new_file, write_all
from airflow_saga.core.errors import CaptureError

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (stream, date, hour)
_WARNED: set[Path] = set()


@dataclass(frozen=True, slots=True)
class Segment:
    path: Path
    writer_id: str
    seq: int
    stream: str
    date: str
    hour: str

    @classmethod
    def parse(cls, path: Path, writer_id: str) -> Segment | None:
        parts = path.name.removesuffix(".jsonl").split("~")
        if len(parts) != 4 or not parts[0].isdigit() or not path.name.endswith(".jsonl"):
            return None
        return cls(path, writer_id, int(parts[0]), parts[1], parts[2], parts[3])

    def complete_bytes(self) -> bytes:
        """The segment's whole lines (a torn last line is the record of a request never answered)."""
        data = self.path.read_bytes()
        return data[: data.rfind(b"\n") + 1]


class Spool:
    """One live writer's segments. ``write`` is the response path; ``rotate`` is the flusher's."""

    def __init__(
        self, base: str | os.PathLike[str], model_dir: str, writer_id: str, root: str, file_mode: int,
        dir_mode: int,
    ) -> None:  # fmt: skip
        self.model_base = Path(base).resolve() / model_dir
        self.dir = self.model_base / writer_id
        self.writer_id = writer_id
        self.root = root
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        try:
            make_local_dirs(self.dir, dir_mode)
            self._lock_fd = open_new_file(self.dir / "lock", file_mode, append=True)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            meta = json.dumps({"root": root, "writer_id": writer_id}).encode()
            fd = open_new_file(self.dir / "meta.json", file_mode, append=False)
            try:
                write_all(fd, meta)
            finally:
                os.close(fd)
        except OSError as exc:
            raise CaptureError(f"cannot create the capture spool {self.dir}: {exc}") from exc
        self._lock = threading.Lock()
        self._open: dict[Key, tuple[int, Segment]] = {}
        self._seq = 0

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def write(self, key: Key, data: bytes) -> None:
        """Append whole lines to the open segment of ``key`` (one ``write(2)``; no fsync)."""
        with self._lock:
            current = self._open.get(key)
            if current is None:
                self._seq += 1
                seg = Segment(self.dir / f"{self._seq:09d}~{key[0]}~{key[1]}~{key[2]}.jsonl",
                              self.writer_id, self._seq, *key)  # fmt: skip
                current = (open_new_file(seg.path, self.file_mode, append=True), seg)
                self._open[key] = current
            append_record(current[0], data)

    def rotate(self) -> list[Segment]:
        """Close the open segments and hand them over; records written from now on start new ones."""
        with self._lock:
            opened, self._open = self._open, {}
        for fd, _ in opened.values():
            os.close(fd)
        return sorted((seg for _, seg in opened.values()), key=lambda s: s.seq)

    @property
    def open_segments(self) -> int:
        return len(self._open)

    def close(self) -> None:
        """Release the lock; remove the directory unless unpublished segments remain (a later start replays
        them)."""
        self.rotate()
        if not any(p.suffix == ".jsonl" for p in self.dir.iterdir()):
            shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._lock_fd)


@contextlib.contextmanager
def orphan(directory: Path, root: str) -> Iterator[list[Segment] | None]:
    """The segments of a dead writer's directory, under its lock; None if it lives or is another root's."""
    try:
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None  # its writer is alive
            return
        try:
            meta = json.loads((directory / "meta.json").read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("root") != root:
            if meta and directory not in _WARNED:
                _WARNED.add(directory)
                log.warning(
                    "capture spool %s belongs to %s, not %s: left alone", directory, meta["root"], root
                )
            yield None
            return
        segs = [s for p in directory.glob("*.jsonl") if (s := Segment.parse(p, directory.name)) is not None]
        yield sorted(segs, key=lambda s: s.seq)
        if not any(directory.glob("*.jsonl")):
            shutil.rmtree(directory, ignore_errors=True)
    finally:
        os.close(fd)
