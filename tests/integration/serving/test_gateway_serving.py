"""One gateway with a shadow, capture, auth, a size limit and webhooks: protocol, shadow isolation, capture,
feedback and every bad-input case, against a real MLflow registry and a real uvicorn server."""

from __future__ import annotations

import json
import time
import uuid

import pandas as pd
import pytest
import requests

from airflow_saga.core.capture_scan import read_capture
from airflow_saga.serving.auth import webhook_signature
from tests.integration.serving.conftest import AUTH, SECRET, SHADOW_VALUE
from tests.support import models

pytestmark = pytest.mark.integration


def _post(gw, body, headers=None, path="/invocations", **kw):
    h = {**AUTH, **(headers or {})}
    if isinstance(body, bytes | str):
        return requests.post(
            gw.url + path, data=body, headers={"Content-Type": "application/json", **h}, **kw
        )
    return requests.post(gw.url + path, json=body, headers=h, **kw)


def _wait_capture(gw, ids, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        df = read_capture(gw.capture, gw.model)
        if set(ids) <= set(df["inference_id"]) or time.monotonic() > deadline:
            return df
        time.sleep(0.2)


def test_all_mlflow_formats_score_like_the_model(gw):
    cols, rows = models.columns(), models.sample_rows(5, start=10)
    expected = models.fit().predict(models.breast_cancer()[0].iloc[10:15]).tolist()
    payloads = [
        {"dataframe_split": {"columns": cols, "data": rows}},
        {"dataframe_split": {"columns": cols[::-1], "data": [r[::-1] for r in rows]}},
        {"dataframe_records": [dict(zip(cols, r, strict=True)) for r in rows]},
        {"instances": rows},
        {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(cols)}},
    ]
    for p in payloads:
        r = _post(gw, p)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": expected}
        assert r.headers["X-Saga-Variant"] == "champion"
        assert r.headers["X-Saga-Model-Version"] == "1"
        assert len(r.headers["X-Saga-Inference-Id"]) >= 16
    csv = ",".join(cols) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    r = requests.post(gw.url + "/invocations", data=csv, headers={**AUTH, "Content-Type": "text/csv"})
    assert r.status_code == 200 and r.json() == {"predictions": expected}
    r = _post(gw, {"instances": rows[:1]}, {"X-Saga-Inference-Id": "client-id-1"})
    assert r.headers["X-Saga-Inference-Id"] == "client-id-1"


def test_shadow_answers_are_captured_but_never_returned(gw):
    ids = []
    for i in range(40):
        r = _post(gw, {"instances": models.sample_rows(2, start=i)})
        assert r.status_code == 200
        assert SHADOW_VALUE not in r.json()["predictions"]
        assert r.headers["X-Saga-Variant"] == "champion"
        ids.append(r.headers["X-Saga-Inference-Id"])
    df = _wait_capture(gw, ids)
    mine = df[df["inference_id"].isin(ids)]
    assert len(mine) == 80  # two rows per request
    assert (mine["shadow_prediction"] == SHADOW_VALUE).all()
    assert (mine["shadow_variant"] == "challenger").all() and (mine["shadow_model_version"] == "2").all()
    assert mine["shadow_error"].isna().all() and (mine["shadow_latency_ms"] >= 0).all()
    assert set(mine["prediction"]) <= {0, 1} and (mine["model_version"] == "1").all()
    assert (mine["features.mean radius"].notna()).all()


