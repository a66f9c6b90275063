"""The online half of ``saga demo``: gateway traffic, shadow comparison, drift -> retraining, rollback.

Each step goes through the same public surfaces a user has: Airflow's REST API, the gateway's HTTP API and
MLflow's REST API.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

TRAINING = "saga_training_pipeline"
SHADOW = "saga_shadow_comparison"
DRIFT = "saga_drift_monitor"
ROLLBACK = "saga_rollback"
SHADOW_CONDITIONS = "error_rate <= 0.01 and agreement >= 0.9 and latency_p99_ms <= 2000"


def _step(msg: str) -> None:
    print(f"[saga demo] {msg}", flush=True)


def aliases(mlflow_url: str, name: str) -> dict[str, str]:
    import requests

    body = requests.get(
        f"{mlflow_url}/api/2.0/mlflow/registered-models/get", params={"name": name}, timeout=30
    ).json()
    return {a["alias"]: a["version"] for a in body["registered_model"].get("aliases", [])}


def send_traffic(
    gateway_url: str, n: int, *, scale: float = 1.0, offset: int = 0, feedback: bool = True
) -> list[str]:
    """Score ``n`` rows of the breast-cancer data (features multiplied by ``scale`` to inject drift) and
    send their ground truth to /feedback; returns the inference ids."""
    import requests
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    X = data.frame.drop(columns=["target"])
    X.columns = [c.replace(" ", "_") for c in X.columns]
    y = data.frame["target"]
    ids = []
    with requests.Session() as s:
        for i in range(offset, offset + n):
            row = (X.iloc[i % len(X)] * scale).tolist()
            r = s.post(
                f"{gateway_url}/invocations",
                json={"dataframe_split": {"columns": list(X.columns), "data": [row]}},
                timeout=30,
            )
            r.raise_for_status()
            iid = r.headers["x-saga-inference-id"]
            ids.append(iid)
            if feedback:
                s.post(
                    f"{gateway_url}/feedback",
                    json={"inference_id": iid, "ground_truth": int(y.iloc[i % len(y)])},
                    timeout=30,
                ).raise_for_status()
    return ids


def wait_captured(gw: Any, rows: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (gw.health().get("capture") or {}).get("rows_written", 0) >= rows:
            return
        time.sleep(1)


def run_dag(api: Any, dag_id: str, conf: dict, timeout: float = 900) -> tuple[dict, dict]:
    api.wait_for_dag(dag_id)
    api.unpause(dag_id)
    run_id = api.trigger(dag_id, conf)
    run = api.wait_run(dag_id, run_id, timeout=timeout)
    states = {t: ti["state"] for t, ti in api.task_instances(dag_id, run_id).items()}
    return run, states


def train_and_approve(api: Any, name: str, conf: dict, approver: str = "approved by saga demo") -> dict:
    api.wait_for_dag(TRAINING)
    api.unpause(TRAINING)
    run_id = api.trigger(TRAINING, {"model_name": name, "approval_mode": "airflow", **conf})
    api.wait_task_state(TRAINING, run_id, "approve_in_airflow", {"awaiting_input"}, timeout=900)
    time.sleep(3)  # answering within ~1 s of parking can fail the task in Airflow 3.3.2
    api.respond_hitl(TRAINING, run_id, "approve_in_airflow", "Approve", {"comment": approver})
    run = api.wait_run(TRAINING, run_id, timeout=900)
    reg = api.xcom(TRAINING, run_id, "register")
    return {"run_id": run_id, "state": run["state"], "version": reg["version"] if reg else None}


def trace_prediction(mlflow_url: str, name: str, capture_dir: Any, inference_id: str) -> str:
    """Follow one served prediction back: capture record -> model version -> training run -> data."""
    from airflow_saga.core.capture_scan import read_capture
    from airflow_saga.core.lineage_query import lineage
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client

    rows = read_capture(capture_dir, name, columns=["inference_id", "model_version", "variant", "prediction"])
    row = rows[rows["inference_id"] == inference_id].iloc[0]
    chain = lineage(build_client(MlflowSettings(mlflow_url)), name, str(row["model_version"]))
    run = chain.get("run") or {}
    data = chain.get("dataset") or {}
    return (
        f"prediction {inference_id} = {row['prediction']} was served by {row['variant']} "
        f"v{row['model_version']} <- training run {run.get('id')} <- dataset {data.get('digest')} "
        f"({data.get('source')}) <- Airflow run {(chain.get('airflow') or {}).get('run_id')}"
    )


def time_travel(mlflow_url: str, name: str) -> str:
    """``saga lineage --at`` one millisecond before the rollback: which version held each alias then."""
    from airflow_saga.core import alias_history as H
    from airflow_saga.core import lineage_query as lq
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client

    try:
        client = build_client(MlflowSettings(mlflow_url))
        rollback = next(e for e in reversed(H.history(client, name)) if e["action"] == "rollback")
        moment = H.iso_ms(H.parse_time_ms(rollback["at"]) - 1)
        answer = lq.format_aliases_at(lq.aliases_at(client, name, moment))
    except Exception as exc:  # the demo goes on; the time-travel tests cover the query itself
        return f"time travel: could not answer: {exc}"
    return (
        f"time travel, just before the rollback: MLFLOW_TRACKING_URI={mlflow_url} saga lineage {name} "
        f"--at {moment}\n{answer}"
    )


def online_lifecycle(api: Any, mlflow_url: str, airflow_url: str, name: str, home: Any) -> bool:
    """Steps 3-8 of the demo; returns True when every step had the expected outcome."""
    import requests

    from airflow_saga.devstack.gateway import GatewayProcess

    ok = True
    second = train_and_approve(api, name, {"hyperparameters": {"max_iter": 5000, "C": 0.5}})
    _step(
        f"second candidate: run {second['state']}, version {second['version']}; "
        f"aliases {aliases(mlflow_url, name)}"
    )
    gw = GatewayProcess(home / "gateway", name, mlflow_url).start()
    try:
        _step(f"gateway {gw.url} serves @champion and mirrors every request to @challenger (shadow)")
        ids = send_traffic(gw.url, 200)
        wait_captured(gw, 200)
        r = requests.post(
            f"{gw.url}/invocations", json={"dataframe_split": {"columns": ["x"], "data": [[1]]}}, timeout=30
        )
        _step(
            f"sent 200 requests + labels; capture in {gw.capture_dir}; a malformed request gets HTTP "
            f"{r.status_code}: {r.json().get('message', r.text)[:90]}"
        )

        run, states = run_dag(
            api,
            SHADOW,
            {
                "model_name": name,
                "capture_dir": str(gw.capture_dir),
                "window_hours": 1,
                "min_requests": 50,
                "on_pass": "promote",
                "on_fail": "keep",
                "conditions": SHADOW_CONDITIONS,
            },
        )
        now = aliases(mlflow_url, name)
        _step(f"{SHADOW}: {run['state']} -> aliases {now}")
        ok &= run["state"] == "success"
        time.sleep(4)  # the gateway polls aliases every 2 s
        served = requests.post(f"{gw.url}/invocations", json={"instances": [[0.0] * 30]}, timeout=30)
        _step(
            f"gateway now serves version {served.headers.get('x-saga-model-version')} "
            f"(variant {served.headers.get('x-saga-variant')})"
        )

        start = dt.datetime.now(dt.UTC).isoformat()
        send_traffic(gw.url, 150, scale=5.0, offset=200, feedback=False)
        wait_captured(gw, 350 + 1)
        before = {
            r["dag_run_id"]
            for r in api._req("GET", f"/dags/{TRAINING}/dagRuns", params={"limit": 100})["dag_runs"]
        }
        run, states = run_dag(
            api,
            DRIFT,
            {
                "model_name": name,
                "capture_dir": str(gw.capture_dir),
                "start": start,
                "thresholds": {"drift_share": 0.5, "min_rows": 50},
            },
        )
        _step(f"{DRIFT} on traffic with injected shift: {run['state']} ({states})")
        retrain = None
        deadline = time.monotonic() + 180
        while retrain is None and time.monotonic() < deadline:
            runs = api._req("GET", f"/dags/{TRAINING}/dagRuns", params={"limit": 100})["dag_runs"]
            retrain = next((r for r in runs if r["dag_run_id"] not in before), None)
            time.sleep(2)
        ok &= retrain is not None
        _step(
            "drift alert raised; retraining started: "
            + (
                f"{retrain['dag_run_id']} ({retrain['run_type']}), awaiting approval in Airflow"
                if retrain
                else "NO"
            )
        )

        run, states = run_dag(
            api, ROLLBACK, {"model_name": name, "reason": "saga demo: roll back the promotion"}
        )
        now = aliases(mlflow_url, name)
        _step(f"{ROLLBACK}: {run['state']} -> aliases {now}")
        ok &= run["state"] == "success"
        time.sleep(4)
        served = requests.post(f"{gw.url}/invocations", json={"instances": [[0.0] * 30]}, timeout=30)
        _step(f"gateway serves version {served.headers.get('x-saga-model-version')} again, without a restart")
        _step(trace_prediction(mlflow_url, name, gw.capture_dir, ids[0]))
        _step(time_travel(mlflow_url, name))
    finally:
        gw.stop()
    return bool(ok)
