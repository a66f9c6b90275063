"""Drift verdicts against Evidently itself, baseline statistics, and the edge cases (no mocks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_saga.core import baselines, drift
from airflow_saga.core.capture_scan import scan_capture
from airflow_saga.core.errors import DataError
from tests.support.capture_data import features, write_capture, write_feedback

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
        row = result["features"][c]
        # Wasserstein from the interval summary: within its reported bound of scipy's exact value
        assert abs(row["score"] - raw_scores[c]) <= row["error_bound"] + 1e-12
        assert row["error_bound"] < 0.01 * row["threshold"] and row["verdict_exact"]
        assert row["method"] == "wasserstein"
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


# --- model quality on /feedback labels ------------------------------------------------------------------


def test_quality_classification_from_capture_and_feedback(tmp_path, reference):
    from sklearn.metrics import f1_score, precision_score, recall_score

    x = features(2000, 6, seed=3)
    info = write_capture(tmp_path, "m", x, challenger_version=None)
    write_feedback(info["writer"], info["ids"], info["truth"], 10, share=0.5)
    labelled, captured = drift.read_labelled(str(tmp_path), "m", None, None, "1")
    assert len(labelled) == 1000 and captured == 2000
    assert drift.read_labelled(str(tmp_path), "m", None, None, "9")[0].empty
    quality, snap = drift.compute_quality(labelled, model_name="m", version="1", captured_rows=captured)
    t, p = info["truth"][:1000], (x[:1000, 0] > 0).astype(int)
    assert quality["status"] == "computed" and quality["source"] == "evidently"
    assert quality["kind"] == "binary" and quality["pos_label"] == 1 and quality["coverage"] == 0.5
    m = quality["metrics"]
    assert m["accuracy"] == pytest.approx(float(np.mean(t == p)))
    assert m["f1"] == pytest.approx(f1_score(t, p))
    assert m["precision"] == pytest.approx(precision_score(t, p))
    assert m["recall"] == pytest.approx(recall_score(t, p))
    assert snap is not None
    result, _ = drift.compute_drift(_baseline(reference), drift.read_current(str(tmp_path), "m", None, None))
    result["quality"] = quality
    assert "Model quality on 1000 labelled rows (binary): accuracy" in drift.summary(result)
    # multiclass string labels, task forced
    rng = np.random.default_rng(0)
    truth = rng.choice(["a", "b", "c"], 300)
    pred = np.where(rng.random(300) < 0.7, truth, "a")
    cfg = drift.DriftConfig.from_dict({"task": "classification", "min_labelled_rows": 50})
    multi, _ = drift.compute_quality(
        pd.DataFrame({"prediction": pred.astype(object), "target": truth.astype(object)}),
        cfg,
        model_name="m",
        version="1",
    )
    assert multi["kind"] == "multiclass" and multi["classes"] == 3
    assert multi["metrics"]["accuracy"] == pytest.approx(float(np.mean(truth == pred)))
    with pytest.raises(DataError, match="task must be"):
        drift.DriftConfig.from_dict({"task": "ranking"})


def test_quality_regression_and_constant_error(tmp_path):
    x = features(1000, 4, seed=4)
    info = write_capture(tmp_path / "a", "m", x, challenger_version=None, regression=True)
    write_feedback(info["writer"], info["ids"], info["truth"], 10)
    labelled, _ = drift.read_labelled(str(tmp_path / "a"), "m", None, None, "1")
    quality, snap = drift.compute_quality(labelled, model_name="m", version="1")
    err = (x[:, 0] + x[:, 1]) - info["truth"]
    assert quality["kind"] == "regression" and quality["source"] == "evidently" and snap is not None
    assert quality["metrics"]["mae"] == pytest.approx(float(np.mean(np.abs(err))))
    assert quality["metrics"]["rmse"] == pytest.approx(float(np.sqrt(np.mean(err**2))))
    assert 0.9 < quality["metrics"]["r2"] <= 1
    # a constant error crashes Evidently's error histogram ("Too many bins"): numpy metrics, with a note
    info = write_capture(tmp_path / "b", "m", x, challenger_version=None, regression=True)
    write_feedback(info["writer"], info["ids"], x[:, 0] + x[:, 1] - 0.5, 10)
    labelled, _ = drift.read_labelled(str(tmp_path / "b"), "m", None, None, "1")
    quality, snap = drift.compute_quality(labelled, model_name="m", version="1")
    assert quality["status"] == "computed" and quality["source"] == "numpy" and snap is None
    assert "Too many bins" in quality["note"]
    assert quality["metrics"]["mae"] == pytest.approx(0.5) and quality["metrics"]["mean_error"] == 0.5


def test_quality_skipped_without_enough_labels(tmp_path, reference):
    x = features(500, 6, seed=8)
    info = write_capture(tmp_path, "m", x, challenger_version=None)
    labelled, captured = drift.read_labelled(str(tmp_path), "m", None, None, "1")
    assert labelled.empty and captured == 500
    quality, snap = drift.compute_quality(labelled, model_name="m", version="1", captured_rows=captured)
    assert quality["status"] == "skipped" and snap is None and "no ground truth" in quality["note"]
    assert "metrics" not in quality
    write_feedback(info["writer"], info["ids"], info["truth"], 10, share=0.04)  # 2 requests, 20 rows
    labelled, _ = drift.read_labelled(str(tmp_path), "m", None, None, "1")
    quality, _ = drift.compute_quality(labelled, model_name="m", version="1")
    assert quality["status"] == "skipped" and "only 20 labelled" in quality["note"]
    result, _ = drift.compute_drift(
        _baseline(reference), drift.read_current(str(tmp_path), "m", None, None), with_report=False
    )
    result["quality"] = quality
    assert "Model quality not computed" in drift.summary(result)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"method": "wassersten"}, r"method 'wassersten' is not an Evidently stat test"),
        ({"num_method": "chisquare"}, r"num_method 'chisquare' does not apply to numerical features"),
        ({"per_column_method": {"f1": 3}}, r"per_column_method\['f1'\] must be the name"),
        ({"threshold": "0.1"}, r"threshold must be a finite number, got '0.1'"),
        ({"per_column_threshold": {"f2": float("nan")}}, r"per_column_threshold\['f2'\] must be a finite"),
        ({"estimate": "false"}, r"estimate must be true or false, got 'false'"),
        ({"quality_thresholds": {"acuracy": 0.9}}, r"unknown metric 'acuracy'; known: \['abs_max_error'"),
        ({"quality_thresholds": {"accuracy": float("inf")}}, r"quality_thresholds\['accuracy'\] must be"),
        ({"quality_alert_on": ["labels"]}, r"quality_alert_on must be a list of"),
    ],
)
def test_bad_monitor_settings_are_refused_naming_the_field(settings, match):
    """Params a user types into the drift DAG: each mistake is a DataError naming field and value, before
    any capture is read (never Evidently's or numpy's error mid-run, never a threshold silently unused)."""
    with pytest.raises(DataError, match=match):
        drift.DriftConfig.from_dict(settings)


def test_a_method_that_does_not_take_a_column_kind_names_the_feature(tmp_path, reference):
    """``method`` applies to every feature; one Evidently cannot use on a numeric column is a clear error."""
    current = pd.DataFrame(features(500, 6, seed=3), columns=COLS)
    config = drift.DriftConfig.from_dict({"method": "chisquare"})
    with pytest.raises(DataError, match=r"feature 'f0' \(numerical\) cannot be judged with drift method"):
        drift.compute_drift(_baseline(reference), current, config, with_report=False)


def _judged(quality: dict | None, estimated: dict | None) -> dict:
    return {
        "dataset_drift": False,
        "drifted_count": 0,
        "columns_count": 6,
        "quality": quality,
        "estimated_quality": estimated,
    }


def test_realised_and_estimated_quality_each_raise_the_alert():
    """Either source crossing a ``quality_thresholds`` limit makes the outcome ``degraded`` (alert and
    retraining Asset); ``quality_alert_on`` picks the sources; a threshold nobody could check is listed."""
    from airflow_saga.core.outcomes import MonitorOutcome

    estimated = {
        "status": "computed",
        "method": "CBPE",
        "rows": 1000,
        "metrics": {
            "accuracy": {"estimate": 0.93, "ci_low": 0.9, "ci_high": 0.95, "realised": 0.8},
            "roc_auc": {"estimate": 0.97, "ci_low": 0.95, "ci_high": 0.98, "realised": 0.85},
        },
    }
    labelled = {"status": "computed", "labelled_rows": 500, "metrics": {"accuracy": 0.8, "f1": 0.78}}
    limits = {"accuracy": 0.9, "roc_auc": 0.9, "mae": 1.0}
    both = drift.DriftConfig.from_dict({"quality_thresholds": limits})
    result = _judged(labelled, estimated)
    assert drift.decide(result, both) is MonitorOutcome.DEGRADED and result["alert"]["raised"]
    # the estimate is fine, the labels are not: the realised values raise it (roc_auc from the labelled
    # rows of the estimation sample, as Evidently's labels-only preset has no roc_auc)
    assert result["alert"]["reasons"] == [
        "realised accuracy 0.8 is below its threshold 0.9",
        "realised roc_auc 0.85 is below its threshold 0.9",
    ]
    assert result["alert"]["unchecked"] == ["mae: no estimated or realised value in this window"]
    # before labels: only the estimate can speak, and here it is below its limit
    early = _judged({"status": "skipped", "labelled_rows": 0}, estimated)
    strict = drift.DriftConfig.from_dict({"quality_thresholds": {"accuracy": 0.95}})
    assert drift.decide(early, strict) is MonitorOutcome.DEGRADED
    assert early["alert"]["reasons"] == ["estimated accuracy 0.93 is below its threshold 0.95"]
    realised_only = drift.DriftConfig.from_dict(
        {"quality_thresholds": {"accuracy": 0.95}, "quality_alert_on": ["realised"]}
    )
    quiet = _judged({"status": "skipped", "labelled_rows": 0}, estimated)
    assert drift.decide(quiet, realised_only) is MonitorOutcome.NO_DRIFT and not quiet["alert"]["raised"]
    assert quiet["alert"]["unchecked"] == ["accuracy: no realised value in this window"]
    assert "threshold not checked: accuracy" in drift.summary(
        {
            **quiet,
            "model_name": "m",
            "version": "1",
            "drift_share": 0.0,
            "drift_share_threshold": 0.5,
            "window": {"rows": 10},
            "features": {},
        }
    )
