"""Streamed drift: mergeable summaries against the exact tests on the full window, and which rows count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from airflow_saga.core import baselines, drift
from airflow_saga.core.capture_scan import iter_capture
from airflow_saga.core.drift_stream import (
    CategoricalSummary,
    Deduplicator,
    NumericSummary,
    Reservoir,
    evidently_test,
    judge_categorical,
    judge_numeric,
)
from tests.support.capture_data import features, write_capture


def _summary(ref: np.ndarray, cur: np.ndarray, chunk: int, keep: bool = False) -> NumericSummary:
    total = NumericSummary.empty(ref, keep_values=keep)
    for off in range(0, len(cur), chunk):
        part = NumericSummary.empty(ref, keep_values=keep)
        part.update(cur[off : off + chunk])
        total.merge(part)
    return total


@pytest.mark.parametrize("shift", [0.0, 0.02, 0.3])
def test_wasserstein_within_its_bound_of_scipy_whatever_the_chunking(shift):
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(size=20_000), rng.normal(size=200_000) + shift
    exact = stats.wasserstein_distance(ref, cur) / np.std(ref)
    scores = []
    for chunk in (7_001, 50_000, 200_000):
        row = judge_numeric(pd.Series(ref), _summary(ref, cur, chunk), None, None)
        assert row["method"] == "wasserstein" and row["verdict_exact"]
        assert abs(row["score"] - exact) <= row["error_bound"] + 1e-12
        assert row["error_bound"] < 1e-3 * row["threshold"]
        assert row["drifted"] == bool(exact >= 0.1)
        scores.append(row["score"])
    assert max(scores) - min(scores) < 1e-12  # merging is exact: chunking changes nothing


def test_ks_and_count_based_tests_are_exact():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=800)  # <= 1000 reference rows: Evidently picks KS
    cur = np.r_[rng.normal(size=30_000) + 0.03, np.full(50, ref[0])]  # ties with a reference value
    row = judge_numeric(pd.Series(ref), _summary(ref, cur, 4_000), None, None)
    assert row["method"] == "ks" and row["score"] == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=1e-12)
    # few distinct values: Evidently's own test on the rebuilt window, identical
    ref_d, cur_d = rng.integers(0, 4, 5_000).astype(float), rng.integers(0, 5, 40_000).astype(float)
    row = judge_numeric(pd.Series(ref_d), _summary(ref_d, cur_d, 6_000), None, None)
    full = evidently_test(pd.Series(ref_d), pd.Series(cur_d), "numerical", None, None)
    assert row["method"] == full["method"] == "jensenshannon" and row["score"] == pytest.approx(full["score"])
    # categorical: value counts merged over chunks
    ref_c = pd.Series(rng.choice(["a", "b", "c"], 3_000, p=[0.5, 0.3, 0.2]), dtype=object)
    cur_c = rng.choice(["a", "b", "c", "d"], 20_000, p=[0.4, 0.3, 0.2, 0.1])
    summary = CategoricalSummary()
    for off in range(0, len(cur_c), 3_000):
        vc = pd.Series(cur_c[off : off + 3_000]).value_counts()
        part = CategoricalSummary()
        part.update_counts(vc.index.tolist(), vc.tolist(), 0)
        summary.merge(part)
    row = judge_categorical(ref_c, summary, None, None)
    full = evidently_test(ref_c, pd.Series(cur_c, dtype=object), "categorical", None, None)
    assert row["score"] == pytest.approx(full["score"], rel=1e-12) and row["drifted"] == full["drifted"]


def test_a_configured_method_keeps_the_values_and_is_exact():
    rng = np.random.default_rng(5)
    ref, cur = rng.normal(size=5_000), rng.normal(size=20_000) + 0.1
    summary = _summary(ref, cur, 3_000, keep=True)
    row = judge_numeric(pd.Series(ref), summary, "psi", None)
    full = evidently_test(pd.Series(ref), pd.Series(cur), "numerical", "psi", None)
    assert row["method"] == "psi" and row["score"] == pytest.approx(full["score"], rel=1e-12)


def test_reservoir_is_uniform_reproducible_and_independent_of_chunking():
    frame = pd.DataFrame({"i": np.arange(100_000)})

    def sample(chunk: int) -> np.ndarray:
        r = Reservoir(2_000, seed=9)
        for off in range(0, len(frame), chunk):
            r.update(frame.iloc[off : off + chunk])
        return r.sample()["i"].to_numpy()

    a, b = sample(1_000), sample(33_333)
    assert len(a) == 2_000 and np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert 40_000 < a.mean() < 60_000  # the whole stream is sampled, not its start
    assert stats.kstest(a / 100_000, "uniform").pvalue > 1e-3


def test_deduplicator_counts_a_request_once_across_chunks():
    d = Deduplicator()
    ids = np.array(["a", "a", "b", "c"], dtype=object)
    assert d.keep(ids, np.array([0.0, 1.0, 0.0, 0.0])).tolist() == [True, True, True, True]
    assert d.keep(np.array(["a", "d", "d"], dtype=object), np.array([1.0, 0.0, 0.0])).tolist() == [
        False,
        True,
        False,
    ]
    assert d.dropped == 2


def test_window_rows_are_the_versions_own_and_each_once(tmp_path):
    """v1's drift ignores v3's (shifted) traffic, counts v1's shadow copies once, and drops a request
    captured twice (a shadow process that died between writing and acknowledging)."""
    x = features(3_000, 4, seed=1)
    info = write_capture(tmp_path, "m", x, champion_version="1", challenger_version="2")
    write_capture(
        tmp_path, "m", x[:500], champion_version="1", challenger_version="2", start_ts=info["start"] + 1
    )
    # the same inference ids again: a duplicate of the first 50 requests (500 rows)
    write_capture(
        tmp_path,
        "m",
        features(4_000, 4, shift=2.0, seed=2),
        champion_version="3",
        challenger_version=None,
        start_ts=info["start"] + 1,
    )
    seen = drift.VersionRows("1")
    rows = sum(t.num_rows for t in drift.version_chunks(iter_capture(tmp_path, "m"), "1", seen))
    assert rows == seen.rows == 3_000 and seen.duplicates == 500
    assert seen.other_versions == {"3": 4_000}
    # the challenger (v2) saw the same 3,000 inputs as shadow copies, each once
    seen2 = drift.VersionRows("2")
    chunks = list(drift.version_chunks(iter_capture(tmp_path, "m"), "2", seen2))
    assert seen2.rows == 3_000 and chunks[0].column("_prediction").null_count == 0
    ref = pd.DataFrame(features(3_000, 4, seed=7), columns=[f"f{i}" for i in range(4)])
    bl = baselines.Baseline("m", "1", "r", "s", baselines.compute_stats(ref), ref)
    acc = drift.WindowDrift(bl, drift.DriftConfig(sample_rows=500))
    for t in drift.version_chunks(
        iter_capture(tmp_path, "m", features=True, batch_rows=700), "1", drift.VersionRows("1")
    ):
        acc.update(t)
    result, _ = acc.result(with_report=False)
    assert result["window"]["rows"] == 3_000 and not result["dataset_drift"]


def test_streamed_result_equals_in_memory_result(tmp_path):
    ref = pd.DataFrame(features(2_000, 3, seed=2), columns=["f0", "f1", "f2"])
    ref["colour"] = np.where(ref.f0 > 0, "red", "blue")
    bl = baselines.Baseline("m", "1", "r", "s", baselines.compute_stats(ref), ref)
    cur = pd.DataFrame(features(9_000, 3, shift=0.2, seed=3), columns=["f0", "f1", "f2"])
    cur["colour"] = np.where(cur.f1 > 0.3, "red", "blue")
    one, _ = drift.compute_drift(bl, cur, drift.DriftConfig(batch_rows=100_000), with_report=False)
    many, _ = drift.compute_drift(bl, cur, drift.DriftConfig(batch_rows=1_234), with_report=False)
    for c in ("f0", "f1", "f2", "colour"):
        assert one["features"][c]["score"] == pytest.approx(many["features"][c]["score"], abs=1e-12)
    full = evidently_test(
        ref["colour"].astype(object), cur["colour"].astype(object), "categorical", None, None
    )
    assert one["features"]["colour"]["score"] == pytest.approx(full["score"], rel=1e-12)
    assert pa.Table.from_pandas(cur).num_rows == one["window"]["rows"]
