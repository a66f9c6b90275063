"""``saga demo``: start the embedded stack, run the lifecycle through Airflow's REST API, print the outcome.

This is the README's first command. It starts an MLflow server (SQLite, local artifacts) and Airflow's
embedded topology (SQLite, LocalExecutor) with the package's ``dags/``, all on 127.0.0.1, and runs the whole
lifecycle: training pipeline with human approval, a challenger, live traffic through the gateway, shadow
comparison, drift -> retraining, rollback (``commands/_lifecycle.py``). It prints each step's outcome and the
UI URLs. ``--training-only`` stops after the first training run; ``--keep-running`` leaves the stack up.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the lifecycle demo on a local embedded stack")
    p.add_argument(
        "--home",
        default=os.environ.get("SAGA_HOME", ".saga/demo"),
        help="state directory (MLflow DB, artifacts, AIRFLOW_HOME); default .saga/demo",
    )
    p.add_argument("--dags-folder", default=None, help="DAGs folder (default: the package's dags/)")
    p.add_argument("--model-name", default="saga-breast-cancer")
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--airflow-port", type=int, default=8080)
    p.add_argument(
        "--keep-running", action="store_true", help="leave MLflow and Airflow running for browsing"
    )
    p.add_argument(
        "--training-only",
        action="store_true",
        help="stop after the training pipeline (skip gateway, shadow comparison, drift, rollback)",
    )
    p.set_defaults(func=run)


def default_dags_folder() -> Path:
    here = Path(__file__).resolve().parents[2] / "dags"
    if here.is_dir():
        return here
    raise SystemExit("cannot find the dags/ folder; pass --dags-folder")


def step(msg: str) -> None:
    print(f"[saga demo] {msg}", flush=True)


def run(args: argparse.Namespace) -> int:
    import signal

    from airflow_saga.devstack.airflow import AirflowStack
    from airflow_saga.devstack.api import AirflowApi
    from airflow_saga.devstack.mlflow_server import MlflowServer
    from airflow_saga.devstack.procs import free_port

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM too: the finally-block below must stop every process we started

    signal.signal(signal.SIGTERM, _interrupt)
    home = Path(args.home).resolve()
    dags = Path(args.dags_folder).resolve() if args.dags_folder else default_dags_folder()
    mlflow_port = _port_or_free(args.mlflow_port, free_port)
    airflow_port = _port_or_free(args.airflow_port, free_port)
    t0 = time.monotonic()
    step(f"state in {home}")
    mlflow = MlflowServer(home / "mlflow", port=mlflow_port)
    conn = f'{{"conn_type": "mlflow", "host": "{mlflow.url}"}}'
    stack = AirflowStack(
        home / "airflow",
        dags,
        port=airflow_port,
        extra_env={"AIRFLOW_CONN_MLFLOW_DEFAULT": conn, "SAGA_MLFLOW_UI_URL": mlflow.url},
    )
    try:
        step(f"starting MLflow on {mlflow.url} ...")
        mlflow.start()
        step(f"starting Airflow on {stack.url} ...")
        stack.start()
        step(f"stack up in {time.monotonic() - t0:.0f}s")
        api = AirflowApi(stack.url, "admin", "admin")
        outcome = run_training(api, args.model_name, mlflow.url, stack.url)
        if outcome and not args.training_only:
            from airflow_saga.commands._lifecycle import online_lifecycle

            outcome = online_lifecycle(api, mlflow.url, stack.url, args.model_name, home)
        step(f"done in {time.monotonic() - t0:.0f}s")
        print_urls(stack.url, mlflow.url)
        if args.keep_running:
            step("stack is running; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0 if outcome else 1
    finally:
        step("stopping ...")
        stack.stop()
        mlflow.stop()


def _port_or_free(port: int, free_port: Any) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            return free_port()


def _version_tags(mlflow_url: str, name: str, version: str) -> dict[str, str]:
    import requests

    mv = requests.get(
        f"{mlflow_url}/api/2.0/mlflow/model-versions/get",
        params={"name": name, "version": version},
        timeout=30,
    ).json()["model_version"]
    return {t["key"]: t["value"] for t in mv.get("tags", [])}


def run_training(api: Any, model_name: str, mlflow_url: str, airflow_url: str) -> bool:
    """Train -> evaluate -> gate -> register, then approve in Airflow's HITL step as a reviewer would."""
    import requests

    dag_id = "saga_training_pipeline"
    api.wait_for_dag(dag_id)
    api.unpause(dag_id)
    run_id = api.trigger(dag_id, {"model_name": model_name, "approval_mode": "airflow"})
    step(f"triggered {dag_id} run {run_id}")
    try:
        api.wait_task_state(dag_id, run_id, "approve_in_airflow", {"awaiting_input"}, timeout=900)
    except RuntimeError as exc:
        states = {t: ti["state"] for t, ti in api.task_instances(dag_id, run_id).items()}
        step(f"{dag_id} ended before approval: {states} ({exc})")
        return False
    reg = api.xcom(dag_id, run_id, "register")
    tags = _version_tags(mlflow_url, reg["name"], reg["version"])
    step(
        f"registered {reg['name']} version {reg['version']}: approval={tags.get('saga.approval.status')}, "
        f"dataset digest={tags.get('saga.lineage.dataset_digest')}, run={tags.get('saga.lineage.run_id')}, "
        f"accuracy={tags.get('saga.metric.accuracy')}"
    )
    step(
        f"waiting for approval in Airflow: {airflow_url}/dags/{dag_id}/runs/{run_id}/tasks/approve_in_airflow"
        "/required_actions  (the demo answers as admin in 3 s)"
    )
    time.sleep(3)  # answering within ~1 s of parking can fail the task in Airflow 3.3.2
    api.respond_hitl(dag_id, run_id, "approve_in_airflow", "Approve", {"comment": "approved by saga demo"})
    run = api.wait_run(dag_id, run_id, timeout=900)
    states = {t: ti["state"] for t, ti in api.task_instances(dag_id, run_id).items()}
    step(f"{dag_id}: {run['state']}  tasks: {states}")
    if run["state"] != "success":
        return False
    tags = _version_tags(mlflow_url, reg["name"], reg["version"])
    aliases = (
        requests.get(
            f"{mlflow_url}/api/2.0/mlflow/registered-models/get", params={"name": reg["name"]}, timeout=30
        )
        .json()["registered_model"]
        .get("aliases", [])
    )
    step(
        f"version {reg['version']}: approval={tags.get('saga.approval.status')} "
        f"by {tags.get('saga.approval.by')} "
        f"via {tags.get('saga.approval.via')}; aliases: "
        + (", ".join(f"@{a['alias']}=v{a['version']}" for a in aliases) or "none")
    )
    step(f"Airflow run: {airflow_url}/dags/{dag_id}/runs/{run_id}")
    step(f"MLflow version: {mlflow_url}/#/models/{reg['name']}/versions/{reg['version']}")
    step(f"lineage: MLFLOW_TRACKING_URI={mlflow_url} saga lineage {reg['name']} {reg['version']}")
    return True


def print_urls(airflow_url: str, mlflow_url: str) -> None:
    step(f"Airflow UI: {airflow_url}  (user admin / password admin)")
    step(f"MLflow UI:  {mlflow_url}")
    sys.stdout.flush()
