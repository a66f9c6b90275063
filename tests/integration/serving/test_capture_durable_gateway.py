"""A durable gateway SIGKILLed under traffic loses no answered request (real process, real files)."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
import uuid

import pytest
import requests

from airflow_saga.core import tags
from airflow_saga.core.capture import SHADOW_PENDING
from airflow_saga.core.capture_scan import read_capture
from tests.support import models

pytestmark = pytest.mark.integration


def test_sigkill_of_a_durable_gateway_loses_no_answered_request(gateway_factory, mlflow_client, tmp_path):
    name = f"durable-{uuid.uuid4().hex[:6]}"
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    models.register_sklearn(mlflow_client, name, models.fit(seed=1), aliases=(tags.CHALLENGER,))
    cap = tmp_path / "capture"
    # the shadow process writes its halves to _shadow/ after the response; the reader merges them
    gw = gateway_factory(name, "--shadow", "challenger", "--capture-dir", str(cap),
                         "--capture-durability", "durable", "--flush-interval", "0.5")  # fmt: skip
    assert gw.health()["capture"]["durability"] == "durable"
    answered: list[str] = []
    stop = threading.Event()

    def client(k: int) -> None:
        with requests.Session() as s:
            for i in range(10_000):
                if stop.is_set():
                    return
                iid = f"c{k}-{i}"
                try:
                    body = {"instances": models.sample_rows(1, start=i % 500)}
                    headers = {"X-Saga-Inference-Id": iid}
                    r = s.post(gw.url + "/invocations", json=body, headers=headers, timeout=30)
                except requests.RequestException:
                    return  # the gateway is gone
                if r.status_code == 200:
                    answered.append(iid)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(3)]
    for t in threads:
        t.start()

    def shadow_halves_on_disk() -> bool:
        halves = cap / name / "_shadow"
        return halves.exists() and any(p.is_file() for p in halves.rglob("*"))

    deadline = time.monotonic() + 120
    while (len(answered) < 300 or not shadow_halves_on_disk()) and time.monotonic() < deadline:
        if not all(t.is_alive() for t in threads):
            break
        threading.Event().wait(0.05)
    os.killpg(gw.proc.pid, signal.SIGKILL)  # mid-traffic: buffered records of the last interval would be lost
    gw.proc.wait(timeout=60)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert len(answered) >= 300
    df = read_capture(cap, name)
    captured = set(df["inference_id"])
    assert set(answered) <= captured, f"{len(set(answered) - captured)} answered requests lost"
    assert len(captured - set(answered)) <= 3  # at most the in-flight request of each client
    assert df["inference_id"].is_unique
    mine = df[df["inference_id"].isin(answered)]
    scored = mine["shadow_prediction"].notna() & mine["shadow_error"].isna()
    assert (scored | (mine["shadow_error"] == SHADOW_PENDING)).all()
    assert scored.sum() > 0, sorted(str(p.relative_to(cap)) for p in cap.rglob("*"))
    assert (mine["shadow_variant"] == "challenger").all()
    files = [p for p in cap.rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o640}
