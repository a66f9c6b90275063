"""Capture writer and reader: partitions, formats, confinement, feedback join, durability rules."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from airflow_saga.core.capture import CaptureEntry, CaptureWriter, model_dirname
from airflow_saga.core.capture_scan import read_capture, read_feedback
from airflow_saga.core.capture_store import Store
from airflow_saga.core.errors import CaptureError

T0 = dt.datetime(2026, 3, 1, 10, 59, 59, tzinfo=dt.UTC).timestamp()


def _entry(i: int, ts: float, rows: int = 1, shadow: bool = False) -> CaptureEntry:
    e = CaptureEntry(
        inference_id=f"id-{i}",
        ts=ts,
        variant="champion",
        model_version="3",
        columns=["x", "y z"],
        rows=[[float(i), float(r)] for r in range(rows)],
        predictions=[i % 2] * rows,
        latency_ms=0.5,
    )
    if shadow:
        e.shadow_variant, e.shadow_model_version = "challenger", "4"
        e.shadow_predictions, e.shadow_latency_ms = [1] * rows, 0.7
    return e


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_roundtrip_partitions_and_window(tmp_path, fmt):
    w = CaptureWriter(tmp_path, "my-model", fmt=fmt, flush_interval=60)
    for i in range(10):
        w.append(_entry(i, T0 + i, shadow=i % 2 == 0))  # crosses the 10:00 -> 11:00 hour boundary
    w.append(_entry(99, T0, rows=3))
    w.close()
    parts = sorted(p.relative_to(tmp_path).parent.as_posix() for p in tmp_path.rglob(f"*.{fmt}"))
    assert set(parts) == {"my-model/date=2026-03-01/hour=10", "my-model/date=2026-03-01/hour=11"}
    df = read_capture(tmp_path, "my-model")
    assert len(df) == 13
    assert str(df["timestamp"].dt.tz) == "UTC"
    assert {"features.x", "features.y z", "prediction", "shadow_prediction", "shadow_error"} <= set(
        df.columns
    )
    multi = df[df.inference_id == "id-99"].sort_values("row")
    assert multi["row"].tolist() == [0, 1, 2] and multi["features.y z"].tolist() == [0.0, 1.0, 2.0]
    shadowed = df[df.inference_id == "id-0"].iloc[0]
    assert shadowed["shadow_prediction"] == 1 and shadowed["shadow_model_version"] == "4"
    # window [11:00, 11:00:05) holds ids 1..5 only, and reads only the hour=11 partition
    late = read_capture(
        tmp_path, "my-model", start="2026-03-01T11:00:00", end=dt.datetime(2026, 3, 1, 11, 0, 5)
    )
    assert sorted(late["inference_id"]) == [f"id-{i}" for i in range(1, 6)]
    cols = read_capture(tmp_path, "my-model", columns=["inference_id", "features.*"])
    assert list(cols.columns) == ["inference_id", "features.x", "features.y z"]
    with pytest.raises(CaptureError, match="no column 'nope'"):
        read_capture(tmp_path, "my-model", columns=["nope"])


def test_pyarrow_dataset_reads_hive_partitions(tmp_path):
    import pyarrow.dataset as ds

    w = CaptureWriter(tmp_path, "m", fmt="parquet", flush_interval=60)
    for i in range(4):
        w.append(_entry(i, T0 + i))
    w.append_feedback("id-1", 1, None, T0 + 100)
    w.close()
    table = ds.dataset(tmp_path / "m", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 4  # _feedback is skipped by pyarrow's default ignore_prefixes
    assert {"date", "hour"} <= set(table.column_names)


def test_empty_window_has_the_schema(tmp_path):
    df = read_capture(tmp_path, "nothing-here")
    assert df.empty and "inference_id" in df.columns


def test_feedback_join_latest_wins_and_row_specific(tmp_path):
    w = CaptureWriter(tmp_path, "m", flush_interval=60)
    w.append(_entry(1, T0))
    w.append(_entry(2, T0, rows=2))
    w.append(_entry(3, T0))
    w.append_feedback("id-1", 0, None, T0 + 5)
    w.append_feedback("id-1", 1, None, T0 + 6)  # a correction: the later label wins
    w.append_feedback("id-2", "b", 1, T0 + 7)
    w.close()
    assert len(read_feedback(tmp_path, "m")) == 2
    df = read_capture(tmp_path, "m", with_feedback=True).set_index(["inference_id", "row"])
    assert df.loc[("id-1", 0), "ground_truth"] == 1
    assert df.loc[("id-2", 1), "ground_truth"] == "b"
    assert df.loc[("id-2", 0), "ground_truth"] is None
    assert df.loc[("id-3", 0), "ground_truth"] is None


def test_torn_last_line_is_skipped(tmp_path):
    w = CaptureWriter(tmp_path, "m", flush_interval=60)
    w.append(_entry(1, T0))
    w.close()
    (f,) = list(tmp_path.rglob("*.jsonl"))
    with open(f, "a") as fh:
        fh.write('{"inference_id": "half')  # what a hard kill mid-write leaves
    assert read_capture(tmp_path, "m")["inference_id"].tolist() == ["id-1"]


@pytest.mark.parametrize(
    "name", ["../evil", "..", ".", "a/../../b", "/etc/passwd", "_hidden", ".dot", "a\\b"]
)
def test_model_names_never_escape_the_root(tmp_path, name):
    root = tmp_path / "cap"
    w = CaptureWriter(root, name, flush_interval=60)
    w.append(_entry(1, T0))
    w.close()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(p.is_relative_to(root) for p in files)
    (model_dir,) = [p for p in root.iterdir()]
    assert not model_dir.name.startswith((".", "_")) and "/" not in model_dir.name
    assert read_capture(root, name)["model_name"].tolist() == [name]


def test_confinement_refuses_symlink_escape(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path, root / "link")
    with pytest.raises(CaptureError, match="escapes"):
        Store(root).join(str(root.resolve()), "link", "x")
    with pytest.raises(CaptureError):
        model_dirname("")
    with pytest.raises(CaptureError):
        model_dirname("a\x00b")


def test_background_flush_and_backlog(tmp_path):
    import time

    w = CaptureWriter(tmp_path, "m", flush_interval=0.05).start()
    w.append(_entry(1, T0))
    deadline = time.monotonic() + 10
    while w.stats.rows < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert w.stats.rows == 1 and w.backlog == 0
    w.close()


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_window_bounds_unset_params_mean_no_bound(empty):
    from airflow_saga.core.capture_scan import to_utc

    assert to_utc(empty) is None


def test_window_bounds_naive_means_utc():
    import datetime as dt

    from airflow_saga.core.capture_scan import to_utc

    assert to_utc("2026-11-22T05:00:00") == dt.datetime(2026, 11, 22, 5, tzinfo=dt.UTC)


# --- labels keep their type (issue 9) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "dtype", "missing"),
    [
        ([1, 0, 1], "Int64", "NA"),  # ints stay ints even though id-3 has no label
        ([0.25, 1.5, 2.0], "float64", "NaN"),
        (["cat", "dog", "cat"], "object", None),
        ([True, False, True], "boolean", "NA"),
        ([1, "b", 2.5], "object", None),  # mixed types keep their own Python values
    ],
)
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_feedback_labels_keep_their_type_when_some_are_missing(tmp_path, labels, dtype, missing, fmt):
    import pandas as pd

    w = CaptureWriter(tmp_path, "m", fmt=fmt, flush_interval=60)
    for i in range(4):
        w.append(_entry(i, T0 + i))
    for i, label in enumerate(labels):
        w.append_feedback(f"id-{i}", label, None, T0 + 10 + i)
    w.close()
    df = read_capture(tmp_path, "m", with_feedback=True).set_index("inference_id")
    truth = df["ground_truth"]
    assert str(truth.dtype) == dtype
    got = [truth[f"id-{i}"] for i in range(3)]
    assert got == labels
    if dtype == "object":  # Python values, each of its own type
        assert [type(g) for g in got] == [type(x) for x in labels]
    last = truth["id-3"]
    assert (last is None) if missing is None else (pd.isna(last) and (missing != "NA" or last is pd.NA))
    assert df["feedback_timestamp"].isna().sum() == 1
    fb = read_feedback(tmp_path, "m")
    assert str(fb["ground_truth"].dtype) == dtype and str(fb["row"].dtype) == "Int64"


def test_arrow_feedback_scan_reads_mixed_labels_as_text(tmp_path):
    from airflow_saga.core.capture_scan import scan_feedback

    w = CaptureWriter(tmp_path, "m", flush_interval=60)
    w.append_feedback("a", 1, None, T0)
    w.append_feedback("b", "x", None, T0)
    w.close()
    t = scan_feedback(tmp_path, "m")
    assert t.column("ground_truth").to_pylist() == ["1", "x"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_iter_capture_yields_the_scan_in_bounded_pieces(tmp_path, fmt):
    import pyarrow as pa

    from airflow_saga.core.capture_scan import iter_capture, scan_capture

    w = CaptureWriter(tmp_path, "m", fmt=fmt, flush_interval=60)
    for i in range(300):
        w.append(_entry(i, T0 + i, rows=2, shadow=i % 3 == 0))  # crosses an hour boundary
    w.close()
    cols = ["inference_id", "row", "prediction", "shadow_prediction"]
    whole = scan_capture(tmp_path, "m", T0 + 5, T0 + 250, cols, features=True)
    pieces = list(iter_capture(tmp_path, "m", T0 + 5, T0 + 250, cols, features=True, batch_rows=64))
    assert len(pieces) > 1 and max(p.num_rows for p in pieces) <= 64
    joined = pa.concat_tables(pieces, promote_options="permissive")
    assert joined.num_rows == whole.num_rows == 490
    assert joined.column("inference_id").to_pylist() == whole.column("inference_id").to_pylist()
    assert joined.column("features.y z").to_pylist() == whole.column("features.y z").to_pylist()
    again = pa.concat_tables(iter_capture(tmp_path, "m", T0 + 5, T0 + 250, cols, batch_rows=64))
    assert again.column("inference_id").to_pylist() == joined.column("inference_id").to_pylist()  # stable
