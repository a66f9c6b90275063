"""OpenLineage events of saga operators, emitted by Airflow's OpenLineage provider to its file transport.

Real ``dag.test()`` runs of ``saga_training_pipeline`` (auto approval) and of ``saga_drift_monitor`` over real
capture files, against the session's MLflow server. The provider decides at plugin load whether it is enabled
(it is not when no transport is configured), so the runs happen in a child process started with the
transport configured, as a deployment would set it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from airflow_saga.core import tags as T
from airflow_saga.openlineage import LineageDataset, source_dataset, to_operator_lineage
from tests.conftest import DAGS_DIR, REPO

pytestmark = pytest.mark.integration

CHILD = r"""
import json, sys, time
import numpy as np
from airflow.dag_processing.dagbag import DagBag

name, dags, capture = sys.argv[1], sys.argv[2], sys.argv[3]

def dag(dag_id):
    bag = DagBag(dag_folder=f"{dags}/{dag_id}.py")
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)

train = dag("saga_training_pipeline").test(
    run_conf={"model_name": name, "approval_mode": "auto"}, logical_date=None
)
from airflow_saga.core.baselines import resolve_baseline
from airflow_saga.hooks.mlflow import MlflowHook
from tests.support.capture_data import write_capture
hook = MlflowHook()
ref = resolve_baseline(hook.settings, hook.client, name, "1").reference  # the features as trained
rng = np.random.default_rng(0)
x = ref.to_numpy(dtype=float)[rng.integers(0, len(ref), 600)]
x[:, :20] += 2.0 * ref.to_numpy(dtype=float)[:, :20].std(axis=0)
write_capture(capture, name, x, columns=list(ref.columns), champion_version="1")
drift = dag("saga_drift_monitor").test(
    run_conf={"model_name": name, "capture_dir": capture, "window_hours": 2, "evidently_workspace": ""},
    logical_date=None,
)
runs = {"train": [train.run_id, str(train.state)], "drift": [drift.run_id, str(drift.state)]}
print("SAGA_RESULT " + json.dumps(runs))
"""


def _events(path) -> list[dict]:
    out = []
    for f in sorted(path.parent.glob(path.name + "*")):
        for line in f.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def _complete(events: list[dict], task: str) -> dict:
    done = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(f".{task}")]
    assert len(done) == 1, (task, [e["job"]["name"] for e in events])
    return done[0]


def _by_name(datasets: list[dict]) -> dict[str, dict]:
    return {d["name"]: d for d in datasets}


@pytest.fixture(scope="module")
def lineage_run(airflow_db, mlflow_server, mlflow_client, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ol")
    events = tmp / "events.jsonl"
    name = f"ol-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_server.url}),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "saga-test",
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(DAGS_DIR), str(tmp / "capture")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    marked = [line for line in proc.stdout.splitlines() if line.startswith("SAGA_RESULT ")]
    assert marked, proc.stdout[-3000:]
    runs = json.loads(marked[-1].removeprefix("SAGA_RESULT "))
    return {"name": name, "events": _events(events), "runs": runs, "mlflow": mlflow_server.url}


def test_training_pipeline_events_name_data_run_and_model_version(lineage_run, mlflow_client):
    name, ns, events = lineage_run["name"], lineage_run["mlflow"], lineage_run["events"]
    assert lineage_run["runs"]["train"][1] == "success"
    mv = mlflow_client.get_model_version(name, "1")
    digest = mv.tags[T.DATASET_DIGEST]

    train = _complete(events, "train")
    (data,) = train["inputs"]
    assert (data["namespace"], data["name"]) == ("sklearn", "breast_cancer")
    assert data["facets"]["version"]["datasetVersion"] == digest
    assert data["facets"]["saga"]["source"] == "sklearn:breast_cancer"
    (model,) = train["outputs"]
    assert model["namespace"] == ns and model["facets"]["saga"]["uri"] == mv.tags[T.MODEL_URI]

    evaluate = _by_name(_complete(events, "evaluate")["outputs"])
    assert f"runs/{mv.run_id}/evaluation/report.json" in evaluate

    register = _complete(events, "register")
    version = _by_name(register["outputs"])[f"models/{name}/versions/1"]
    assert version["namespace"] == ns and version["facets"]["datasetType"]["datasetType"] == "MODEL_VERSION"
    assert version["facets"]["saga"]["run_id"] == mv.run_id
    reg_inputs = _by_name(register["inputs"])
    assert reg_inputs["breast_cancer"]["facets"]["version"]["datasetVersion"] == digest
    assert f"runs/{mv.run_id}/gate/decision.json" in reg_inputs

    gate = _complete(events, "quality_gate")
    assert _by_name(gate["outputs"]).keys() == {f"runs/{mv.run_id}/gate/decision.json"}

    promote = _complete(events, "promote")
    (deployed,) = promote["outputs"]
    assert deployed["name"] == f"models/{name}@champion" and deployed["namespace"] == ns
    assert deployed["facets"]["version"]["datasetVersion"] == "1"
    assert [i["name"] for i in promote["inputs"]] == [f"models/{name}/versions/1"]
    # every task's events hang under the DAG run (the parent facet), so backends join them into one graph
    parents = {e["run"]["facets"]["parent"]["run"]["runId"] for e in events if "parent" in e["run"]["facets"]}
    assert len(parents) >= 2


def test_drift_monitor_events_name_the_capture_window_and_version(lineage_run, mlflow_client):
    name, events = lineage_run["name"], lineage_run["events"]
    detect = _complete(events, "detect_drift")
    inputs = _by_name(detect["inputs"])
    capture = next(d for d in detect["inputs"] if d["namespace"] == "file")
    assert capture["name"].endswith(f"/capture/{name}")
    assert inputs[f"models/{name}/versions/1"]["facets"]["saga"]["alias"] == "champion"
    (result,) = detect["outputs"]
    run_id = mlflow_client.get_model_version(name, "1").tags[T.DRIFT_RUN_ID]
    assert result["name"] == f"runs/{run_id}/drift/result.json"
    assert result["facets"]["saga"]["decision"] == "drift"


def test_naming_of_data_sources():
    local = source_dataset("/data/x.csv")
    assert (local.namespace, local.name) == ("file", "/data/x.csv")
    s3 = source_dataset("s3://bucket/dir/x.parquet", digest="abc")
    assert (s3.namespace, s3.name, s3.version) == ("s3://bucket", "dir/x.parquet", "abc")
    assert source_dataset("file:///tmp/y.csv").name == "/tmp/y.csv"
    bundled = source_dataset("sklearn:iris")
    assert (bundled.namespace, bundled.name) == ("sklearn", "iris")
    with pytest.raises(ValueError, match="unknown saga lineage facet field"):
        to_operator_lineage([LineageDataset("n", "x", saga={"nope": 1})], [])
