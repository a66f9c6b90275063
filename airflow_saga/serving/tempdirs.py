"""Private temporary directories that a killed gateway's successor can clean up safely.

A gateway keeps downloaded model copies (and, with several workers, Prometheus' multiprocess files) in
directories under the system temp dir. A SIGKILL or OOM kill leaves them behind. Each directory carries an
``owner`` marker (pid and process start time); at start, a gateway removes directories of its own kind
whose owner is gone. A directory whose owner still runs (another live gateway) is never touched, nor is one
without a marker (it is not provably ours), nor one the marker cannot be read from. The start time guards
against a recycled pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = ".saga-owner"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None when it is not running."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"  # alive, owned by someone else
        return "?"  # alive; no /proc to read a start time from
    return stat.rsplit(b")", 1)[1].split()[19].decode()  # field 22; the name may contain spaces


def make(prefix: str) -> Path:
    """A new private directory ``<tmp>/<prefix>XXXX`` marked as owned by this process."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    pid = os.getpid()
    (path / MARKER).write_text(f"{pid} {_start_time(pid) or '?'}\n")
    return path


def _stale(path: Path) -> bool:
    try:
        pid_s, started = (path / MARKER).read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        return False  # no marker, or not ours to judge
    if pid == os.getpid():
        return False
    now = _start_time(pid)
    return now is None or (started != "?" and now != "?" and now != started)


def clean_stale(prefix: str) -> list[Path]:
    """Remove ``<tmp>/<prefix>*`` directories whose owning process has exited; return what was removed."""
    removed = []
    base = Path(tempfile.gettempdir())
    for path in base.glob(f"{prefix}*"):
        if path.is_dir() and not path.is_symlink() and _stale(path):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    if removed:
        log.warning("removed %d stale %s* directories left by killed gateways", len(removed), prefix)
    return removed


def remove(path: Path | str | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(path)
