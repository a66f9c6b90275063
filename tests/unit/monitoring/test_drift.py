"""Drift verdicts against Evidently itself, baseline statistics, and the edge cases (no mocks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_saga.core import baselines, drift
from airflow_saga.core.capture_scan import scan_capture
from airflow_saga.core.errors import DataError
from tests.support.capture_data import features, write_capture

COLS = [f"f{i}" for i in range(6)]


def _baseline(ref: pd.DataFrame) -> baselines.Baseline:
    return baselines.Baseline(
        "m",
        "1",
        "runs:/r/data/reference.parquet",
        "runs:/r/data/reference_stats.json",
        baselines.compute_stats(ref),
        ref,
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return pd.DataFrame(features(3000, 6, seed=11), columns=COLS)


def _raw_evidently(ref: pd.DataFrame, cur: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    """Evidently's DataDriftPreset with its defaults over the whole window: the verdict we must match."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    snap = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur), Dataset.from_pandas(ref))
    scores, share = {}, None
    for m in snap.dict()["metrics"]:
        if "share" in (m["value"] if isinstance(m["value"], dict) else {}):
            share = m["value"]["share"]
        elif m["config"].get("column"):
            scores[m["config"]["column"]] = m["value"]
    return share >= 0.5, scores


@pytest.mark.parametrize("shift", [0.0, 0.4])
def test_verdict_and_scores_equal_raw_evidently(tmp_path, reference, shift):
    info = write_capture(tmp_path, "m", features(8000, 6, shift=shift, seed=5))
    current = drift.read_current(str(tmp_path), "m", None, None)
    assert list(current.columns) == COLS and len(current) == 8000
    result, snap = drift.compute_drift(_baseline(reference), current, drift.DriftConfig(sample_rows=2000))
    raw_verdict, raw_scores = _raw_evidently(reference, current)
    assert result["dataset_drift"] is raw_verdict is (shift > 0)
    for c in COLS:
        assert result["features"][c]["score"] == pytest.approx(raw_scores[c], rel=1e-9)
        assert result["features"][c]["method"] == "wasserstein"
    assert result["report"]["sample_rows"] == 2000 and snap is not None
    assert set(result["drifted_features"]) == ({"f0", "f1", "f2"} if shift else set())
    assert info["writer"].stats.rows == 8000


def test_thresholds_are_configurable(tmp_path, reference):
    write_capture(tmp_path, "m", features(20000, 6, shift=0.075, seed=6))
    current = drift.read_current(str(tmp_path), "m", None, None)
    loose, _ = drift.compute_drift(_baseline(reference), current, with_report=False)
    strict, _ = drift.compute_drift(
        _baseline(reference),
        current,
        drift.DriftConfig(num_threshold=0.05, drift_share=0.3, per_column_method={"f5": "ks"}),
        with_report=False,
    )
    assert not loose["dataset_drift"] and strict["dataset_drift"]
    assert strict["features"]["f5"]["method"] == "ks" and strict["features"]["f0"]["threshold"] == 0.05
    with pytest.raises(DataError, match="unknown drift threshold"):
        drift.DriftConfig.from_dict({"drift_shar": 0.2})


def test_missing_added_and_all_nan_features(tmp_path, reference):
    x = features(4000, 6, seed=2)
    cols = ["f0", "f1", "f2", "f3", "f4", "extra"]  # f5 missing, "extra" added
    write_capture(tmp_path, "m", x, columns=cols)
    current = drift.read_current(str(tmp_path), "m", None, None)
    current["f4"] = np.nan
    result, _ = drift.compute_drift(_baseline(reference), current, with_report=False)
    assert result["schema_changes"] == {"missing": ["f5"], "added": ["extra"]}
    assert (
        result["features"]["f5"]["drifted"] and "missing from the capture" in result["features"]["f5"]["note"]
    )
    assert result["features"]["f4"]["drifted"] and "every value" in result["features"]["f4"]["note"]
    assert not result["features"]["f0"]["drifted"]
    assert result["drifted_count"] == 2 and result["columns_count"] == 6
    text = drift.summary(result)
    assert "f5" in text and "missing" in text and "extra" in text


def test_too_small_and_foreign_windows(tmp_path, reference):
    with pytest.raises(drift.InsufficientDataError, match="at least 100"):
        drift.compute_drift(_baseline(reference), pd.DataFrame({"f0": [1.0] * 5}))
    with pytest.raises(DataError, match="none of the baseline's features"):
        drift.compute_drift(_baseline(reference), pd.DataFrame({"zz": np.arange(200.0)}))


def test_baseline_statistics(reference):
    ref = reference.copy()
    ref["colour"] = np.where(ref.f0 > 0, "red", "blue")
    ref.loc[:9, "f1"] = np.nan
    stats = baselines.compute_stats(ref)
    f1, colour = stats["features"]["f1"], stats["features"]["colour"]
    assert stats["rows"] == 3000 and f1["type"] == "numerical" and f1["missing"] == 10
    assert f1["quantiles"]["0.5"] == pytest.approx(float(ref.f1.median()))
    assert sum(f1["histogram"]["counts"]) == 2990
    assert colour["type"] == "categorical" and set(colour["top"]) == {"red", "blue"}


def test_scan_reads_jsonl_and_parquet_alike_and_skips_torn_lines(tmp_path):
    x = features(300, 3, seed=9)
    write_capture(tmp_path / "a", "m", x, fmt="jsonl")
    write_capture(tmp_path / "b", "m", x, fmt="parquet")
    a = scan_capture(tmp_path / "a", "m", columns=["prediction"], features=True)
    b = scan_capture(tmp_path / "b", "m", columns=["prediction"], features=True)
    assert a.num_rows == b.num_rows == 300
    assert np.allclose(a.column("features.f1").to_numpy(), b.column("features.f1").to_numpy())
    f = next((tmp_path / "a").rglob("*.jsonl"))
    with open(f, "a") as fh:
        fh.write('{"inference_id": "torn", "row": 0, "timest')
    assert scan_capture(tmp_path / "a", "m", columns=["prediction"]).num_rows == 300
