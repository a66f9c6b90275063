"""Large requests and readiness, on real gateway processes (``saga serve``) against the session MLflow.

- A large request in flight does not block small ones: the large request's model holds it (and takes the
  GIL in long C calls, as a big decode does) until the test releases it, and small requests must all be
  answered *before* that release; the large one is answered after it. Ordering, not timing.
- The lane is bounded: beyond ``--large-max-pending`` a large request gets 503 with Retry-After.
- A lane process that dies fails only its request (503, never 500) and is replaced.
- Large requests (by rows and by bytes) give exactly the answers of small ones, in both protocols, and bad
  input in a large request is the same 400.
- While the model loads, live is live and ready is not ("loading"); scoring is 503 with Retry-After.
- A gateway none of whose variants loads stops with a non-zero status and the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid

import pytest
import requests

from airflow_saga.core import tags
from tests.conftest import REPO
from tests.support import models
from tests.support.procs import free_port, stop, wait_http

pytestmark = pytest.mark.integration

COLS = models.columns()


def _rows(n):
    """``n`` rows (breast_cancer has 569; repeated as needed)."""
    rows = models.sample_rows(569)
    return [list(rows[i % 569]) for i in range(n)]


def _split(rows):
    return {"dataframe_split": {"columns": COLS, "data": rows}}


def _post(url, body, timeout=120):
    return requests.post(url + "/invocations", json=body, timeout=timeout)


class _Background:
    """A request sent from a thread, so the test can act while it is in flight."""

    def __init__(self, url, body):
        self.response = None
        self.error = None
        self._thread = threading.Thread(target=self._run, args=(url, body), daemon=True)
        self._thread.start()

    def _run(self, url, body):
        try:
            self.response = _post(url, body, timeout=300)
        except Exception as exc:  # reported by the assertion that reads it
            self.error = exc

    def done(self):
        return not self._thread.is_alive()

    def wait(self, timeout=300):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the large request never finished"
        assert self.error is None, self.error
        return self.response


def _wait_pending(url, n, timeout=120, request=None):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if request is not None and request.done():
            r = request.response
            raise AssertionError(
                f"the large request ended early: {request.error or (r.status_code, r.text[:500])}"
            )
        lane = requests.get(url + "/health", timeout=30).json()["large_requests"]
        if lane["pending"] >= n:
            return lane
        time.sleep(0.1)
    raise AssertionError(f"the lane never had {n} pending request(s): {lane}")


def _wait_for(condition, request, timeout=120):
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert not request.done(), "the large request ended before it was held"
        assert time.monotonic() < deadline, "the large request was never scored"
        time.sleep(0.05)


@pytest.fixture
def held(gateway_factory, mlflow_client, tmp_path):
    name = f"large-{uuid.uuid4().hex[:6]}"
    release = tmp_path / "release"
    models.register_pyfunc(
        mlflow_client, name, models.HeldLargeModel(str(release), big=1000, value=5), aliases=(tags.CHAMPION,)
    )
    gw = gateway_factory(name, "--large-max-pending", "1", "--large-rows", "1000")
    gw.release = release  # type: ignore[attr-defined]
    return gw


def test_a_large_request_in_flight_does_not_block_small_ones(held):
    big = _Background(held.url, _split(_rows(1500)))
    _wait_pending(held.url, 1, request=big)  # the large request is in the lane
    pid_file = held.release.with_name("release.pid")
    _wait_for(pid_file.exists, big)  # ... and its model is scoring it, held until the release
    small = [_post(held.url, _split(models.sample_rows(2, start=i)), timeout=60) for i in range(0, 40, 2)]
    assert [r.status_code for r in small] == [200] * 20, [r.text for r in small if r.status_code != 200]
    assert all(r.json() == {"predictions": [5, 5]} for r in small)
    assert not big.done(), "the large request finished before it was released: the test proves nothing"
    # scored in a lane process, not in a thread of the gateway process (whose GIL it would hold)
    lane_pid = int(pid_file.read_text())
    assert lane_pid != held.health()["pid"]
    # the lane is full: another large request is refused at once, with Retry-After, and not queued
    refused = _post(held.url, _split(_rows(1500)))
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1", refused.text
    assert "large requests are already being scored" in refused.json()["message"]
    held.release.write_text("go")
    r = big.wait()
    assert r.status_code == 200 and r.json()["predictions"] == [5] * 1500
    lane = held.health()["large_requests"]
    assert lane["refused"] == 1 and lane["pending"] == 0 and lane["crashes"] == 0


def test_a_dying_lane_process_fails_only_its_request_and_is_replaced(held):
    held.release.write_text("go")  # large requests are not held in this test
    rows = _rows(1500)
    rows[0][0] = -999.0  # the model kills its process on this batch
    r = _post(held.url, _split(rows))
    assert r.status_code == 503 and "worker process died" in r.json()["message"], r.text
    assert r.headers["Retry-After"] == "1"
    assert _post(held.url, _split(models.sample_rows(1))).json() == {"predictions": [5]}
    again = _post(held.url, _split(_rows(1500)))
    assert again.status_code == 200 and again.json()["predictions"] == [5] * 1500
    assert held.health()["large_requests"]["crashes"] == 1


def test_large_requests_answer_like_small_ones_in_both_protocols(gateway_factory, mlflow_client):
    name = f"large-eq-{uuid.uuid4().hex[:6]}"
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    # 569 distinct rows; large by rows (> 300) and, for the 1.5 MB body, by bytes (> 1 MiB)
    gw = gateway_factory(
        name, "--large-rows", "300", "--large-body-bytes", "1048576", "--max-body-bytes", "4000000"
    )
    rows = models.sample_rows(569)
    expected = []
    for i in range(0, len(rows), 50):
        expected += _post(gw.url, _split(rows[i : i + 50])).json()["predictions"]
    assert _post(gw.url, _split(rows)).json() == {"predictions": expected}
    many = rows * 11  # 6,259 rows, about 1.5 MB of JSON
    assert len(json.dumps(_split(many))) > 1_048_576
    assert _post(gw.url, _split(many)).json() == {"predictions": expected * 11}
    records = {"dataframe_records": [dict(zip(COLS, r, strict=True)) for r in rows]}
    assert _post(gw.url, records).json() == {"predictions": expected}
    v2 = {"id": "big-1", "inputs": [{"name": "x", "shape": [569, 30], "datatype": "FP64", "data": rows}]}
    out = requests.post(f"{gw.url}/v2/models/{name}/infer", json=v2, timeout=120)
    assert out.status_code == 200 and out.headers["X-Saga-Inference-Id"] == "big-1", out.text
    assert out.json()["id"] == "big-1" and out.json()["outputs"][0]["data"] == expected
    # bad input in a large request: the same 400 as in a small one, naming column and row
    bad = [list(r) for r in rows]
    bad[400][3] = "x"
    r = _post(gw.url, _split(bad))
    assert r.status_code == 400 and "row 400: expected double, got str 'x'" in r.json()["message"], r.text
    assert f"model {name!r} version 1" in r.json()["message"]
    v2_bad = {"inputs": [{"name": "x", "shape": [569, 30], "datatype": "INT64", "data": rows}]}
    r = requests.post(f"{gw.url}/v2/models/{name}/infer", json=v2_bad, timeout=120)
    assert r.status_code == 400 and "is INT64 but element 0 is float" in r.json()["message"], r.text
    assert gw.health()["large_requests"]["completed"] == 6


def test_large_requests_in_a_thread_when_the_lane_is_off(gateway_factory, mlflow_client):
    name = f"large-thr-{uuid.uuid4().hex[:6]}"
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    gw = gateway_factory(name, "--large-workers", "0", "--large-rows", "100")
    rows = models.sample_rows(300)
    small = [
        p for i in range(0, 300, 50) for p in _post(gw.url, _split(rows[i : i + 50])).json()["predictions"]
    ]
    assert _post(gw.url, _split(rows)).json() == {"predictions": small}
    assert gw.health()["large_requests"] == {"workers": 0}


def _popen_serve(name, tracking_uri, log, *args):
    port = free_port()
    cmd = [sys.executable, "-m", "airflow_saga.cli", "serve", name, "--tracking-uri", tracking_uri,
           "--port", str(port), "--log-level", "info", *args]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "SAGA_SERVE_TOKEN"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def test_readiness_says_loading_until_the_model_is_loaded(mlflow_server, mlflow_client, tmp_path):
    name = f"loading-{uuid.uuid4().hex[:6]}"
    release = tmp_path / "loaded"
    models.register_pyfunc(mlflow_client, name, models.GatedLoadModel(str(release)), aliases=(tags.CHAMPION,))
    proc, url = _popen_serve(name, mlflow_server.url, tmp_path / "gw.log")
    try:
        wait_http(url + "/v2/health/live", 120, proc, tmp_path / "gw.log", ok=(200,))
        # the model's load_context is waiting for the release file: the gateway is live and not ready
        assert requests.get(url + "/v2/health/live", timeout=10).json() == {"live": True}
        ready = requests.get(url + "/v2/health/ready", timeout=10)
        assert ready.status_code == 503 and ready.json() == {"ready": False, "state": "loading"}
        model_ready = requests.get(f"{url}/v2/models/{name}/ready", timeout=10)
        assert model_ready.status_code == 503 and model_ready.json()["state"] == "loading"
        assert requests.get(url + "/ping", timeout=10).status_code == 503
        health = requests.get(url + "/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "loading"
        r = _post(url, _split(models.sample_rows(1)), timeout=10)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        assert f"model {name!r} is loading" in r.json()["message"]
        v2 = {
            "inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": models.sample_rows(1)[0]}]
        }
        r = requests.post(f"{url}/v2/models/{name}/infer", json=v2, timeout=10)
        assert r.status_code == 503 and "is loading" in r.json()["message"], r.text
        release.write_text("go")
        wait_http(url + "/v2/health/ready", 120, proc, tmp_path / "gw.log", ok=(200,))
        assert requests.get(url + "/v2/health/ready", timeout=10).json() == {"ready": True}
        assert requests.get(url + "/ping", timeout=10).status_code == 200
        assert _post(url, _split(models.sample_rows(3))).json() == {"predictions": [4, 4, 4]}
    finally:
        stop(proc, timeout=60)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_gateway_whose_model_cannot_load_stops_with_the_reason(
    mlflow_server, mlflow_client, tmp_path, workers
):
    name = f"unloadable-{uuid.uuid4().hex[:6]}"
    models.register_pyfunc(mlflow_client, name, models.BrokenOnLoad(), aliases=(tags.CHAMPION,))
    log = tmp_path / "gw.log"
    proc, _ = _popen_serve(name, mlflow_server.url, log, "--workers", workers)
    try:
        code = proc.wait(timeout=240)
    finally:
        stop(proc, timeout=30)
    out = log.read_text(errors="replace")
    assert code != 0, out[-3000:]
    assert f"no production variant of model {name!r} could be loaded" in out, out[-3000:]
    assert "this model version cannot be loaded" in out, out[-3000:]


def test_the_lane_follows_a_hot_swap(gateway_factory, mlflow_client):
    import time

    name = f"large-swap-{uuid.uuid4().hex[:6]}"
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    gw = gateway_factory(name, "--large-rows", "100", "--poll-interval", "0.5")
    rows = _rows(300)
    first = _post(gw.url, _split(rows))
    assert first.status_code == 200 and first.headers["X-Saga-Model-Version"] == "1"
    assert set(first.json()["predictions"]) <= {0, 1}
    models.register_pyfunc(mlflow_client, name, models.SlowOrFailingModel(value=9), aliases=(tags.CHAMPION,))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and gw.health()["slots"][0]["version"] != "2":
        time.sleep(0.2)
    r = _post(gw.url, _split(rows))
    assert r.headers["X-Saga-Model-Version"] == "2" and r.json() == {"predictions": [9] * 300}, r.text[:300]


def test_lane_processes_exit_when_the_gateway_is_killed(gateway_factory, mlflow_client):
    import signal
    import time

    name = f"large-kill-{uuid.uuid4().hex[:6]}"
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    gw = gateway_factory(name, "--large-workers", "2")
    pids = gw.health()["large_requests"]["pids"]
    assert len(pids) == 2 and gw.proc.pid not in pids
    os.kill(gw.proc.pid, signal.SIGKILL)  # the gateway alone, not its process group
    gw.proc.wait(timeout=30)
    deadline = time.monotonic() + 60
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        time.sleep(0.2)
    assert alive == [], f"lane processes {alive} outlived their gateway"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
