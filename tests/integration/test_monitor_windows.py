"""The drift monitor end to end on a real model and capture: reproducible data-interval windows and
label-free quality estimation checked against labels that arrive later (real MLflow server, dag.test())."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_saga.core import tags as T
from airflow_saga.core.capture import CaptureEntry, CaptureWriter
from tests.integration.conftest import task_states, xcom
from tests.support import models
from tests.support.estimation_data import COLS, binary

if TYPE_CHECKING:
    import pandas as pd

pytestmark = pytest.mark.integration

_data = binary


def _served(client, name: str, est, X: pd.DataFrame, y: np.ndarray, aliases=(T.CHAMPION,)) -> str:
    """Register ``est`` with what the training pipeline logs: held-out rows with the target, the reference
    sample (baseline) and the ``target`` param."""
    from mlflow.entities import Param

    v = models.register_estimator(client, name, est, X.head(5), aliases=aliases)
    mv = client.get_model_version(name, v)
    Xh, yh = _data(2_000, seed=2)
    with tempfile.TemporaryDirectory() as tmp:
        Xh.assign(y=yh).to_parquet(Path(tmp) / "holdout.parquet", index=False)
        X.to_parquet(Path(tmp) / "reference.parquet", index=False)
        client.log_artifact(mv.run_id, str(Path(tmp) / "holdout.parquet"), artifact_path="data")
        client.log_artifact(mv.run_id, str(Path(tmp) / "reference.parquet"), artifact_path="data")
    client.log_batch(mv.run_id, params=[Param("target", "y")])
    client.set_model_version_tag(name, v, T.BASELINE_URI, f"runs:/{mv.run_id}/data/reference.parquet")
    return v


def _capture(
    root: Path, name: str, est, X: pd.DataFrame, start: float, version: str, prefix: str
) -> list[str]:
    """The gateway's writer, with the model's own predictions, 10 rows per request, 1 request/second."""
    w = CaptureWriter(root, name, flush_interval=3600)
    pred = est.predict(X).tolist()
    rows = X.to_numpy().tolist()
    ids = []
    for r, i in enumerate(range(0, len(X), 10)):
        iid = f"{prefix}-{r}"
        ids.append(iid)
        w.append(
            CaptureEntry(iid, start + r, "champion", version, COLS, rows[i : i + 10], pred[i : i + 10], 3.0)
        )
    w.close()
    return ids


def _feedback(root: Path, name: str, ids: list[str], y: np.ndarray) -> None:
    w = CaptureWriter(root, name, flush_interval=3600)
    now = dt.datetime.now(dt.UTC).timestamp()
    for r, iid in enumerate(ids):
        for k in range(10):
            w.append_feedback(iid, int(y[r * 10 + k]), k, now)
    w.close()


def _run(logical_date: dt.datetime, conf: dict):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import DAGS_DIR

    bag = DagBag(dag_folder=str(DAGS_DIR / "saga_drift_monitor.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("saga_drift_monitor").test(run_conf=conf, logical_date=logical_date)


def test_a_past_interval_rerun_is_exact_and_quality_is_estimated_before_labels(
    airflow_db, mlflow_conn, mlflow_settings, mlflow_client, model_name, tmp_path
):
    from sklearn.linear_model import LogisticRegression

    X, y = _data(6_000, seed=1)
    est = LogisticRegression().fit(X, y)
    v = _served(mlflow_client, model_name, est, X, y)
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    logical = hour - dt.timedelta(hours=1)  # a past hourly run: its data interval is [hour - 2h, hour - 1h)
    start = logical - dt.timedelta(hours=1)
    root = tmp_path / "capture"
    Xw, yw = _data(3_000, seed=3, boundary=True)  # traffic the model is less sure about
    ids = _capture(root, model_name, est, Xw, (start + dt.timedelta(minutes=5)).timestamp(), v, "w")
    # before the interval: normal traffic, never judged
    _capture(
        root, model_name, est, _data(1_000, seed=4)[0], (start - dt.timedelta(minutes=30)).timestamp(), v, "b"
    )
    ref_accuracy = float(np.mean(est.predict(_data(2_000, seed=2)[0]) == _data(2_000, seed=2)[1]))
    conf = {
        "model_name": model_name,
        "capture_dir": str(root),
        "evidently_workspace": "",
        "thresholds": {"estimation_boot": 100, "estimation_chunks": 4, "min_labelled_rows": 30},
        "quality_thresholds": {"accuracy": ref_accuracy - 0.05},
    }
    first = _run(logical, conf)
    assert task_states(first) == {
        "detect_drift": "success",
        "emit_drift_event": "success",  # degraded quality retrains too
        "alert_on_drift": "failed",
    }
    r1 = xcom(first, "detect_drift")
    assert r1["window"]["source"] == "logical_date"  # a manual run given a logical date
    assert r1["window"]["start"] == start.isoformat() and r1["window"]["end"] == logical.isoformat()
    assert r1["window"]["rows"] == 3_000 and r1["version"] == v
    assert r1["quality"]["status"] == "skipped"  # no label yet
    acc1 = r1["estimated_quality"]["metrics"]["accuracy"]
    assert r1["estimated_quality"]["labelled_rows"] == 0 and "realised" not in acc1
    assert acc1["estimate"] < ref_accuracy - 0.08  # the estimate sees the drop with no label at all
    assert r1["outcome"] == "degraded" and not r1["dataset_drift"]
    assert any("estimated accuracy" in reason for reason in r1["alert"]["reasons"])
    run = mlflow_client.get_run(r1["mlflow"]["run_id"])
    assert run.data.metrics["estimated.accuracy"] == pytest.approx(acc1["estimate"])
    arts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "drift")}
    assert {"drift/estimated_quality.html", "drift/estimated_quality.png", "drift/report.html"} <= arts
    assert mlflow_client.get_model_version(model_name, v).tags[T.DRIFT_VERDICT] == "degraded"

    # meanwhile: new traffic after the interval (shifted: it would be drift), and the labels arrive
    _capture(
        root,
        model_name,
        est,
        _data(3_000, seed=5)[0] + 2.0,
        (logical + dt.timedelta(minutes=1)).timestamp(),
        v,
        "a",
    )
    _feedback(root, model_name, ids, yw)
    # the next hour is judged (it drifted) before the past interval is re-run
    from airflow_saga.core import drift

    later = drift.monitor(
        mlflow_settings,
        mlflow_client,
        model_name=model_name,
        capture_root=str(root),
        start=logical,
        end=hour,
        config=drift.DriftConfig(estimate=False),
    )
    assert later.outcome == "drift"
    second = _run(logical, conf)
    r2 = xcom(second, "detect_drift")
    # the re-run is logged as its own run, but the version's latest verdict stays the later window's
    tags_now = mlflow_client.get_model_version(model_name, v).tags
    assert (
        tags_now[T.DRIFT_VERDICT] == "drift" and tags_now[T.DRIFT_RUN_ID] == later.result["mlflow"]["run_id"]
    )
    assert tags_now[T.DRIFT_WINDOW_END] == hour.isoformat()
    assert r2["mlflow"]["version_tags"] == "kept: a later window was already judged"
    assert r2["window"] == r1["window"]
    assert r2["dataset_drift"] == r1["dataset_drift"] and r2["drifted_features"] == r1["drifted_features"]
    assert {c: f["score"] for c, f in r2["features"].items()} == {
        c: f["score"] for c, f in r1["features"].items()
    }
    acc2 = r2["estimated_quality"]["metrics"]["accuracy"]
    assert acc2["estimate"] == acc1["estimate"] and acc2["ci_low"] == acc1["ci_low"]
    # the labels, only to check: realised quality falls inside the estimate's band
    realised = float(np.mean(est.predict(Xw) == yw))
    assert r2["quality"]["status"] == "computed"
    assert r2["quality"]["metrics"]["accuracy"] == pytest.approx(realised)
    assert acc2["realised"] == pytest.approx(realised) and acc2["within_band"]
    for name in ("f1", "roc_auc"):
        m = r2["estimated_quality"]["metrics"][name]
        assert m["ci_low"] <= m["realised"] <= m["ci_high"], (name, m)
    assert all(c["labelled_rows"] > 0 for c in r2["estimated_quality"]["chunks"] if c["rows"])
    # the report page: the plot of estimated and realised quality over the window's time slices, and the
    # table beside it, now with the realised values
    with tempfile.TemporaryDirectory() as tmp:
        page = mlflow_client.download_artifacts(r2["mlflow"]["run_id"], "drift/estimated_quality.html", tmp)
        text = Path(page).read_text()
    assert "data:image/png;base64," in text and text.count("realised ") >= 1 + 4  # whole window + slices


def test_monitor_core_without_baseline_or_probabilities(mlflow_settings, mlflow_client, model_name, tmp_path):
    """Called as a notebook would: no baseline is a clear error naming the window; a model without
    probabilities still gets its drift verdict, with estimation skipped and the reason."""
    from sklearn.svm import LinearSVC

    from airflow_saga.core import drift
    from airflow_saga.core.baselines import NoBaselineError
    from airflow_saga.core.outcomes import MonitorOutcome

    X, y = _data(3_000, seed=1)
    est = LinearSVC().fit(X, y)
    v = models.register_estimator(mlflow_client, model_name, est, X.head(5), aliases=(T.CHAMPION,))
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(hours=1), now
    root = tmp_path / "capture"
    _capture(
        root, model_name, est, _data(600, seed=3)[0], (start + dt.timedelta(minutes=1)).timestamp(), v, "w"
    )
    with pytest.raises(NoBaselineError, match=r"monitor window \[.*\) of model .* version 1: .*no baseline"):
        drift.monitor(
            mlflow_settings,
            mlflow_client,
            model_name=model_name,
            capture_root=str(root),
            start=start,
            end=end,
        )
    v2 = _served(mlflow_client, model_name, est, X, y)
    _capture(
        root, model_name, est, _data(600, seed=6)[0], (start + dt.timedelta(minutes=20)).timestamp(), v2, "v"
    )
    check = drift.monitor(
        mlflow_settings,
        mlflow_client,
        model_name=model_name,
        capture_root=str(root),
        start=start,
        end=end,
        version=v2,
        log_to_mlflow=False,
    )
    assert check.outcome is MonitorOutcome.NO_DRIFT and check.result["window"]["rows"] == 600
    assert check.result["window"]["other_versions"] == {v: 600}
    skipped = check.result["estimated_quality"]
    assert skipped["status"] == "skipped" and "LinearSVC has no predict_proba" in skipped["note"]
    # an interval with no traffic of the version: a skip with the reason, not a verdict
    empty = drift.monitor(
        mlflow_settings,
        mlflow_client,
        model_name=model_name,
        capture_root=str(root),
        start=end,
        end=end + dt.timedelta(hours=1),
        version=v2,
        log_to_mlflow=False,
    )
    assert empty.outcome is MonitorOutcome.SKIPPED and "0 captured row(s)" in empty.reason


def test_an_interval_with_no_usable_reference(mlflow_settings, mlflow_client, model_name, tmp_path):
    """A baseline tag whose reference cannot be read fails clearly and logs nothing; a version whose run has
    no held-out data still gets its drift verdict, with estimation skipped and the reason."""
    from mlflow.entities import Param
    from sklearn.linear_model import LogisticRegression

    from airflow_saga.core import drift
    from airflow_saga.core.baselines import NoBaselineError
    from airflow_saga.core.outcomes import MonitorOutcome

    X, y = _data(3_000, seed=1)
    est = LogisticRegression().fit(X, y)
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(hours=1), now
    root = tmp_path / "capture"
    v = models.register_estimator(mlflow_client, model_name, est, X.head(5), aliases=(T.CHAMPION,))
    run_id = mlflow_client.get_model_version(model_name, v).run_id
    gone = f"runs:/{run_id}/data/reference.parquet"  # tagged, never logged (deleted, or a typo)
    mlflow_client.set_model_version_tag(model_name, v, T.BASELINE_URI, gone)
    _capture(
        root, model_name, est, _data(600, seed=3)[0], (start + dt.timedelta(minutes=1)).timestamp(), v, "w"
    )
    kw = {"model_name": model_name, "capture_root": str(root), "start": start, "end": end}
    with pytest.raises(NoBaselineError, match=rf"version {v}: baseline '{gone}' could not be read"):
        drift.monitor(mlflow_settings, mlflow_client, **kw)
    exp = mlflow_client.get_experiment_by_name("saga-monitoring")  # no monitoring run of this model logged
    assert exp is None or not mlflow_client.search_runs(
        [exp.experiment_id], f"tags.`{T.MONITOR_MODEL}` = '{model_name}'"
    )
    assert T.DRIFT_VERDICT not in mlflow_client.get_model_version(model_name, v).tags
    # the reference arrives, the held-out data never does (a model trained outside the pipeline)
    with tempfile.TemporaryDirectory() as tmp:
        X.to_parquet(Path(tmp) / "reference.parquet", index=False)
        mlflow_client.log_artifact(run_id, str(Path(tmp) / "reference.parquet"), artifact_path="data")
    mlflow_client.log_batch(run_id, params=[Param("target", "y")])
    check = drift.monitor(mlflow_settings, mlflow_client, **kw, log_to_mlflow=False)
    assert check.outcome is MonitorOutcome.NO_DRIFT and check.result["window"]["rows"] == 600
    skipped = check.result["estimated_quality"]
    assert skipped["status"] == "skipped"
    assert f"no held-out data at runs:/{run_id}/data/holdout.parquet" in skipped["note"], skipped
    # a model that cannot be loaded (deleted, or a flavour not on the worker): a skip with the reason
    from airflow_saga.core import estimation

    with pytest.raises(estimation.EstimationSkipped, match=rf"models:/{model_name}/99 could not be loaded"):
        estimation.load_scorer(mlflow_settings, f"models:/{model_name}/99")
