"""SIGTERM to a real Airflow task that is training leaves no RUNNING MLflow run.

Airflow's task runner answers SIGTERM (task timeout, "mark failed", a worker shutdown) by calling the
operator's ``on_kill``; the supervisor SIGKILLs the process after its grace period. The DAG runs under
``dag.test()`` in a child process (the same task runner and signal handler as a worker's task process);
the test sends that process SIGTERM while the model is being uploaded into the open training run, then
SIGKILLs it as the supervisor would, and reads the run from the real MLflow server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import TEST_DAGS_DIR

pytestmark = pytest.mark.integration

CHILD = """
import sys
from tests.integration.conftest import load_test_dag, run_dag
dag = load_test_dag("saga_test_sigterm.py", "saga_test_sigterm")
run_dag(dag, {"model_name": sys.argv[1]})
"""


def _wait(predicate, timeout: float, what: str, child: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if child.poll() is not None:
            out, err = child.communicate()
            pytest.fail(f"the DAG process exited ({child.returncode}) before {what}:\n{(out + err)[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_sigterm_inside_a_training_task_ends_its_run_killed(
    airflow_db, mlflow_conn, mlflow_client, model_name, tmp_path
):
    from airflow_saga.core.training import get_or_create_experiment

    assert (TEST_DAGS_DIR / "saga_test_sigterm.py").exists()
    marker = tmp_path / "training-started"
    env = {**os.environ, "SAGA_TEST_TRAINING_MARKER": str(marker), "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, model_name],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        _wait(marker.exists, 300, "the model upload started (run open)", child)
        exp = get_or_create_experiment(mlflow_client, f"saga/{model_name}")
        running = mlflow_client.search_runs([exp], "attributes.status = 'RUNNING'")
        assert len(running) == 1, [r.info for r in running]
        run = running[0]
        assert run.data.tags.get("saga.airflow.dag_id") == "saga_test_sigterm"
        child.send_signal(signal.SIGTERM)
        status = _wait(
            lambda: (s := mlflow_client.get_run(run.info.run_id).info.status) != "RUNNING" and s,
            60,
            "the run to end after SIGTERM",
            child,
        )
    finally:
        if child.poll() is None:  # the supervisor's SIGKILL after its grace period
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    assert status == "KILLED"
    assert mlflow_client.search_runs([exp], "attributes.status = 'RUNNING'") == []
