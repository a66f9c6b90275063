"""Shadow comparison and drift monitor DAGs end to end: real MLflow server, dag.test(), real capture files."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from airflow_saga.core import tags as T
from tests.integration.conftest import task_states, xcom
from tests.support import models
from tests.support.capture_data import write_capture, write_feedback

pytestmark = pytest.mark.integration


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import DAGS_DIR

    bag = DagBag(dag_folder=str(DAGS_DIR / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def _run(dag_id: str, conf: dict):
    return _dag(dag_id).test(run_conf=conf, logical_date=None)


def _register_unpaused(dag) -> None:
    """Serialise ``dag`` (with its asset schedule) into the metadata DB and unpause it, like a deployment."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as s:
        s.get(DagModel, dag.dag_id).is_paused = False


def _with_baseline(client, name: str, version: str) -> None:
    """Log the breast_cancer features as the version's reference sample (stats are computed lazily)."""
    X, _ = models.breast_cancer()
    mv = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "reference.parquet"
        X.to_parquet(p, index=False)
        client.log_artifact(mv.run_id, str(p), artifact_path="data")
    client.set_model_version_tag(name, version, T.BASELINE_URI, f"runs:/{mv.run_id}/data/reference.parquet")


def _traffic(root: Path, name: str, *, shift: float, n: int = 3000, version: str = "1", **kw) -> dict:
    """Breast-cancer-like rows; ``shift`` moves 20 of the 30 features by that many sigmas."""
    X, _ = models.breast_cancer()
    rng = np.random.default_rng(1)
    x = X.to_numpy()[rng.integers(0, len(X), n)] * rng.normal(1.0, 0.01, size=(n, X.shape[1]))
    if shift:
        x[:, :20] += shift * X.to_numpy()[:, :20].std(axis=0)
    return write_capture(root, name, x, columns=list(X.columns), champion_version=version, **kw)


@pytest.fixture
def served(mlflow_client, model_name):
    v = models.register_sklearn(mlflow_client, model_name, aliases=(T.CHAMPION,))
    _with_baseline(mlflow_client, model_name, v)
    return model_name


def _drift_conf(name, root, tmp_path, **kw):
    return {
        "model_name": name,
        "capture_dir": str(root),
        "window_hours": 2,
        "evidently_workspace": str(tmp_path / "ws"),
        **kw,
    }


