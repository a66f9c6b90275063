"""Real multi-worker gateways and start-up faults: with ``--workers 2`` every worker serves, shadows and
captures, capture files never collide and ``/metrics`` adds up across workers; a dead or hung MLflow
fails the start within bounded time with the package's unreachable error."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from airflow_saga.core import tags
from airflow_saga.core.capture_scan import read_capture
from tests.conftest import REPO
from tests.support import models
from tests.support.procs import free_port

pytestmark = pytest.mark.integration


def _metric_sum(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_two_workers_serve_shadow_capture_and_sum_their_metrics(gateway_factory, mlflow_client, tmp_path):
    name = f"workers-{uuid.uuid4().hex[:6]}"
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    models.register_pyfunc(
        mlflow_client, name, models.SlowOrFailingModel(value=7), aliases=(tags.CHALLENGER,)
    )
    cap = tmp_path / "capture"
    gw = gateway_factory(
        name,
        *("--workers", "2", "--shadow", "challenger", "--capture-dir", str(cap), "--flush-interval", "0.2"),
        timeout=360,  # four processes import MLflow and load models; slow on a busy 2-core machine
    )
    expected = models.fit().predict(models.breast_cancer()[0].iloc[0:200]).tolist()
    # /ping answers once the first worker is ready; the second may still be loading (not accepting
    # connections yet): wait until both have answered, ready
    seen: set[int] = set()
    deadline = time.monotonic() + 360
    while len(seen) < 2 and time.monotonic() < deadline:
        r = requests.get(gw.url + "/health", headers={"Connection": "close"}, timeout=60)
        assert r.status_code == 200, r.text  # a worker that accepts a connection is loaded
        seen.add(r.json()["pid"])
        time.sleep(0.05)
    assert len(seen) == 2, seen

    def one(i: int) -> tuple[str, int, int]:
        # a new connection per request, so the kernel spreads them over both workers' accept()
        r = requests.post(
            gw.url + "/invocations",
            json={"instances": models.sample_rows(1, start=i)},
            headers={"Connection": "close"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        pid = requests.get(gw.url + "/health", headers={"Connection": "close"}, timeout=60).json()["pid"]
        return r.headers["X-Saga-Inference-Id"], r.json()["predictions"][0], pid

    n = 200
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(n)))
    ids = [r[0] for r in results]
    assert [r[1] for r in results] == expected  # every worker answers like the model
    pids = {r[2] for r in results}
    assert len(pids) == 2, pids  # both workers served (/health names the worker that answered)
    # /metrics sums both workers' counters, whichever worker answers the scrape
    for _ in range(3):
        assert _metric_sum(gw.url, "saga_requests_total", route="/invocations", status="200") == n
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _metric_sum(gw.url, "saga_shadow_total", outcome="ok") < n:
        time.sleep(0.3)
    assert _metric_sum(gw.url, "saga_shadow_total", outcome="ok") == n
    versions = {(s["alias"], s["version"]) for s in gw.health()["slots"]}
    assert versions == {("champion", "1"), ("challenger", "2")}
    assert gw.stop() in (0, -15)
    df = read_capture(cap, name)
    assert sorted(df["inference_id"]) == sorted(ids)  # each request captured exactly once
    assert (df["shadow_prediction"] == 7).all() and df["shadow_error"].isna().all()
    files = list(cap.rglob("*.jsonl"))
    assert len({f.name for f in files}) >= 2  # one writer per worker's shadow process, never a shared file


def _serve_fails(tracking_uri: str, tmp_path) -> tuple[int, float, str]:
    log = tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log"
    t0 = time.monotonic()
    with log.open("wb") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "airflow_saga.cli", "serve", "m", "--tracking-uri", tracking_uri,
             "--port", str(free_port())],
            cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, timeout=240,
        )  # fmt: skip
    return proc.returncode, time.monotonic() - t0, log.read_text(errors="replace")


def test_dead_or_hung_mlflow_fails_the_start_with_a_clear_error(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens
    code, _, out = _serve_fails(dead, tmp_path)
    assert code != 0 and f"MLflow at {dead} is unreachable" in out, out[-2000:]
    # hung: the kernel completes the TCP handshake into the backlog, but nothing ever answers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        hung = f"http://127.0.0.1:{s.getsockname()[1]}"
        code, _, out = _serve_fails(hung, tmp_path)
    assert code != 0 and f"MLflow at {hung} is unreachable" in out, out[-2000:]
    assert "Traceback" not in out, out[-2000:]
