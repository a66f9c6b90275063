"""Gateway lifecycle against a real MLflow registry: SIGTERM flushes capture, weighted variants, a raising
or stuck shadow never touches the champion, and alias moves hot-swap under traffic (poll and webhook)."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import uuid
from collections import Counter

import pytest
import requests

from airflow_saga.core import tags
from airflow_saga.core.capture_scan import read_capture
from tests.support import models

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_capture_is_complete_after_sigterm_even_with_a_stuck_shadow(gateway_factory, mlflow_client, tmp_path):
    name = _name("sigterm")
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    models.register_pyfunc(
        mlflow_client, name, models.SlowOrFailingModel(delay=5), aliases=(tags.CHALLENGER,)
    )
    cap = tmp_path / "capture"
    # A 60 s flush interval: nothing reaches disk before SIGTERM, so the shutdown flush must write it all.
    gw = gateway_factory(
        name,
        "--shadow",
        "challenger",
        "--shadow-timeout",
        "1",
        "--shadow-queue",
        "16",
        "--capture-dir",
        str(cap),
        "--flush-interval",
        "60",
    )
    ids, n = [], 150
    with requests.Session() as s:
        for i in range(n):
            r = s.post(gw.url + "/invocations", json={"instances": models.sample_rows(1, start=i)})
            assert r.status_code == 200, r.text
            assert r.headers["X-Saga-Variant"] == "champion"
            ids.append(r.headers["X-Saga-Inference-Id"])
    # uvicorn finishes a graceful shutdown, then re-raises SIGTERM so the exit status says why it stopped.
    assert gw.stop() in (0, -15)
    assert "capture flushed: 150 rows in 150 requests" in gw.log.read_text(errors="replace")
    df = read_capture(cap, name)
    assert len(df) == n
    assert sorted(df["inference_id"]) == sorted(ids)
    # The shadow sleeps 5 s with a 1 s timeout: every copy timed out, was dropped, or was cut by shutdown.
    assert df["shadow_error"].notna().all()
    assert df["shadow_prediction"].isna().all()
    kinds = {e.split(":")[0] for e in df["shadow_error"]}
    assert kinds <= {"timeout", "dropped", "not run"}, kinds


def _metric(url: str, line_prefix: str) -> float:
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.split()[-1])
    return 0.0


def test_shadow_process_crash_is_survived_counted_and_captured(gateway_factory, mlflow_client, tmp_path):
    name = _name("crash")
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    models.register_pyfunc(
        mlflow_client, name, models.SlowOrFailingModel(delay=0.2, value=7), aliases=(tags.CHALLENGER,)
    )
    cap = tmp_path / "capture"
    # 60 s flush interval: the shadow process acknowledges nothing before SIGTERM, so every copy it holds
    # when it is killed must be captured by the gateway instead.
    gw = gateway_factory(name, "--shadow", "challenger", "--capture-dir", str(cap), "--flush-interval", "60")
    first = gw.health()["shadow_process"]
    assert first["pid"] and first["up"] and first["restarts"] == 0

    def send(k: int, s: requests.Session) -> list[str]:
        out = []
        for i in range(k):
            r = s.post(gw.url + "/invocations", json={"instances": models.sample_rows(1, start=i)})
            assert r.status_code == 200, r.text
            assert 7 not in r.json()["predictions"]
            out.append(r.headers["X-Saga-Inference-Id"])
        return out

    with requests.Session() as s:
        before = send(20, s)
        os.kill(first["pid"], signal.SIGKILL)  # a segfaulting or OOM-killed shadow model
        during = send(20, s)  # served while the shadow process is down or restarting
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sp = gw.health()["shadow_process"]
            if sp["restarts"] >= 1 and sp["pid"] != first["pid"] and sp["up"]:
                break
            time.sleep(0.2)
        assert sp["restarts"] >= 1 and sp["pid"] != first["pid"] and sp["up"], sp
        ok_before = _metric(gw.url, 'saga_shadow_total{outcome="ok"}')
        after = send(20, s)
        # wait until the new shadow process has scored them (it reports outcomes every second)
        while time.monotonic() < deadline:
            if _metric(gw.url, 'saga_shadow_total{outcome="ok"}') >= ok_before + 20:
                break
            time.sleep(0.2)
    assert _metric(gw.url, "saga_shadow_process_restarts") >= 1
    assert _metric(gw.url, 'saga_shadow_total{outcome="crash"}') >= 1
    assert gw.stop() in (0, -15)
    df = read_capture(cap, name)
    assert sorted(df["inference_id"]) == sorted(before + during + after)  # each exactly once
    # every captured request has the shadow's answer or the reason it has none
    assert (df["shadow_prediction"].notna() | df["shadow_error"].notna()).all()
    by_id = df.set_index("inference_id")
    died = by_id.loc[before, "shadow_error"]
    assert died.str.startswith(("shadow process died", "dropped: shadow process restarting")).all(), died
    assert died.str.startswith("shadow process died").any()
    later = by_id.loc[after]
    assert (later["shadow_prediction"] == 7).all() and later["shadow_error"].isna().all()


def test_shadow_alias_move_is_loaded_in_the_shadow_process(gateway_factory, mlflow_client, tmp_path):
    name = _name("shadowswap")
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    models.register_pyfunc(
        mlflow_client, name, models.SlowOrFailingModel(value=7), aliases=(tags.CHALLENGER,)
    )
    models.register_pyfunc(mlflow_client, name, models.SlowOrFailingModel(value=9))
    cap = tmp_path / "capture"
    gw = gateway_factory(
        name,
        "--shadow",
        "challenger",
        "--poll-interval",
        "0.5",
        "--capture-dir",
        str(cap),
        "--flush-interval",
        "0.2",
    )

    def shadow_slot() -> dict:
        return next(s for s in gw.health()["slots"] if s["alias"] == tags.CHALLENGER)

    assert shadow_slot()["version"] == "2"
    mlflow_client.set_registered_model_alias(name, tags.CHALLENGER, "3")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and shadow_slot()["version"] != "3":
        time.sleep(0.2)
    assert shadow_slot()["version"] == "3" and shadow_slot()["error"] is None
    ids = []
    with requests.Session() as s:
        for i in range(10):
            r = s.post(gw.url + "/invocations", json={"instances": models.sample_rows(1, start=i)})
            assert r.status_code == 200 and r.headers["X-Saga-Model-Version"] == "1"
            ids.append(r.headers["X-Saga-Inference-Id"])
    while time.monotonic() < deadline:
        df = read_capture(cap, name)
        if set(ids) <= set(df["inference_id"]):
            break
        time.sleep(0.2)
    mine = df[df["inference_id"].isin(ids)]
    assert len(mine) == 10
    assert (mine["shadow_model_version"] == "3").all() and (mine["shadow_prediction"] == 9).all()
    assert gw.health()["shadow_process"]["restarts"] == 0


def test_weighted_variants_and_a_raising_shadow(gateway_factory, mlflow_client):
    name = _name("weights")
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    models.register_sklearn(mlflow_client, name, models.fit("tree"), aliases=(tags.CHALLENGER,))
    models.register_pyfunc(mlflow_client, name, models.SlowOrFailingModel(fail=True), aliases=("raiser",))
    gw = gateway_factory(name, "--variants", "champion=70,challenger=30", "--shadow", "raiser")
    n, p = 600, 0.3
    seen: Counter[tuple[str, str]] = Counter()
    with requests.Session() as s:
        for i in range(n):
            r = s.post(gw.url + "/invocations", json={"instances": models.sample_rows(1, start=i % 500)})
            assert r.status_code == 200, r.text
            seen[(r.headers["X-Saga-Variant"], r.headers["X-Saga-Model-Version"])] += 1
        assert set(seen) == {("champion", "1"), ("challenger", "2")}
        sd = math.sqrt(n * p * (1 - p))  # binomial; 5 sd makes a false failure ~1 in 3.5 million
        assert abs(seen[("challenger", "2")] - n * p) < 5 * sd, seen
        for _ in range(20):
            r = s.post(
                gw.url + "/invocations",
                json={"instances": models.sample_rows(1)},
                headers={"X-Saga-Target-Variant": "challenger"},
            )
            assert r.headers["X-Saga-Variant"] == "challenger"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metrics = requests.get(gw.url + "/metrics").text
        if 'saga_shadow_total{outcome="error"}' in metrics:
            break
        time.sleep(0.2)
    assert 'saga_shadow_total{outcome="error"}' in metrics


class Traffic:
    """Keep one connection busy with requests and remember every status and served version."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: Counter[int] = Counter()
        self.versions: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as s:
            i = 0
            while not self._stop.is_set():
                try:
                    r = s.post(
                        self.url + "/invocations",
                        json={"instances": models.sample_rows(1, start=i % 500)},
                        timeout=30,
                    )
                    self.statuses[r.status_code] += 1
                    self.versions.append(r.headers.get("X-Saga-Model-Version", "?"))
                except requests.RequestException as exc:
                    self.errors.append(repr(exc))
                i += 1

    def __enter__(self) -> Traffic:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(timeout=60)

    def wait_version(self, version: str, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.versions and self.versions[-1] == version:
                return True
            time.sleep(0.1)
        return False


def test_hot_swap_under_traffic_and_a_failed_load_keeps_serving(gateway_factory, mlflow_client):
    name = _name("swap")
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    models.register_sklearn(mlflow_client, name, models.fit("tree"))
    models.register_pyfunc(mlflow_client, name, models.BrokenOnLoad())
    gw = gateway_factory(name, "--poll-interval", "0.5")
    with Traffic(gw.url) as t:
        assert t.wait_version("1")
        mlflow_client.set_registered_model_alias(name, tags.CHAMPION, "2")  # promotion
        assert t.wait_version("2"), t.versions[-5:]
        mlflow_client.set_registered_model_alias(name, tags.CHAMPION, "3")  # a version that cannot load
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            champ = next(s for s in gw.health()["slots"] if s["alias"] == "champion")
            if champ["error"]:
                break
            time.sleep(0.2)
        n_before = len(t.versions)
        while len(t.versions) < n_before + 20:
            time.sleep(0.05)
    assert "cannot be loaded" in champ["error"] and champ["version"] == "2"
    assert gw.health()["status"] == "degraded"
    assert t.errors == [] and set(t.statuses) == {200}, (t.statuses, t.errors[:3])
    assert set(t.versions) == {"1", "2"}
    first2 = t.versions.index("2")
    assert "1" not in t.versions[first2:]  # a swap is one-way: no request goes back to the old model
    assert 'saga_model_load_error{alias="champion"} 1.0' in requests.get(gw.url + "/metrics").text


def test_mlflow_webhook_triggers_the_swap(gateway_factory, mlflow_client):
    name = _name("webhook")
    secret = uuid.uuid4().hex
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    models.register_sklearn(mlflow_client, name, models.fit("tree"))
    # Polling once an hour: only the webhook can make this swap happen within the test.
    gw = gateway_factory(name, "--poll-interval", "3600", "--webhook-secret", secret)
    hook = mlflow_client.create_webhook(
        name=f"saga-{name}",
        url=f"{gw.url}/webhooks/mlflow",
        events=["model_version_alias.created"],
        secret=secret,
    )
    try:
        with Traffic(gw.url) as t:
            assert t.wait_version("1")
            # The MLflow server caches "who subscribes to this event" for MLFLOW_WEBHOOK_CACHE_TTL (60 s), so
            # a webhook created right after another test moved an alias is seen only once that cache expires.
            # Re-setting the alias (each set is a delivery) until the swap shows up covers that.
            swapped = False
            deadline = time.monotonic() + 120
            while not swapped and time.monotonic() < deadline:
                mlflow_client.set_registered_model_alias(name, tags.CHAMPION, "2")
                swapped = t.wait_version("2", timeout=5)
            assert swapped, gw.log.read_text(errors="replace")[-2000:]
        metrics = requests.get(gw.url + "/metrics").text
        assert 'saga_requests_total{route="/webhooks/mlflow",status="200",variant="none"}' in metrics
        assert set(t.statuses) == {200} and t.errors == []
    finally:
        mlflow_client.delete_webhook(hook.webhook_id)
