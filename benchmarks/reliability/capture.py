"""Reliability section: capture records lost when a gateway under load is stopped or killed.

For every case a real ``saga serve`` process (one worker, on 127.0.0.1) serves one-row requests from four
keep-alive client threads carrying their own ``X-Saga-Inference-Id``; after ``--seconds`` of load its
process group gets SIGTERM (graceful stop: what ``docker stop`` does) or SIGKILL (the gateway and its shadow
worker die at once: ``docker kill``, the OOM killer on a container). Then, as a restarted gateway would at
start, a writer on the same root replays what the dead one left in its spool. A request counts as
answered when its client received the whole 200 response; it counts as lost when no capture record has
its inference id.

Cases: each durability mode (buffered, durable) and format (JSONL, Parquet) on a local directory, without a
shadow (the gateway process writes every record); the same with a 100% shadow (the shadow worker writes
the mirrored records in buffered mode; in durable mode the gateway writes the champion's record before
answering and the shadow worker only the shadow result); and S3 (moto's server on loopback).

    .venv/bin/python -m benchmarks.reliability.capture [--quick] [--seconds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "capture"
# (store, durability, format, shadow, signal)
FULL = [
    *[("local", d, f, False, s) for d in ("buffered", "durable") for f in ("jsonl", "parquet")
      for s in ("SIGTERM", "SIGKILL")],
    ("local", "buffered", "jsonl", True, "SIGKILL"),
    ("local", "durable", "jsonl", True, "SIGKILL"),
    ("s3", "buffered", "jsonl", False, "SIGKILL"),
    ("s3", "durable", "jsonl", False, "SIGTERM"),
    ("s3", "durable", "jsonl", False, "SIGKILL"),
    ("s3", "durable", "parquet", True, "SIGKILL"),
]  # fmt: skip
QUICK = [
    ("local", "buffered", "jsonl", False, "SIGKILL"),
    ("local", "durable", "jsonl", False, "SIGKILL"),
    ("local", "durable", "parquet", True, "SIGKILL"),
    ("s3", "durable", "jsonl", False, "SIGKILL"),
]


class _Load:
    """Client threads sending requests until the server goes away; they remember what was answered."""

    def __init__(self, url: str, prefix: str, threads: int = 4) -> None:
        self.url = url
        self.prefix = prefix
        self.answered: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def _run(self, t: int) -> None:
        import requests

        from tests.support import models

        body = {"instances": models.sample_rows(1)}
        i = 0
        with requests.Session() as s:
            while not self._stop.is_set():
                iid = f"{self.prefix}.t{t}-{i}"
                i += 1
                try:
                    r = s.post(self.url + "/invocations", json=body, headers={"X-Saga-Inference-Id": iid},
                               timeout=10)  # fmt: skip
                except requests.RequestException:
                    self.failed += 1
                    if self.failed > 200:
                        return
                    time.sleep(0.01)
                    continue
                if r.status_code == 200:
                    self.answered.append(iid)

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def _case(case: tuple, work: Path, mlflow_url: str, name: str, s3, seconds: float) -> dict:
    from airflow_saga.core.capture import CaptureWriter
    from airflow_saga.core.capture_scan import read_capture
    from airflow_saga.devstack.procs import bytecode_env, free_port, spawn, stop, wait_http

    store, durability, fmt, shadow, sig = case
    label = f"{store} {durability} {fmt}{' + shadow' if shadow else ''}"
    tag = f"{label}-{sig}".replace(" ", "-").replace("+", "")  # a fresh directory (and ids) per case
    root = f"s3://{s3.bucket()}/capture" if store == "s3" else str(work / tag / "capture")
    spool = work / tag / "spool"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "airflow_saga.cli", "serve", name, "--tracking-uri", mlflow_url,
           "--port", str(port), "--capture-dir", root, "--capture-format", fmt, "--capture-durability",
           durability, "--capture-spool-dir", str(spool), "--flush-interval", "1"]  # fmt: skip
    if shadow:
        cmd += ["--shadow", "challenger"]
    env = {**os.environ, **bytecode_env(), **(s3.env if store == "s3" else {})}
    env.pop("SAGA_SERVE_TOKEN", None)
    log = work / tag / "gateway.log"
    proc = spawn(cmd, log, env, cwd=REPO)
    try:
        wait_http(url + "/ping", 300, proc, log, ok=(200,))
        with _Load(url, prefix=tag) as load:
            time.sleep(seconds)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, getattr(signal, sig))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=120)
            time.sleep(0.2)
    finally:
        stop(proc, timeout=30)
    answered = set(load.answered)
    with _env(s3.env if store == "s3" else {}):
        # what the next gateway does at start: publish the dead writer's spool
        w = CaptureWriter(root, name, fmt, 3600, durability=durability, spool_dir=str(spool))
        replayed = w.replay_orphans()
        w.close()
        df = read_capture(root, name, columns=["inference_id", "shadow_prediction"])
    captured = set(df["inference_id"])
    lost = len(answered - captured)
    scored = int(df[df["inference_id"].isin(answered)]["shadow_prediction"].notna().sum())
    duplicates = int(len(df) - df["inference_id"].nunique())  # shadow process killed between flush and ack
    detail = f"{lost} of {len(answered):,} answered"
    extras = []
    if shadow:
        extras.append(f"shadow result for {scored:,}")
    if replayed:
        extras.append(f"{replayed} spool segment(s) replayed")
    if duplicates:
        extras.append(f"{duplicates} duplicate rows")
    if extras:
        detail += f" ({'; '.join(extras)})"
    must_keep = sig == "SIGTERM" or durability == "durable"
    return {
        "section": SECTION,
        "measure": f"capture loss on {sig}: {label}",
        "value": detail,
        "target": "0" if must_keep else None,
        "met": (lost == 0) if must_keep else None,
    }


@contextlib.contextmanager
def _env(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def measure(quick: bool = False, seconds: float | None = None) -> list[dict]:
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client
    from airflow_saga.devstack.mlflow_server import MlflowServer
    from tests.support import models
    from tests.support.s3 import MotoS3

    seconds = seconds or (1.5 if quick else 3.0)
    work = Path(tempfile.mkdtemp(prefix="saga-rel-capture-"))
    mlflow = MlflowServer(work / "mlflow").start()
    s3 = MotoS3(work / "moto").start()
    rows = []
    try:
        client = build_client(MlflowSettings(tracking_uri=mlflow.url))
        name = "rel-capture"
        models.register_sklearn(client, name, aliases=("champion",))
        models.register_sklearn(client, name, models.fit(seed=1), aliases=("challenger",))
        for case in QUICK if quick else FULL:
            row = _case(case, work, mlflow.url, name, s3, seconds)
            print(row, file=sys.stderr, flush=True)
            rows.append(row)
    finally:
        s3.stop()
        mlflow.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="four cases, shorter load")
    ap.add_argument("--seconds", type=float, help="seconds of load before the signal (default 3, quick 1.5)")
    args = ap.parse_args()
    from benchmarks.bench_reliability import render

    rows = measure(args.quick, args.seconds)
    print(render(rows))
    return 1 if any(r["met"] is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
