"""Capture locations: URIs of any fsspec filesystem, credentials kept out of URIs and messages."""

from __future__ import annotations

import time

import pytest

from airflow_saga.core.capture import CaptureEntry, CaptureWriter
from airflow_saga.core.capture_scan import read_capture, scan_capture
from airflow_saga.core.capture_store import Store, redact_uri
from airflow_saga.core.errors import CaptureError

T0 = time.time() - 60


def _entry(i: int) -> CaptureEntry:
    return CaptureEntry(f"id-{i}", T0 + i, "champion", "1", ["x"], [[float(i)]], [i], 0.2)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("durability", ["buffered", "durable"])
def test_an_fsspec_filesystem_gets_one_object_per_flush_and_reads_back(tmp_path, fmt, durability):
    """``memory://`` stands for every fsspec protocol (it has no append, like an object store)."""
    import fsspec

    root = f"memory://capture-{fmt}-{durability}"
    w = CaptureWriter(root, "m", fmt, 3600, durability=durability, spool_dir=str(tmp_path / "spool"))
    for i in range(5):
        w.append(_entry(i))
    w.append_feedback("id-2", 5, None, T0 + 100)
    w.flush()
    for i in range(5, 8):
        w.append(_entry(i))
    w.close()
    mem = fsspec.filesystem("memory")
    paths = [p for p in mem.find(root.removeprefix("memory://")) if "_feedback" not in p]
    assert len(paths) == 2 and all(p.endswith(f".{fmt}") for p in paths), paths  # one object per flush
    assert all(p.rsplit("/", 1)[-1].startswith(w.writer_id + "-") for p in paths), paths
    df = read_capture(root, "m", with_feedback=True).set_index("inference_id")
    assert sorted(df.index) == [f"id-{i}" for i in range(8)]
    assert df.loc["id-2", "ground_truth"] == 5 and str(df["ground_truth"].dtype) == "Int64"
    assert scan_capture(root, "m", columns=["prediction"]).num_rows == 8
    if durability == "durable":
        assert not any((tmp_path / "spool").rglob("*.jsonl"))


@pytest.mark.parametrize(
    "uri",
    [
        "s3://AKIAEXAMPLE:hunter2@bucket/capture",
        "s3://bucket/capture?access_key=AKIAEXAMPLE&secret_key=hunter2",
        "gs://bucket/capture?credential=hunter2",
    ],
)
def test_credentials_in_a_uri_are_refused_without_echoing_them(uri):
    with pytest.raises(CaptureError, match="carries credentials") as exc:
        Store(uri)
    assert "hunter2" not in str(exc.value)
    assert "hunter2" not in redact_uri(uri)


def test_redaction_keeps_what_locates_the_data():
    assert redact_uri("s3://bucket/a/b?endpoint_override=minio:9000&scheme=http") == (
        "s3://bucket/a/b?endpoint_override=minio%3A9000&scheme=http"
    )
    assert redact_uri("/plain/path") == "/plain/path"
    assert redact_uri("https://user:pw@host/x?sig=abc") == "https://***@host/x?sig=***"


def test_an_unknown_scheme_or_empty_location_is_a_clear_error():
    with pytest.raises(CaptureError, match="cannot open capture location nosuchfs://x"):
        Store("nosuchfs://x/y")
    with pytest.raises(CaptureError, match="capture location is empty"):
        Store("  ")
