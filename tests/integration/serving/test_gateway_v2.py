"""Open Inference Protocol (V2) on the gateway: the bodies the KServe and MLServer clients send get the
same answers as MLflow-protocol clients, with variants, shadow, capture and feedback working alike.

Uses the module gateway of ``test_gateway_serving`` (auth, a shadow that answers 7, capture).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.integration.serving.conftest import AUTH, SHADOW_VALUE
from tests.integration.serving.test_gateway_serving import _post, _wait_capture
from tests.support import models

pytestmark = pytest.mark.integration
BODIES = json.loads((Path(__file__).parents[1] / "data" / "v2_client_requests.json").read_text())


def _body(key: str, name: str) -> dict:
    b = copy.deepcopy(BODIES[key])
    if "model_name" in b:
        b["model_name"] = name
    return b


def _infer(gw, body, path=None, headers=None):
    return _post(gw, body, headers, path=path or f"/v2/models/{gw.model}/infer")


def _mlflow_answer(gw, rows) -> list:
    r = _post(gw, {"dataframe_split": {"columns": models.columns(), "data": rows}})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def test_kserve_and_mlserver_bodies_get_the_mlflow_answers(gw):
    rows = models.sample_rows(5)
    expected = _mlflow_answer(gw, rows)
    assert expected == models.fit().predict(models.breast_cancer()[0].iloc[0:5]).tolist()
    ids = []
    for key in ("mlserver_numpy_request", "mlserver_numpy_input", "mlserver_pandas_request", "kserve_json",
                "kserve_columns"):  # fmt: skip
        r = _infer(gw, _body(key, gw.model))
        assert r.status_code == 200, (key, r.text)
        out = r.json()
        assert out["model_name"] == gw.model and out["model_version"] == "1", key
        assert out["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [5], "data": expected}], (
            key
        )
        assert r.headers["X-Saga-Variant"] == "champion"
        assert r.headers["X-Saga-Inference-Id"] == out["id"]
        if "id" in BODIES[key]:  # the client's request id becomes the inference id
            assert out["id"] == BODIES[key]["id"]
        ids.append(out["id"])
    # KServe's default: the binary tensor extension (JSON header, then the raw little-endian float64s)
    raw = bytes.fromhex(BODIES["kserve_binary"]["body_hex"])
    n = BODIES["kserve_binary"]["json_length"]
    r = requests.post(
        f"{gw.url}/v2/models/{gw.model}/infer",
        data=raw,
        headers={
            **AUTH,
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(n),
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == expected and r.json()["id"] == "kserve-bin-1"
    # nested data (not flattened) and a pinned version are accepted too
    nested = {"inputs": [{"name": "x", "shape": [5, 30], "datatype": "FP64", "data": rows}]}
    r = _infer(gw, nested, path=f"/v2/models/{gw.model}/versions/1/infer")
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == expected
    ids.append(r.json()["id"])
    # shadow and capture work for V2 like for /invocations: every V2 request is captured with both answers
    df = _wait_capture(gw, ids)
    mine = df[df["inference_id"].isin(ids)]
    assert len(mine) == 5 * len(ids)
    assert (mine["shadow_prediction"] == SHADOW_VALUE).all() and mine["shadow_error"].isna().all()
    assert sorted(mine[mine["inference_id"] == ids[0]]["prediction"]) == sorted(expected)


def test_v2_feedback_joins_on_the_request_id(gw):
    from airflow_saga.core.capture_scan import read_capture

    rid = f"v2-{uuid.uuid4().hex[:10]}"
    body = {"id": rid, "inputs": [{"name": "t", "shape": [1, 30], "datatype": "FP64",
                                   "data": models.sample_rows(1, start=3)[0]}]}  # fmt: skip
    r = _infer(gw, body)
    assert r.status_code == 200 and r.headers["X-Saga-Inference-Id"] == rid
    assert _post(gw, {"inference_id": rid, "ground_truth": 1}, path="/feedback").status_code == 202
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        df = read_capture(gw.capture, gw.model, with_feedback=True)
        df = df[df["inference_id"] == rid]
        if len(df) == 1 and df["ground_truth"].notna().all():
            break
        time.sleep(0.2)
    assert df["ground_truth"].tolist() == [1]


def test_v2_metadata_health_and_variant_selection(gw):
    assert requests.get(gw.url + "/v2/health/live").json() == {"live": True}  # probes need no token
    assert requests.get(gw.url + "/v2/health/ready").json() == {"ready": True}
    assert requests.get(f"{gw.url}/v2/models/{gw.model}").status_code == 401
    meta = requests.get(f"{gw.url}/v2/models/{gw.model}", headers=AUTH).json()
    assert meta["name"] == gw.model and meta["versions"] == ["1"] and meta["platform"] == "mlflow"
    assert [t["name"] for t in meta["inputs"]] == models.columns()
    assert {t["datatype"] for t in meta["inputs"]} == {"FP64"} and meta["inputs"][0]["shape"] == [-1]
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert requests.get(f"{gw.url}/v2/models/{gw.model}/versions/1", headers=AUTH).json()["versions"] == ["1"]
    assert requests.get(f"{gw.url}/v2/models/{gw.model}/ready", headers=AUTH).json()["ready"] is True
    # version 2 is the shadow: registered, loaded, but never served, so V2 cannot reach it either
    r = requests.get(f"{gw.url}/v2/models/{gw.model}/versions/2", headers=AUTH)
    assert r.status_code == 404 and "served versions: ['1']" in r.json()["message"]
    # X-Saga-Target-Variant works on V2 as on /invocations
    body = {"inputs": [{"name": "t", "shape": [1, 30], "datatype": "FP64", "data": models.sample_rows(1)[0]}]}
    r = _infer(gw, body, headers={"X-Saga-Target-Variant": "nope"})
    assert r.status_code == 400 and "unknown variant" in r.json()["message"]


ROW = [1.0] * 30


def _t(name="t", shape=(1, 30), datatype="FP64", data=None, **kw):
    return {
        "name": name,
        "shape": list(shape),
        "datatype": datatype,
        "data": ROW if data is None else data,
        **kw,
    }


@pytest.mark.parametrize(
    ("body", "path", "status", "needle"),
    [
        # wrong datatype
        ({"inputs": [_t(datatype="FLOAT")]}, None, 400, "unknown datatype 'FLOAT'"),
        ({"inputs": [_t(datatype="INT64")]}, None, 400, "is INT64 but element 0 is float"),
        ({"inputs": [_t(datatype="BYTES", data=["a"] * 30)]}, None, 400, "has datatype BYTES, but column"),
        ({"inputs": [_t(data=["x", *ROW[1:]])]}, None, 400, "is FP64 but element 0 is str"),
        # shape that does not match the data
        ({"inputs": [_t(shape=(2, 30))]}, None, 400, "shape [2, 30] needs 60 elements but data has 30"),
        (
            {"inputs": [_t(shape=(1, 29), data=ROW[:29])]},
            None,
            400,
            "has shape [1, 29] but the model takes 30",
        ),
        ({"inputs": [_t(shape=(2, 15), data=[ROW[:15], ROW[:14]])]}, None, 400, "nested data does not match"),
        ({"inputs": [_t(shape=(-1, 30))]}, None, 400, "must hold non-negative integers"),
        # unknown tensor name
        (
            {
                "inputs": [_t(name=c, shape=(1,), data=[1.0]) for c in models.columns()[:29]]
                + [_t(name="evil", shape=(1,), data=[1.0])]
            },
            None,
            400,
            "unknown tensor name 'evil'",
        ),
        ({"inputs": [_t()], "outputs": [{"name": "proba"}]}, None, 400, "unknown output(s) ['proba']"),
        ({"inputs": []}, None, 400, '"inputs" must be a non-empty list'),
        ({"inputs": [_t()], "id": "../etc"}, None, 400, "request id must be"),
        # unknown model or version
        ({"inputs": [_t()]}, "/v2/models/no-such-model/infer", 404, "unknown model 'no-such-model'"),
        (
            {"inputs": [_t()]},
            "/v2/models/{name}/versions/999/infer",
            404,
            "version '999' is not being served",
        ),
    ],
)
def test_bad_v2_requests_get_a_clear_4xx(gw, body, path, status, needle):
    r = _infer(gw, body, path=path.format(name=gw.model) if path else None)
    assert r.status_code == status, r.text
    assert r.json()["error_code"] in ("BAD_REQUEST", "NOT_FOUND")
    assert needle in r.json()["message"], r.json()["message"]