def test_feedback_is_joined_to_its_record(gw):
    ids = [f"fb-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    for i, iid in enumerate(ids):
        assert _post(gw, {"instances": models.sample_rows(1, start=i)}, {"X-Saga-Inference-Id": iid}).ok
    r = _post(
        gw,
        [{"inference_id": ids[0], "ground_truth": 1}, {"inference_id": ids[1], "ground_truth": 0}],
        path="/feedback",
    )
    assert r.status_code == 202 and r.json() == {"accepted": 2}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        df = read_capture(gw.capture, gw.model, with_feedback=True)
        df = df[df["inference_id"].isin(ids)].set_index("inference_id")
        if len(df) == 3 and df["ground_truth"].notna().sum() == 2:
            break
        time.sleep(0.2)
    assert df.loc[ids[0], "ground_truth"] == 1
    assert df.loc[ids[1], "ground_truth"] == 0
    assert df.loc[ids[2], "ground_truth"] is pd.NA and str(df["ground_truth"].dtype) == "Int64"


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        ({"instances": [[1.0] * 30]}, {"Authorization": ""}, 401, "bearer token"),
        ({"instances": [[1.0] * 30]}, {"Authorization": "Bearer wrong"}, 401, "bearer token"),
        (b"x" * 300_000, {}, 413, "exceeds the 200000-byte limit"),
        (b'{"instances": [[1.0, 2.0', {}, 400, "malformed JSON"),
        (b"not json at all", {}, 400, "malformed JSON"),
        ({"instances": [[1.0] * 29]}, {}, 400, "has 29 values but the model expects 30"),
        ({"dataframe_split": {"columns": ["mean radius"], "data": [[1.0]]}}, {}, 400, "missing column(s)"),
        (
            {"instances": [["big"] + [1.0] * 29]},
            {},
            400,
            "column 'mean radius' row 0: expected double, got str",
        ),
        ({"dataframe_records": [{"evil": 1}]}, {}, 400, "unknown column(s) ['evil']"),
        ({"wrong_key": []}, {}, 400, "exactly one of"),
        (
            {"instances": [[1.0] * 30]},
            {"X-Saga-Inference-Id": "../../etc/passwd"},
            400,
            "X-Saga-Inference-Id",
        ),
        ({"instances": [[1.0] * 30]}, {"X-Saga-Target-Variant": "challenger"}, 400, "unknown variant"),
        ({"instances": [[1.0] * 30]}, {"Content-Type": "application/xml"}, 415, "unsupported content type"),
    ],
)
def test_bad_requests_get_a_clear_4xx(gw, body, headers, status, needle):
    if isinstance(body, dict) and "Content-Type" in headers:
        body = json.dumps(body)
    r = _post(gw, body, headers)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inference_id": "../../x", "ground_truth": 1}, "inference_id must be"),
        ({"inference_id": "ok"}, "missing ground_truth"),
        ({"inference_id": "ok", "ground_truth": 1, "row": -1}, "row must be"),
        ({"inference_id": "ok", "ground_truth": 1, "path": "/etc"}, "unknown field"),
        ([1], "must be an object"),
    ],
)
def test_bad_feedback_is_refused(gw, body, needle):
    r = _post(gw, body, path="/feedback")
    assert r.status_code == 400 and needle in r.json()["message"]


def test_open_probes_and_protected_routes(gw):
    assert requests.get(gw.url + "/ping").status_code == 200
    assert requests.get(gw.url + "/version").text == __import__("mlflow").__version__
    health = requests.get(gw.url + "/health").json()
    assert health["status"] == "ok"
    assert {s["alias"]: s["version"] for s in health["slots"]} == {"champion": "1", "challenger": "2"}
    assert requests.get(gw.url + "/metrics").status_code == 401
    assert requests.get(gw.url + "/nope", headers=AUTH).status_code == 404
    assert requests.get(gw.url + "/invocations", headers=AUTH).status_code == 405


def test_metrics_in_prometheus_text(gw):
    from prometheus_client.parser import text_string_to_metric_families

    assert _post(gw, {"instances": models.sample_rows(1)}).ok
    r = requests.get(gw.url + "/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in (
        "saga_requests",
        "saga_request_latency_seconds",
        "saga_shadow",
        "saga_shadow_queue_depth",
        "saga_capture_backlog",
        "saga_model_version_info",
        "saga_model_load_error",
    ):
        assert name in fams, name
    served = [s for s in fams["saga_requests"].samples if s.labels.get("variant") == "champion"]
    assert served and served[0].value >= 1
    versions = {s.labels["alias"]: s.labels["version"] for s in fams["saga_model_version_info"].samples}
    assert versions == {"champion": "1", "challenger": "2"}


def test_webhook_requires_a_valid_signature(gw):
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "data": {"name": gw.model, "alias": "champion", "version": "1"},
        }
    ).encode()
    ts = str(int(time.time()))
    good = {
        "X-MLflow-Delivery-Id": "d1",
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": webhook_signature(SECRET, "d1", ts, body),
        "Content-Type": "application/json",
    }
    r = requests.post(gw.url + "/webhooks/mlflow", data=body, headers=good)
    assert r.status_code == 200 and r.json() == {"refresh": True}
    bad = {**good, "X-MLflow-Signature": webhook_signature("guess", "d1", ts, body)}
    r = requests.post(gw.url + "/webhooks/mlflow", data=body, headers=bad)
    assert r.status_code == 401 and "bad signature" in r.json()["message"]
