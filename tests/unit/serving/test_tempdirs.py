"""Stale model copies: a killed gateway's directories are removed at the next start, never a live one's."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from airflow_saga.serving import tempdirs


def _dir(prefix: str, marker: str | None) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    (d / "model.pkl").write_bytes(b"x")
    if marker is not None:
        (d / tempdirs.MARKER).write_text(marker)
    return d


def test_only_directories_of_exited_owners_are_removed():
    prefix = f"saga-test-{uuid.uuid4().hex[:6]}-"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = tempdirs._start_time(live.pid)
        dead_owner = _dir(prefix, f"{gone.pid} 12345\n")
        live_owner = _dir(prefix, f"{live.pid} {started}\n")
        recycled = _dir(prefix, f"{live.pid} 1\n")  # same pid, another process: its owner is gone
        unmarked = _dir(prefix, None)
        garbled = _dir(prefix, "not a marker")
        mine = tempdirs.make(prefix)
        removed = set(tempdirs.clean_stale(prefix))
        assert removed == {dead_owner, recycled}
        for d in (live_owner, unmarked, garbled, mine):
            assert d.exists()
    finally:
        live.kill()
        live.wait()
        for d in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
            tempdirs.remove(d)


def test_the_model_loader_cleans_stale_copies_at_start():
    from airflow_saga.core.mlflow_client import MlflowSettings
    from airflow_saga.serving.models import CACHE_PREFIX, Loader

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = _dir(CACHE_PREFIX, f"{gone.pid} 12345\n")
    loader = Loader(MlflowSettings(tracking_uri="http://127.0.0.1:9"), "m")  # no request is made
    try:
        assert not stale.exists()
        owner = (Path(loader.cache_dir) / tempdirs.MARKER).read_text().split()[0]
        assert owner == str(os.getpid())
    finally:
        loader.close()
    assert not Path(loader.cache_dir).exists()