def test_drift_monitor_detects_shift_emits_asset_and_fails(airflow_db, mlflow_conn, mlflow_client, tmp_path):
    """The default model: its drift asset is the one the training pipeline is scheduled on."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    name = "saga-breast-cancer"
    v = models.register_sklearn(mlflow_client, name, aliases=(T.CHAMPION,))
    _with_baseline(mlflow_client, name, v)
    root = tmp_path / "capture"
    _traffic(root, name, shift=1.0, version=v)
    training = _dag("saga_training_pipeline")
    assert training.timetable.asset_condition.uri == "saga://drift/saga-breast-cancer"
    _register_unpaused(training)  # the scheduler only queues runs of unpaused DAGs
    dr = _run("saga_drift_monitor", _drift_conf(name, root, tmp_path))
    states = task_states(dr)
    assert states == {"detect_drift": "success", "emit_drift_event": "success", "alert_on_drift": "failed"}
    result = xcom(dr, "detect_drift")
    assert result["dataset_drift"] and result["drifted_count"] >= 18
    assert {"mean radius", "mean texture"} <= set(result["drifted_features"])
    with create_session() as s:
        events = s.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == "saga://drift/saga-breast-cancer")
        ).all()
        mine = [e for e in events if e.source_run_id == dr.run_id]
        assert len(mine) == 1 and mine[0].extra["model_name"] == name
        assert "mean radius" in mine[0].extra["drifted_features"]
        queued = s.scalars(select(AssetDagRunQueue.target_dag_id)).all()
    assert "saga_training_pipeline" in queued  # the scheduler's next loop starts a retraining run
    # MLflow: monitoring run, Evidently HTML, lazily computed baseline stats, version tags
    run = mlflow_client.get_run(result["mlflow"]["run_id"])
    assert run.data.tags[T.MONITOR_VERSION] == v and run.data.metrics["drift.detected"] == 1.0
    arts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "drift")}
    assert arts == {"drift/report.html", "drift/result.json"}
    mv = mlflow_client.get_model_version(name, v)
    assert mv.tags[T.DRIFT_VERDICT] == "drift" and mv.tags[T.DRIFT_RUN_ID] == run.info.run_id
    assert mv.tags[T.BASELINE_STATS_URI].endswith("data/reference_stats.json")
    # Evidently workspace got the snapshot
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(tmp_path / "ws"))
    project = ws.search_project(f"saga-{name}")[0]
    assert len(ws.list_runs(project.id)) == 1


def test_drift_monitor_without_shift_passes_quietly(airflow_db, mlflow_conn, mlflow_client, served, tmp_path):
    root = tmp_path / "capture"
    info = _traffic(root, served, shift=0.0)
    # ground truth for half the requests via the capture's _feedback partition: quality informs only
    truth = np.random.default_rng(3).integers(0, 2, 3000)
    write_feedback(info["writer"], info["ids"], truth, 10, share=0.5)
    dr = _run("saga_drift_monitor", _drift_conf(served, root, tmp_path, evidently_workspace=""))
    assert task_states(dr) == {
        "detect_drift": "success",
        "emit_drift_event": "skipped",
        "alert_on_drift": "success",
    }
    result = xcom(dr, "detect_drift")
    assert result["dataset_drift"] is False
    assert mlflow_client.get_model_version(served, "1").tags[T.DRIFT_VERDICT] == "no_drift"
    quality = result["quality"]
    assert quality["status"] == "computed" and quality["kind"] == "binary"
    assert quality["labelled_rows"] == 1500
    assert quality["metrics"]["accuracy"] == pytest.approx(float(np.mean(truth[:1500] == 1)))
    run = mlflow_client.get_run(result["mlflow"]["run_id"])
    assert run.data.metrics["quality.accuracy"] == pytest.approx(quality["metrics"]["accuracy"])
    assert run.data.metrics["quality.labelled_rows"] == 1500.0 and "quality.f1" in run.data.metrics
    arts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "drift")}
    assert arts == {"drift/report.html", "drift/quality.html", "drift/result.json"}


def test_drift_monitor_skips_an_empty_window(airflow_db, mlflow_conn, served, tmp_path):
    dr = _run("saga_drift_monitor", _drift_conf(served, tmp_path / "nothing", tmp_path))
    assert task_states(dr)["detect_drift"] == "skipped"
    assert task_states(dr)["alert_on_drift"] == "skipped"


def test_drift_monitor_fails_clearly_without_baseline(
    airflow_db, mlflow_conn, mlflow_client, model_name, tmp_path
):
    models.register_sklearn(mlflow_client, model_name, aliases=(T.CHAMPION,))
    root = tmp_path / "capture"
    _traffic(root, model_name, shift=0.0, n=500)
    dr = _run("saga_drift_monitor", _drift_conf(model_name, root, tmp_path))
    assert task_states(dr)["detect_drift"] == "failed"
    assert xcom(dr, "detect_drift") is None


def _two_versions(client, name, challenger=None):
    models.register_sklearn(client, name, aliases=(T.CHAMPION,))
    est = challenger if challenger is not None else models.fit("tree", seed=1)
    return models.register_sklearn(client, name, est, aliases=(T.CHALLENGER,))


def test_shadow_comparison_on_real_gateway_capture_promotes(
    airflow_db, mlflow_conn, mlflow_client, mlflow_server, model_name, tmp_path
):
    import requests

    from airflow_saga.core.promotion import history
    from tests.integration.serving.conftest import GatewayProc

    v2 = _two_versions(mlflow_client, model_name)
    capture = tmp_path / "capture"
    gw = GatewayProc(
        tmp_path / "gw",
        model_name,
        mlflow_server.url,
        "--shadow",
        "challenger",
        "--capture-dir",
        str(capture),
        "--flush-interval",
        "0.2",
    ).start()
    X, y = models.breast_cancer()
    try:
        for i in range(0, 240, 2):
            iid = f"req-{uuid.uuid4().hex[:8]}"
            body = {
                "dataframe_split": {"columns": list(X.columns), "data": X.iloc[i : i + 2].to_numpy().tolist()}
            }
            r = requests.post(
                f"{gw.url}/invocations", json=body, headers={"X-Saga-Inference-Id": iid}, timeout=30
            )
            assert r.ok, r.text
            fb = [{"inference_id": iid, "row": k, "ground_truth": int(y.iloc[i + k])} for k in range(2)]
            assert requests.post(f"{gw.url}/feedback", json=fb, timeout=30).status_code == 202
        time.sleep(1.0)
    finally:
        gw.stop()
    conf = {
        "model_name": model_name,
        "capture_dir": str(capture),
        "window_hours": 1,
        "min_requests": 50,
        "conditions": "error_rate <= 0.01 and agreement >= 0.8 and accuracy >= 0.85",
        "on_pass": "promote",
        "on_fail": "remove",
    }
    dr = _run("saga_shadow_comparison", conf)
    assert task_states(dr) == {"compare": "success", "gate": "success"}, task_states(dr)
    report = xcom(dr, "compare")
    assert report["candidate"]["metrics"]["requests"] == 120 and report["labels"]["rows"] == 240
    assert report["candidate"]["version"] == v2 and report["candidate"]["metrics"]["agreement"] > 0.8
    gate = xcom(dr, "gate")
    assert gate["action"] == "promote" and gate["decision"]["passed"]
    aliases = mlflow_client.get_registered_model(model_name).aliases
    assert aliases.get(T.CHAMPION) == v2 and T.CHALLENGER not in aliases
    assert [(e["action"], e["alias"], e["to"]) for e in history(mlflow_client, model_name)[-2:]] == [
        ("promote", "champion", v2),
        ("demote", "challenger", None),
    ]
    mv = mlflow_client.get_model_version(model_name, v2)
    assert mv.tags[T.SHADOW_DECISION] == "promote" and mv.tags[T.SHADOW_HTML_URI].endswith("report.html")
    html_dir = mv.tags[T.SHADOW_HTML_URI].removeprefix(f"runs:/{mv.run_id}/").rsplit("/", 1)[0]
    assert {a.path.rsplit("/", 1)[1] for a in mlflow_client.list_artifacts(mv.run_id, html_dir)} == {
        "report.html",
        "report.json",
    }


def test_shadow_replay_mode_removes_a_failing_challenger(
    airflow_db, mlflow_conn, mlflow_client, model_name, tmp_path
):
    from airflow_saga.core.promotion import history

    _two_versions(mlflow_client, model_name)
    X, y = models.breast_cancer()
    X.assign(target=y).to_parquet(tmp_path / "replay.parquet")
    conf = {
        "model_name": model_name,
        "replay_dataset": str(tmp_path / "replay.parquet"),
        "replay_target": "target",
        "conditions": "agreement >= 0.999 and accuracy >= champion.accuracy",
        "min_requests": 1,
        "on_pass": "promote",
        "on_fail": "remove",
        "slices": [{"column": "mean radius", "edges": [15.0]}],
    }
    dr = _run("saga_shadow_comparison", conf)
    assert task_states(dr) == {"compare": "success", "gate": "success"}
    report = xcom(dr, "compare")
    assert report["mode"] == "replay" and report["labels"]["rows"] == 569
    # per slice, from the slices Param
    by_slice = {r["name"]: r for r in report["slices"]["results"]}
    assert set(by_slice) == {"mean radius=(-inf, 15)", "mean radius=[15, +inf)"}
    assert sum(r["rows"] for r in by_slice.values()) == 569
    assert all("accuracy" in r["candidate"]["metrics"] for r in by_slice.values())
    assert 0 < report["candidate"]["metrics"]["accuracy"] < 1
    assert xcom(dr, "gate")["action"] == "remove"
    assert T.CHALLENGER not in mlflow_client.get_registered_model(model_name).aliases
    assert history(mlflow_client, model_name)[-1]["action"] == "demote"


def test_shadow_challenger_erroring_everywhere_is_removed(
    airflow_db, mlflow_conn, mlflow_client, model_name, tmp_path
):
    v2 = _two_versions(mlflow_client, model_name)
    root = tmp_path / "capture"
    _traffic(
        root, model_name, shift=0.0, n=1000, challenger_version=v2, challenger_error="RuntimeError: boom"
    )
    conf = {
        "model_name": model_name,
        "capture_dir": str(root),
        "window_hours": 2,
        "min_requests": 10,
        "on_pass": "promote",
        "on_fail": "remove",
    }
    dr = _run("saga_shadow_comparison", conf)
    assert task_states(dr) == {"compare": "success", "gate": "success"}
    gate = xcom(dr, "gate")
    assert gate["action"] == "remove" and "errored on all 1000" in gate["decision"]["reasons"][0]
    assert T.CHALLENGER not in mlflow_client.get_registered_model(model_name).aliases


def test_shadow_skips_without_challenger_or_traffic(
    airflow_db, mlflow_conn, mlflow_client, model_name, tmp_path
):
    _two_versions(mlflow_client, model_name)
    dr = _run("saga_shadow_comparison", {"model_name": model_name, "capture_dir": str(tmp_path / "none")})
    assert task_states(dr) == {"compare": "skipped", "gate": "skipped"}
