"""Reliability report, faults section: time to a clear error for a dead and a hung MLflow, orphaned runs
after SIGKILLs mid-operation, and credentials leaked in messages.

Every figure comes from real parts: a closed port (dead), a socket server that accepts and never answers
(hung), a real MLflow server SIGKILLed through a proxy at a chosen request and restarted on its data.
Default settings (``call_timeout`` 20 s) unless ``--quick``, which uses 5 s to smoke-test the section.

    .venv/bin/python -m benchmarks.reliability.faults [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECTION = "faults"
TARGET_S = 30.0
SECRET = "bench-" + "Kx81nQwZr2"


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def _timed(fn: Any) -> tuple[float, str]:
    """Seconds until ``fn`` raised, and the message it raised (the message a user reads)."""
    t0 = time.monotonic()
    try:
        fn()
    except BaseException as exc:  # a measurement of what surfaces, whatever it is
        return time.monotonic() - t0, f"{type(exc).__name__}: {exc}"
    return time.monotonic() - t0, "no error (unexpected)"


def _clear(message: str, url: str) -> bool:
    return "unreachable" in message and url.split("://")[1] in message


def _entrypoints(url: str, call_timeout: float) -> dict[str, Any]:
    from airflow_saga.core.mlflow_client import MlflowSettings

    settings = MlflowSettings(url, username="alice", password=SECRET, call_timeout=call_timeout)
    conn_id = f"bench_faults_{abs(hash(url)) % 10**6}"
    conn = {"conn_type": "mlflow", "host": url, "login": "alice", "password": SECRET,
            "extra": {"call_timeout": call_timeout}}  # fmt: skip
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)  # this benchmark process only

    def hook() -> None:
        from airflow_saga.hooks.mlflow import MlflowHook

        MlflowHook(conn_id).client.get_registered_model("m")

    def cli() -> None:
        env = {**os.environ, "MLFLOW_TRACKING_URI": url.replace("://", f"://alice:{SECRET}@"),
               "SAGA_MLFLOW_CALL_TIMEOUT": str(call_timeout)}  # fmt: skip
        res = subprocess.run([sys.executable, "-m", "airflow_saga.cli", "history", "m"], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        raise RuntimeError(f"exit {res.returncode}: {res.stderr.strip()[-600:]}{res.stdout[-200:]}")

    def gateway() -> None:
        from airflow_saga.serving.models import Loader

        loader = Loader(settings, "m", fast_path=False)
        try:
            loader.load("champion", loader.resolve("champion"))
        finally:
            loader.close()

    def monitor() -> None:
        from airflow_saga.operators.drift import DriftMonitorOperator

        DriftMonitorOperator(task_id="drift", model_name="m", mlflow_conn_id=conn_id).execute({})

    return {
        "hook call": hook,
        "CLI (saga history, incl. process start)": cli,
        "gateway model load": gateway,
        "monitor operator": monitor,
    }


def _time_to_error(call_timeout: float) -> tuple[list[dict], list[str]]:
    import mlflow  # noqa: F401 - warm imports: time the calls, not this process's first imports

    import airflow_saga.hooks.mlflow
    import airflow_saga.operators.drift
    import airflow_saga.serving.models  # noqa: F401
    from airflow_saga.devstack.faults import SilentServer

    rows, messages = [], []
    with SilentServer() as silent:
        for state, url in (("dead", _dead_url()), ("hung", silent.url)):
            for name, fn in _entrypoints(url, call_timeout).items():
                seconds, message = _timed(fn)
                messages.append(message)
                clear = _clear(message, url)
                rows.append(
                    {
                        "section": SECTION,
                        "measure": f"time to a clear error, {state} MLflow: {name}",
                        "value": f"{seconds:.1f} s" + ("" if clear else " (message unclear)"),
                        "target": f"< {TARGET_S:.0f} s",
                        "met": clear and seconds < TARGET_S,
                    }
                )
    return rows, messages


def _kill_scenarios() -> tuple[list[dict], list[str]]:
    from airflow_saga.core import promotion
    from airflow_saga.core import tags as T
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client
    from airflow_saga.core.registry import register_version
    from airflow_saga.core.training import TrainSpec, train
    from airflow_saga.devstack.faults import KillableMlflow

    rows, messages = [], []
    root = Path(tempfile.mkdtemp(prefix="saga-bench-faults-"))
    k = KillableMlflow(root)
    try:
        client = build_client(MlflowSettings(k.url, call_timeout=5, max_retries=1))
        task = {"dag_id": "bench", "run_id": "manual__kill", "task_id": "train", "map_index": "-1"}
        spec = TrainSpec(model_name="bench-kill", estimator="sklearn.linear_model.LogisticRegression",
                         data_source="sklearn:breast_cancer", target="target",
                         hyperparameters={"max_iter": 5000})  # fmt: skip

        # mid-train: killed at the model's first artifact upload, then the task's retry
        k.proxy.arm(r"PUT /api/2\.0/mlflow-artifacts/artifacts/\S*/models/", "before", k.kill)
        messages.append(_timed(lambda: train(client, spec, airflow={**task, "try_number": "1"}))[1])
        k.restart()
        train(client, spec, airflow={**task, "try_number": "2"})
        exp = client.get_experiment_by_name(spec.experiment).experiment_id
        running = [r for r in client.search_runs([exp]) if r.info.status == "RUNNING"]
        rows.append({"section": SECTION, "measure": "RUNNING runs after a kill mid-train and the retry",
                     "value": str(len(running)), "target": "0", "met": not running})  # fmt: skip

        # mid-register: the server creates the version and dies before answering, then the retry
        run_id = client.create_run("0").info.run_id
        client.set_terminated(run_id)
        kwargs = {"model_uri": f"runs:/{run_id}/model", "run_id": run_id, "tags": {}}
        k.proxy.arm(r"POST /api/2\.0/mlflow/model-versions/create", "after", k.kill)
        messages.append(_timed(lambda: register_version(client, "bench-reg", **kwargs))[1])
        k.restart()
        register_version(client, "bench-reg", **kwargs)
        versions = client.search_model_versions("name='bench-reg'")
        rows.append({"section": SECTION, "measure": "versions after a kill mid-register and the retry",
                     "value": str(len(versions)), "target": "1", "met": len(versions) == 1})  # fmt: skip

        # mid-promote: the alias moves, the server dies before answering, then the retry
        from airflow_saga.core.approval import set_status

        vs = []
        for _ in range(2):
            r = client.create_run("0").info.run_id
            client.set_terminated(r)
            mv, _ = register_version(client, "bench-promote", model_uri=f"runs:/{r}/m", run_id=r, tags={})
            set_status(client, "bench-promote", str(mv.version), T.APPROVED, by="bench")
            vs.append(str(mv.version))
        promotion.promote(client, "bench-promote", vs[0], T.CHAMPION, by="bench", reason="first")
        k.proxy.arm(r"POST /api/2\.0/mlflow/registered-models/alias", "after", k.kill)
        messages.append(
            _timed(lambda: promotion.promote(client, "bench-promote", vs[1], T.CHAMPION, by="b", reason="r"))[
                1
            ]
        )
        k.restart()
        t0 = time.monotonic()
        promotion.promote(client, "bench-promote", vs[1], T.CHAMPION, by="bench", reason="retry")
        retry_s = time.monotonic() - t0
        history = promotion.history(client, "bench-promote")
        consistent = (
            promotion.aliases(client, "bench-promote") == {T.CHAMPION: vs[1]}
            and [e["to"] for e in history] == vs
        )
        rows.append({"section": SECTION, "measure": "half-moved aliases after a kill mid-promote and the retry",
                     "value": "0" if consistent else "1", "target": "0", "met": consistent})  # fmt: skip
        rows.append({"section": SECTION, "measure": "promote retry after the kill (waits out the dead lock)",
                     "value": f"{retry_s:.1f} s", "target": None, "met": None})  # fmt: skip
    finally:
        k.close()
    return rows, messages


def measure(quick: bool = False) -> list[dict]:
    from airflow_saga.core.mlflow_client import DEFAULT_CALL_TIMEOUT

    call_timeout = 5.0 if quick else DEFAULT_CALL_TIMEOUT
    rows, messages = _time_to_error(call_timeout)
    kill_rows, kill_messages = _kill_scenarios()
    rows += kill_rows
    messages += kill_messages
    leaked = sum(SECRET in m for m in messages)
    rows.append({"section": SECTION, "measure": f"credentials leaked in {len(messages)} error messages",
                 "value": str(leaked), "target": "0", "met": leaked == 0})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="call_timeout 5 s instead of the default")
    args = parser.parse_args(argv)
    from benchmarks.bench_reliability import render

    rows = measure(quick=args.quick)
    print(render(rows))
    return 1 if any(r.get("met") is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
