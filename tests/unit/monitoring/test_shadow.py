"""Shadow comparison over capture files written by the gateway's own writer (no mocks)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from airflow_saga.core import shadow, statistics
from airflow_saga.core.errors import DataError
from tests.support.capture_data import features, write_capture, write_feedback


def _window(info):
    return (dt.datetime.fromtimestamp(info["start"], dt.UTC), dt.datetime.fromtimestamp(info["end"], dt.UTC))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_classification_agreement_latency_and_labelled_quality(tmp_path, fmt):
    x = features(5000, 4, seed=3)
    info = write_capture(tmp_path, "m", x, fmt=fmt, challenger_flip=0.1, rows_per_request=5)
    write_feedback(info["writer"], info["ids"], info["truth"], 5, share=0.6)
    table, labels = shadow.read_window(str(tmp_path), "m", *_window(info))
    assert table.num_rows == 5000
    rep = shadow.compare(table, model_name="m", labels=labels, min_requests=10)
    cand, champ = rep["candidate"]["metrics"], rep["champion"]["metrics"]
    assert rep["task"] == "classification"
    assert cand["agreement"] == pytest.approx(0.9, abs=0.02)
    assert cand["agreement_ci_low"] < cand["agreement"] < cand["agreement_ci_high"]
    assert cand["requests"] == champ["requests"] == 1000
    assert cand["error_rate"] == 0.0 and champ["error_rate"] == 0.0
    assert 0 < champ["latency_p50_ms"] <= champ["latency_p99_ms"]
    assert rep["labels"]["rows"] == 3000
    # the champion predicts the truth's main driver, the challenger flips 10% of its answers
    assert champ["accuracy"] > cand["accuracy"]
    assert cand["accuracy_gain_ci_high"] < 0
    truth = info["truth"][:3000]
    champ_pred = (x[:3000, 0] > 0).astype(int)
    assert champ["accuracy"] == pytest.approx(float((truth == champ_pred).mean()))
    assert champ["f1_ci_low"] <= champ["f1"] <= champ["f1_ci_high"]
    cm = rep["comparison"]["confusion"]
    assert sum(map(sum, cm["matrix"])) == 5000
    assert cm["matrix"][0][1] + cm["matrix"][1][0] == round(5000 * (1 - cand["agreement"]))


def test_regression_differences_and_mae(tmp_path):
    x = features(2000, 3, seed=1)
    info = write_capture(tmp_path, "r", x, regression=True, rows_per_request=1)
    write_feedback(info["writer"], info["ids"], info["truth"], 1)
    table, labels = shadow.read_window(str(tmp_path), "r", *_window(info))
    rep = shadow.compare(table, model_name="r", labels=labels, regression_tolerance=0.05)
    assert rep["task"] == "regression"
    d = rep["comparison"]["differences"]
    assert abs(d["mean"]) < 0.01 and d["std"] == pytest.approx(0.05, rel=0.1)
    m = rep["champion"]["metrics"]
    assert m["mae"] == pytest.approx(0.1 * math.sqrt(2 / math.pi), rel=0.1)
    assert m["mae_ci_low"] < m["mae"] < m["mae_ci_high"] and m["rmse"] >= m["mae"]


def test_empty_and_too_small_windows_are_insufficient(tmp_path):
    table, labels = shadow.read_window(str(tmp_path), "nothing", None, None)
    with pytest.raises(shadow.InsufficientDataError, match="empty"):
        shadow.compare(table, model_name="nothing", labels=labels)
    info = write_capture(tmp_path, "m", features(30, 2), rows_per_request=10)
    table, _ = shadow.read_window(str(tmp_path), "m", *_window(info))
    with pytest.raises(shadow.InsufficientDataError, match="only 3 mirrored request"):
        shadow.compare(table, model_name="m", min_requests=50)


def test_no_mirroring_is_insufficient(tmp_path):
    info = write_capture(tmp_path, "m", features(100, 2), challenger_version=None)
    table, _ = shadow.read_window(str(tmp_path), "m", *_window(info))
    with pytest.raises(shadow.InsufficientDataError, match="mirrored"):
        shadow.compare(table, model_name="m")


def test_challenger_that_errored_on_every_request(tmp_path):
    info = write_capture(tmp_path, "m", features(200, 2), challenger_error="RuntimeError: boom")
    table, _ = shadow.read_window(str(tmp_path), "m", *_window(info))
    with pytest.raises(shadow.ChallengerFailedError, match="errored on all 200") as exc:
        shadow.compare(table, model_name="m")
    assert exc.value.report["candidate"]["metrics"]["error_rate"] == 1.0
    assert exc.value.report["comparison"]["errors"]["top"] == {"RuntimeError": 200}


def test_dropped_copies_are_not_challenger_errors(tmp_path):
    info = write_capture(tmp_path, "m", features(100, 2), rows_per_request=10)
    write_capture(
        tmp_path,
        "m",
        features(50, 2),
        challenger_error="dropped: shadow queue full",
        start_ts=info["start"] + 2,
        id_prefix="dropped",  # other requests (the same inference id would be the same request, counted once)
    )
    table, _ = shadow.read_window(str(tmp_path), "m", None, None)
    rep = shadow.compare(table, model_name="m")
    assert rep["candidate"]["metrics"]["not_scored"] == 50
    assert rep["candidate"]["metrics"]["error_rate"] == 0.0


def test_window_bounds_are_half_open(tmp_path):
    info = write_capture(tmp_path, "m", features(100, 2), rows_per_request=1, spacing_s=1.0)
    start = dt.datetime.fromtimestamp(info["start"] + 1 + 10, dt.UTC)  # request 10 is at start+1+10
    end = dt.datetime.fromtimestamp(info["start"] + 1 + 20, dt.UTC)
    table, _ = shadow.read_window(str(tmp_path), "m", start, end)
    assert table.num_rows == 10


def test_wilson_and_f1_intervals():
    lo, hi = statistics.wilson(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35  # the normal interval would be [0, 0]
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 4000)
    p = np.where(rng.random(4000) < 0.8, t, 1 - t)
    r = statistics.f1_with_ci(t.astype(float), p.astype(float))
    assert r["f1_ci_low"] < r["f1"] < r["f1_ci_high"] and r["f1_ci_high"] - r["f1_ci_low"] < 0.06


def test_per_slice_agreement_and_quality_catch_a_challenger_worse_on_one_segment(tmp_path):
    """The challenger is as good as the champion overall but flips half its answers where f1 >= 1: the
    per-slice report shows it, and the gate's slice_improves blocks it, naming the slice."""
    from airflow_saga.core.conditions import evaluate
    from airflow_saga.core.slices import parse_slices

    calm = features(8_000, 3, seed=4)
    calm[:, 1] = -np.abs(calm[:, 1])  # f1 < 1 (here <= 0)
    tail = features(1_000, 3, seed=5)
    tail[:, 1] = 1 + np.abs(tail[:, 1])  # f1 >= 1
    a = write_capture(tmp_path, "m", calm, challenger_flip=0.01, rows_per_request=1, id_prefix="calm")
    b = write_capture(
        tmp_path,
        "m",
        tail,
        challenger_flip=0.5,
        rows_per_request=1,
        id_prefix="tail",
        start_ts=a["end"],
        seed=1,
    )
    write_feedback(a["writer"], a["ids"], a["truth"], 1)
    write_feedback(b["writer"], b["ids"], b["truth"], 1)
    table, labels = shadow.read_window(str(tmp_path), "m", None, None, features=["f1"])
    assert (
        table.num_rows == 9_000
        and "features.f1" in table.column_names
        and "features.f0" not in table.column_names
    )
    specs = parse_slices([{"column": "f1", "edges": [1.0]}])
    rep = shadow.compare(table, model_name="m", labels=labels, slices=specs, slice_min_rows=100)
    sl = {r["name"]: r for r in rep["slices"]["results"]}
    assert set(sl) == {"f1=(-inf, 1)", "f1=[1, +inf)"} and rep["slices"]["min_rows"] == 100
    worse, fine = sl["f1=[1, +inf)"], sl["f1=(-inf, 1)"]
    assert worse["rows"] == 1_000 and fine["rows"] == 8_000 and worse["eligible"]
    assert worse["candidate"]["metrics"]["agreement"] == pytest.approx(0.5, abs=0.05)
    assert fine["candidate"]["metrics"]["agreement"] > 0.98
    assert worse["candidate"]["metrics"]["accuracy"] < worse["champion"]["metrics"]["accuracy"] - 0.2
    assert (
        worse["candidate"]["metrics"]["labeled_rows"] == 1_000 and "f1_macro" in worse["candidate"]["metrics"]
    )
    overall = "error_rate <= 0.01 and agreement >= 0.9 and improves(accuracy, min_absolute=-0.06)"
    assert evaluate(overall, rep)["passed"]  # the overall numbers hide it
    decision = evaluate(overall + " and slice_improves(accuracy, min_absolute=-0.02, by='f1')", rep)
    assert not decision["passed"] and "f1=[1, +inf)" in " ".join(decision["reasons"])
    # a slice definition over a column the capture lacks: a clear error
    with pytest.raises(DataError, match="needs feature column 'region'"):
        shadow.compare(table, model_name="m", labels=labels, slices=parse_slices(["region"]))
