"""Durable capture, the write-ahead spool and its replay after a real SIGKILL, shadow results merged back,
and file permissions: real files and real processes, no mocks."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_saga.core.capture import (
    SHADOW_PENDING,
    CaptureEntry,
    CaptureSettings,
    CaptureWriter,
    partition_of,
)
from airflow_saga.core.capture_scan import read_capture, scan_capture
from airflow_saga.core.errors import CaptureError
from tests.conftest import REPO

T0 = time.time() - 60


def _entry(i: int, *, pending: bool = False) -> CaptureEntry:
    e = CaptureEntry(f"id-{i}", T0 + i * 0.001, "champion", "1", ["x"], [[float(i)]], [i % 2], 0.4)
    if pending:
        e.shadow_variant, e.shadow_model_version, e.shadow_error = "challenger", "2", SHADOW_PENDING
    return e


def _shadow(i: int, value: int | None = 7, error: str | None = None) -> CaptureEntry:
    e = _entry(i)
    e.shadow_variant, e.shadow_model_version = "challenger", "2"
    e.shadow_predictions, e.shadow_latency_ms, e.shadow_error = (
        (None if value is None else [value]),
        1.5,
        error,
    )
    return e


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_durable_records_are_on_disk_when_append_returns(tmp_path, fmt):
    # No flusher thread and no close(): what a reader finds is what append() itself wrote.
    w = CaptureWriter(tmp_path, "m", fmt, 3600, durability="durable")
    for i in range(20):
        w.append(_entry(i))
    w.append_feedback("id-3", 1, None, time.time())
    on_disk = b"".join(
        p.read_bytes() for p in _files(tmp_path) if p.suffix == ".jsonl" and "_feedback" not in str(p)
    )
    assert on_disk.count(b"\n") == 20  # local JSONL: the capture file itself; Parquet: the spool segment
    if fmt == "jsonl":
        assert len(read_capture(tmp_path, "m")) == 20
    else:
        assert (tmp_path / "_spool" / "m" / w.writer_id).is_dir()
        assert read_capture(tmp_path, "m").empty  # not published yet: the spool is not a capture file
        w.flush()
        assert not list((tmp_path / "_spool" / "m" / w.writer_id).glob("*.jsonl"))
        assert len(list(tmp_path.rglob("*.parquet"))) == 1
    df = read_capture(tmp_path, "m", with_feedback=True).set_index("inference_id")
    assert len(df) == 20 and df.loc["id-3", "ground_truth"] == 1
    w.close()
    assert not (tmp_path / "_spool" / "m").exists() or not any((tmp_path / "_spool" / "m").iterdir())


CHILD = r"""
import sys, time
from airflow_saga.core.capture import CaptureEntry, CaptureWriter
root, fmt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
w = CaptureWriter(root, "m", fmt, 3600, durability=sys.argv[4], spool_dir=sys.argv[5]).start()
t0 = time.time()
for i in range(n):
    w.append(CaptureEntry(f"k-{i}", t0, "champion", "1", ["x"], [[float(i)]], [1], 0.1))
    w.append_feedback(f"k-{i}", i, None, t0)
print("appended", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(
    ("fmt", "durability"), [("jsonl", "durable"), ("parquet", "durable"), ("jsonl", "buffered")]
)
def test_sigkill_loses_nothing_in_durable_mode_and_the_spool_is_replayed(tmp_path, fmt, durability):
    root, spool = tmp_path / "cap", tmp_path / "spool"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), fmt, "500", durability, str(spool)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "appended"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # the next writer on the same root (a restarted gateway) publishes what the dead one spooled
    w = CaptureWriter(root, "m", fmt, 3600, durability=durability, spool_dir=str(spool))
    replayed = w.replay_orphans()
    w.close()
    ids = set(read_capture(root, "m")["inference_id"])
    labels = read_capture(root, "m", with_feedback=True)["ground_truth"]
    if durability == "buffered":  # the honest baseline: everything was still in memory
        assert ids == set() and replayed == 0
        return
    assert ids == {f"k-{i}" for i in range(500)}
    assert labels.notna().all() and str(labels.dtype) == "Int64"
    assert replayed == (1 if fmt == "parquet" else 0)
    assert not any(spool.rglob("*.jsonl"))  # published and removed
    # a second replay finds nothing left to do, so nothing is duplicated
    w2 = CaptureWriter(root, "m", fmt, 3600, durability=durability, spool_dir=str(spool))
    assert w2.replay_orphans() == 0
    w2.close()
    assert len(read_capture(root, "m")) == 500


