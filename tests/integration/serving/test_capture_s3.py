"""Capture on S3, against a real S3-compatible server on loopback (moto's server mode).

One MLflow server keeps its artifacts in the same store (``--artifacts-destination s3://...``), so the
gateway loads its models from S3 too. A durable gateway capturing to S3 is SIGKILLed with its records
still in the local spool; the next gateway replays them; the shadow comparison's and the drift monitor's
readers then read every answered request from the S3 URI, with its feedback.
"""

from __future__ import annotations

import os
import signal
import stat
import time
import uuid

import pytest
import requests

from airflow_saga.core import tags
from airflow_saga.core.capture import SHADOW_PENDING, CaptureEntry, CaptureWriter
from airflow_saga.core.capture_scan import read_capture, scan_capture
from airflow_saga.core.errors import CaptureError
from airflow_saga.devstack.mlflow_server import MlflowServer
from tests.support import models
from tests.support.s3 import MotoS3

pytestmark = pytest.mark.integration
# The gateway flags this module runs; docker-compose.yaml's gateway may use them (test_compose_file.py).
GATEWAY_FLAGS = {"--shadow", "--capture-dir", "--capture-spool-dir", "--capture-durability",
                 "--capture-format", "--flush-interval"}  # fmt: skip


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = MotoS3(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(s3, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3.env


@pytest.mark.parametrize(("fmt", "durability"), [("jsonl", "buffered"), ("parquet", "durable")])
def test_writer_and_reader_on_s3(s3, aws_env, tmp_path, fmt, durability):
    bucket = s3.bucket()
    uri = f"s3://{bucket}/capture"
    t0 = time.time() - 30
    w = CaptureWriter(uri, "m/odd name", fmt, 3600, durability=durability, spool_dir=str(tmp_path / "spool"))
    for i in range(6):
        w.append(CaptureEntry(f"id-{i}", t0 + i, "champion", "3", ["x"], [[float(i)]], [i % 2], 0.3))
    w.append_feedback("id-1", 1, None, t0 + 60)
    w.flush()
    w.append(CaptureEntry("id-6", t0 + 6, "champion", "3", ["x"], [[6.0]], [0], 0.3))
    w.close()
    keys = s3.keys(bucket)
    data = [k for k in keys if "_feedback" not in k]
    assert len(data) == 2 and all(k.endswith(f".{fmt}") for k in data), keys  # one object per flush
    assert all(k.startswith(f"{bucket}/capture/m%2Fodd%20name/") and "/date=" in k for k in keys), keys
    df = read_capture(uri, "m/odd name", with_feedback=True).set_index("inference_id")
    assert sorted(df.index) == [f"id-{i}" for i in range(7)]
    assert df.loc["id-1", "ground_truth"] == 1 and str(df["ground_truth"].dtype) == "Int64"
    assert scan_capture(uri, "m/odd name", t0 + 2, t0 + 4, ["prediction"]).num_rows == 2  # [t0+2, t0+4)


def test_a_missing_bucket_and_credentials_in_the_uri_are_clear_errors(s3, aws_env):
    with pytest.raises(CaptureError, match=r"capture bucket 'saga-no-such-bucket' .* does not exist"):
        CaptureWriter("s3://saga-no-such-bucket/capture", "m")
    with pytest.raises(CaptureError, match="carries credentials") as exc:
        CaptureWriter(f"s3://saga-test:{aws_env['AWS_SECRET_ACCESS_KEY']}@bucket/capture", "m")
    assert aws_env["AWS_SECRET_ACCESS_KEY"] not in str(exc.value)


class _S3MlflowServer(MlflowServer):
    """The devstack MLflow server with its artifacts in S3 instead of a local directory."""

    def __init__(self, root, artifacts: str) -> None:
        super().__init__(root)
        self.artifacts = artifacts

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--artifacts-destination") + 1] = self.artifacts
        return cmd


def test_durable_gateway_on_s3_survives_sigkill_and_the_monitors_read_it(s3, tmp_path):
    from tests.integration.serving.conftest import GatewayProc

    bucket = s3.bucket()
    uri = f"s3://{bucket}/capture"
    with pytest.MonkeyPatch.context() as mp:  # the MLflow server's artifact client finds S3 like pyarrow does
        for key, value in s3.env.items():
            mp.setenv(key, value)
        mlflow = _S3MlflowServer(tmp_path / "mlflow", f"s3://{bucket}/mlflow").start()
        try:
            from airflow_saga.core.mlflow_client import MlflowSettings, build_client

            client = build_client(MlflowSettings(tracking_uri=mlflow.url))
            name = f"s3-{uuid.uuid4().hex[:6]}"
            models.register_sklearn(client, name, aliases=(tags.CHAMPION,))
            models.register_sklearn(client, name, models.fit(seed=1), aliases=(tags.CHALLENGER,))
            assert any(k.startswith(f"{bucket}/mlflow/") for k in s3.keys(bucket)), "artifacts not in S3"
            _gateway_round_trip(s3, bucket, uri, name, mlflow.url, tmp_path, GatewayProc)
        finally:
            mlflow.stop()


def _gateway_round_trip(s3, bucket, uri, name, tracking_uri, tmp_path, GatewayProc) -> None:
    spool = tmp_path / "spool"
    common = ["--shadow", "challenger", "--capture-dir", uri, "--capture-spool-dir", str(spool)]
    assert {f for f in [*common, "--capture-durability", "--capture-format", "--flush-interval"]
            if f.startswith("--")} == GATEWAY_FLAGS  # fmt: skip
    # 1. durable, nothing published for an hour: every record sits in the local spool when it is killed
    gw1 = GatewayProc(tmp_path / "gw1", name, tracking_uri, *common, "--capture-durability", "durable",
                      "--capture-format", "parquet", "--flush-interval", "3600")  # fmt: skip
    gw1.env = s3.env
    gw1.start()
    assert gw1.health()["capture"]["dir"] == f"{uri}/{name}"
    answered = _traffic(gw1.url, "a", 40)
    r = requests.post(gw1.url + "/feedback", json=[{"inference_id": "a-0", "ground_truth": 1}], timeout=30)
    assert r.status_code == 202
    assert not [k for k in s3.keys(bucket, "capture")], "nothing should be published yet"
    os.kill(gw1.proc.pid, signal.SIGKILL)  # the gateway process only, as the OOM killer would
    gw1.proc.wait(timeout=60)
    gw1.stop()  # its shadow process, if still there
    assert any(spool.rglob("*.jsonl")), "the spool should hold the killed gateway's records"
    spooled = [p for p in spool.rglob("*") if p != spool]
    assert {stat.S_IMODE(p.stat().st_mode) for p in spooled if p.is_file()} == {0o640}  # owner and group only
    assert {stat.S_IMODE(p.stat().st_mode) for p in spooled if p.is_dir()} == {0o750}
    # 2. a new gateway (buffered, JSONL) replays the dead one's spool into S3 at start, then serves more
    gw2 = GatewayProc(tmp_path / "gw2", name, tracking_uri, *common, "--flush-interval", "0.5")
    gw2.env = s3.env
    gw2.start()
    answered += _traffic(gw2.url, "b", 20)
    r = requests.post(gw2.url + "/feedback", json=[{"inference_id": "b-1", "ground_truth": 0}], timeout=30)
    assert r.status_code == 202
    assert gw2.stop() in (0, -15)
    assert not any(spool.rglob("*.jsonl")), "replayed and removed"
    # 3. what the monitors read from the same URI
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3.env.items():
            mp.setenv(key, value)
        df = read_capture(uri, name, with_feedback=True)
        assert sorted(df["inference_id"]) == sorted(answered)  # every answered request, exactly once
        assert df.set_index("inference_id").loc["a-0", "ground_truth"] == 1
        assert df.set_index("inference_id").loc["b-1", "ground_truth"] == 0
        assert str(df["ground_truth"].dtype) == "Int64"
        mirrored = df[df["shadow_variant"] == "challenger"]
        assert len(mirrored) == len(df)
        ok = mirrored["shadow_prediction"].notna() & mirrored["shadow_error"].isna()
        assert (ok | (mirrored["shadow_error"] == SHADOW_PENDING)).all()
        assert ok[df["inference_id"].str.startswith("b-")].all()  # the graceful one scored every copy

        from airflow_saga.core import drift, shadow

        table, labels = shadow.read_window(uri, name, None, None)
        assert sorted(table.column("inference_id").to_pylist()) == sorted(answered)
        report = shadow.compare(table, model_name=name, labels=labels)
        assert report["comparison"]["rows"] == len(answered)
        assert report["candidate"]["metrics"]["rows"] + report["candidate"]["metrics"]["not_scored"] == len(
            answered
        )
        assert report["labels"]["rows"] == 2
        current = drift.read_current(uri, name, None, None, version="1")
        assert len(current) == len(answered) and list(current.columns) == models.columns()
        labelled, captured = drift.read_labelled(uri, name, None, None, "1")
        assert captured == len(answered) and len(labelled) == 2
        _monitors_on_s3(uri, name, tracking_uri, answered, tmp_path)
    keys = s3.keys(bucket, "capture")
    assert any("/_feedback/" in k for k in keys) and any("/_shadow/" in k for k in keys), keys
    # credentials come from the environment, and never reach what is captured (data or file metadata)
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        access_key=s3.env["AWS_ACCESS_KEY_ID"], secret_key=s3.env["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=s3.url, region="us-east-1",
    )  # fmt: skip
    for key in keys:
        with fs.open_input_stream(key) as fh:
            body = fh.read()
        assert s3.env["AWS_SECRET_ACCESS_KEY"].encode() not in body, key
        assert b"AWS_" not in body and s3.url.encode() not in body, key
    assert all(k.rsplit("/", 1)[-1].count("-") == 1 for k in keys), keys  # <writer-id>-<seq>.<fmt>


def _monitors_on_s3(uri: str, name: str, tracking_uri: str, answered: list[str], tmp_path) -> None:
    """The monitors' own use cases (what their DAGs call) on the s3:// capture, with MLflow's artifacts in
    the same store: the shadow comparison and the drift monitor judge every answered request once."""
    import datetime as dt

    from airflow_saga.core import drift, shadow
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client
    from airflow_saga.core.outcomes import MonitorOutcome

    settings = MlflowSettings(tracking_uri=tracking_uri)
    client = build_client(settings)
    now = dt.datetime.now(dt.UTC)
    window = {"start": now - dt.timedelta(hours=2), "end": now + dt.timedelta(minutes=1)}
    compared = shadow.run_comparison(
        settings, client, model_name=name, capture_root=uri, min_requests=10, **window
    )
    assert compared.report is not None, compared.skipped
    assert compared.report["comparison"]["rows"] == len(answered)
    assert (compared.champion_version, compared.challenger_version) == ("1", "2")
    run_id = client.get_model_version(name, "1").run_id
    X, _ = models.breast_cancer()
    X.to_parquet(tmp_path / "reference.parquet", index=False)
    client.log_artifact(run_id, str(tmp_path / "reference.parquet"), artifact_path="data")
    client.set_model_version_tag(name, "1", tags.BASELINE_URI, f"runs:/{run_id}/data/reference.parquet")
    check = drift.monitor(
        settings,
        client,
        model_name=name,
        capture_root=uri,
        version="1",
        config=drift.DriftConfig(min_rows=10),
        **window,
    )
    assert check.outcome in (MonitorOutcome.DRIFT, MonitorOutcome.NO_DRIFT), check.reason
    assert check.result["window"]["rows"] == len(answered)  # the champion's rows; shadow copies are v2's
    assert check.result["window"]["duplicates"] == 0
    assert check.result["estimated_quality"]["status"] == "skipped"  # this version logged no held-out data
    logged = {a.path for a in client.list_artifacts(check.result["mlflow"]["run_id"], "drift")}
    assert {"drift/report.html", "drift/result.json"} <= logged  # written through MLflow into S3


def _traffic(url: str, prefix: str, n: int) -> list[str]:
    ids = []
    with requests.Session() as s:
        for i in range(n):
            iid = f"{prefix}-{i}"
            r = s.post(url + "/invocations", json={"instances": models.sample_rows(1, start=i)},
                       headers={"X-Saga-Inference-Id": iid}, timeout=30)  # fmt: skip
            assert r.status_code == 200, r.text
            ids.append(iid)
    return ids