def test_a_live_writers_spool_is_never_replayed_by_another(tmp_path):
    a = CaptureWriter(tmp_path, "m", "parquet", 3600, durability="durable")
    a.append(_entry(1))
    b = CaptureWriter(tmp_path, "m", "parquet", 3600, durability="durable")
    assert b.replay_orphans() == 0  # a holds its lock
    assert read_capture(tmp_path, "m").empty
    a.close()
    b.close()
    assert read_capture(tmp_path, "m")["inference_id"].tolist() == ["id-1"]


def test_a_torn_spool_line_is_dropped_and_the_rest_replayed(tmp_path):
    w = CaptureWriter(tmp_path, "m", "parquet", 3600, durability="durable")
    w.append(_entry(1))
    (seg,) = list(w._spool.dir.glob("*.jsonl"))
    with open(seg, "ab") as fh:
        fh.write(b'{"inference_id": "never-answe')  # a process killed inside write(2)
    os.close(w._spool._lock_fd)  # the kernel does this when the process dies
    for fd, _ in w._spool._open.values():
        os.close(fd)
    w2 = CaptureWriter(tmp_path, "m", "parquet", 3600, durability="durable")
    assert w2.replay_orphans() == 1
    w2.close()
    assert read_capture(tmp_path, "m")["inference_id"].tolist() == ["id-1"]


def test_a_failed_durable_write_raises_so_the_gateway_can_refuse_the_request(tmp_path):
    w = CaptureWriter(tmp_path, "m", "jsonl", 3600, durability="durable")
    w.append(_entry(1))
    later = _entry(2)
    later.ts += 7200  # a new hour partition, whose file cannot be created: a directory has its name
    blocker = Path(w._part_dir("capture", *partition_of(later.ts))) / f"{w.writer_id}.jsonl"
    blocker.mkdir(parents=True)
    with pytest.raises(CaptureError, match=r"capture of model 'm' could not be written: .*Is a directory"):
        w.append(later)
    assert w.stats.errors == 1 and w.stats.rows == 1
    w.close()
    assert read_capture(tmp_path, "m")["inference_id"].tolist() == ["id-1"]


def test_a_failed_buffered_write_is_retried_at_the_next_flush(tmp_path):
    w = CaptureWriter(tmp_path, "m", "parquet", 3600)
    w.append(_entry(1))
    hour_dir = Path(w._part_dir("capture", *partition_of(T0)))
    hour_dir.parent.mkdir(parents=True)
    hour_dir.write_text("a file where the partition directory should be")
    assert w.flush() == 0 and w.retained_rows == 1 and w.stats.errors == 1
    hour_dir.unlink()
    assert w.flush() == 1 and w.retained_rows == 0
    assert read_capture(tmp_path, "m")["inference_id"].tolist() == ["id-1"]


# --- shadow results of durable capture -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_shadow_results_are_merged_into_pending_records(tmp_path, fmt):
    w = CaptureWriter(tmp_path, "m", fmt, 3600, durability="durable")
    for i in range(4):
        w.append(_entry(i, pending=i < 3))  # id-3 was not mirrored
    w.append_shadow(_shadow(0))
    w.append_shadow(_shadow(1, value=None, error="ValueError: boom"))
    # id-1 recorded twice (a shadow process died after writing, and the gateway recorded the death):
    w.append_shadow(_shadow(1, value=5))
    # id-2: the gateway was killed before its shadow copy was scored: no result ever arrives
    w.close()
    df = read_capture(tmp_path, "m").set_index("inference_id")
    assert df.loc["id-0", "shadow_prediction"] == 7 and df.loc["id-0", "shadow_error"] is None
    assert df.loc["id-1", "shadow_prediction"] == 5 and df.loc["id-1", "shadow_error"] is None  # scored wins
    assert (
        df.loc["id-2", "shadow_error"] == SHADOW_PENDING and df.loc["id-2", "shadow_variant"] == "challenger"
    )
    assert df.loc["id-3", "shadow_variant"] is None
    # the monitors' own column selections get the merge too
    t = scan_capture(tmp_path, "m", columns=["shadow_prediction", "shadow_error"])
    assert sorted(t.column_names) == ["shadow_error", "shadow_prediction", "timestamp"]
    assert t.column("shadow_prediction").null_count == 2
    from airflow_saga.core.capture_scan import iter_capture

    (piece,) = list(iter_capture(tmp_path, "m", columns=["shadow_prediction", "shadow_error"]))
    assert piece.column("shadow_prediction").to_pylist() == t.column("shadow_prediction").to_pylist()
    from airflow_saga.core import shadow

    table, _ = shadow.read_window(str(tmp_path), "m", None, None)
    report = shadow.compare(table, model_name="m")
    assert report["candidate"]["metrics"]["not_scored"] == 1  # the pending one reads as "not run"


# --- permissions ---------------------------------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
@pytest.mark.parametrize(("fmt", "durability"), [("jsonl", "buffered"), ("parquet", "durable")])
def test_default_permissions_are_owner_and_group_whatever_the_umask(tmp_path, umask, fmt, durability):
    old = os.umask(umask)
    try:
        w = CaptureWriter(tmp_path / "cap", "m", fmt, 3600, durability=durability)
        w.append(_entry(1, pending=True))
        w.append_shadow(_shadow(1))
        w.append_feedback("id-1", 0, None, time.time())
        w.close()
    finally:
        os.umask(old)
    made = [p for p in (tmp_path / "cap").rglob("*")]
    files = [p for p in made if p.is_file()]
    dirs = [tmp_path / "cap", *(p for p in made if p.is_dir())]
    assert {p.suffix for p in files} >= {".jsonl"} and len(files) >= 3
    assert {_mode(p) for p in files} == {0o640}, {str(p): oct(_mode(p)) for p in files}
    assert {_mode(p) for p in dirs} == {0o750}, {str(p): oct(_mode(p)) for p in dirs}


def test_permissions_are_configurable_and_existing_directories_are_left_alone(tmp_path):
    root = tmp_path / "cap"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    w = CaptureWriter(root, "m", "parquet", 3600, durability="durable", file_mode="0600", dir_mode=0o700)
    w.append(_entry(1))
    w.close()
    assert _mode(root) == 0o755
    assert {_mode(p) for p in root.rglob("*") if p.is_file()} == {0o600}
    assert {_mode(p) for p in root.rglob("*") if p.is_dir()} == {0o700}


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("file_mode", "0440", "must give the owner rw"),
        ("dir_mode", "0640", "must give the owner rwx"),
        ("file_mode", "rw-r-----", "octal permission mode"),
        ("file_mode", "01777", "between 000 and 777"),
        ("dir_mode", True, "octal permission mode"),
        ("durability", "fsync", "durability must be one of"),
        ("fmt", "csv", "format must be one of"),
        ("flush_interval", 0, "flush interval must be positive"),
    ],
)
def test_bad_capture_settings_name_the_field_and_value(tmp_path, key, value, needle):
    with pytest.raises(CaptureError, match=needle):
        CaptureSettings(str(tmp_path), **{key: value})
    assert not any(tmp_path.iterdir())  # nothing created


def test_gateway_config_carries_capture_options_and_refuses_bad_ones(tmp_path):
    from airflow_saga.core.errors import ServingError
    from airflow_saga.serving.config import GatewayConfig

    cfg = GatewayConfig(
        model="m", capture_dir=str(tmp_path), capture_durability="durable", capture_file_mode="600"
    )
    s = cfg.capture_settings()
    assert (s.durability, s.file_mode, s.dir_mode) == ("durable", 0o600, 0o750)
    assert GatewayConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ServingError, match=r"capture directory mode must be an octal .* got '0700x'"):
        GatewayConfig(model="m", capture_dir=str(tmp_path), capture_dir_mode="0700x")
    with pytest.raises(ServingError, match="capture_durability must be buffered or durable, got 'sync'"):
        GatewayConfig(model="m", capture_durability="sync")


def test_serve_cli_parses_the_capture_flags():
    from airflow_saga.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "m", "--capture-dir", "s3://bucket/capture", "--capture-durability", "durable",
         "--capture-spool-dir", "/var/spool/saga", "--capture-file-mode", "0600",
         "--capture-dir-mode", "0700"]
    )  # fmt: skip
    assert (args.capture_dir, args.capture_durability, args.capture_spool_dir) == (
        "s3://bucket/capture", "durable", "/var/spool/saga",
    )  # fmt: skip
    assert (args.capture_file_mode, args.capture_dir_mode) == ("0600", "0700")


def test_meta_names_the_root_and_a_foreign_root_is_left_alone(tmp_path):
    spool = tmp_path / "spool"
    a = CaptureWriter(tmp_path / "a", "m", "parquet", 3600, durability="durable", spool_dir=str(spool))
    a.append(_entry(1))
    meta = json.loads((a._spool.dir / "meta.json").read_text())
    assert meta["root"] == str((tmp_path / "a").resolve())
    os.close(a._spool._lock_fd)
    for fd, _ in a._spool._open.values():
        os.close(fd)
    b = CaptureWriter(tmp_path / "b", "m", "parquet", 3600, durability="durable", spool_dir=str(spool))
    assert b.replay_orphans() == 0  # another root's records are not published into this one
    b.close()
    c = CaptureWriter(tmp_path / "a", "m", "parquet", 3600, durability="durable", spool_dir=str(spool))
    assert c.replay_orphans() == 1
    c.close()
    assert len(read_capture(tmp_path / "a", "m")) == 1 and read_capture(tmp_path / "b", "m").empty
