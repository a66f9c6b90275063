"""Default-settings DAGs, ``@task.saga_train`` and every model flavour, under dag.test() on a real MLflow.

The DAGs live in ``tests/integration/dags/`` and use Airflow's default template rendering, so a template
like ``"{{ ti.xcom_pull(task_ids='train') }}"`` arrives as the ``str()`` of a dict, next to XComArgs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from airflow_saga.core import tags as T
from tests.integration.conftest import load_test_dag, run_dag, task_states, xcom

pytestmark = pytest.mark.integration


def _versions(client, name):
    return client.search_model_versions(f"name='{name}'")


def _requirements(settings, model_uri, tmp_path) -> list[str]:
    from pathlib import Path

    from airflow_saga.core.models import download_model

    local = download_model(settings, model_uri, tmp_path / uuid.uuid4().hex)
    return (Path(local) / "requirements.txt").read_text().split()


LOAD_ELSEWHERE = """
import json, sys
import mlflow.pyfunc, pandas as pd
rows = pd.read_json(sys.argv[2], orient="split")
out = {}
for name, path in json.loads(sys.argv[1]).items():
    out[name] = [float(v) for v in mlflow.pyfunc.load_model(path).predict(rows)]
print(json.dumps(out))
"""


def _predict_in_fresh_process(paths: dict[str, str], rows, cwd) -> dict[str, list[float]]:
    """Load models where neither the DAG file nor the tests package can be imported (like the gateway)."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", LOAD_ELSEWHERE, json.dumps(paths), rows.to_json(orient="split")],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_provider_registers_the_task_decorator():
    from airflow.sdk import task

    from airflow_saga.decorators.saga_train import saga_train_task
    from airflow_saga.get_provider_info import get_provider_info

    assert {"name": "saga_train", "class-name": "airflow_saga.decorators.saga_train.saga_train_task"} in (
        get_provider_info()["task-decorators"]
    )
    assert task.saga_train is saga_train_task


def test_default_settings_dag_with_xcomargs_and_string_templates(
    airflow_db, mlflow_conn, mlflow_client, model_name
):
    dag = load_test_dag("saga_test_wiring.py", "saga_test_default_wiring")
    assert not dag.render_template_as_native_obj
    dr = run_dag(dag, {"model_name": model_name, "hyperparameters": {"max_iter": 2500, "C": 0.5}})
    assert dr.state == "success", task_states(dr)
    train = xcom(dr, "train")
    run = mlflow_client.get_run(train["run_id"])
    # the non-native render "{'max_iter': 2500, 'C': 0.5}" arrived as a dict: real params, not a string
    assert run.data.params["hp.max_iter"] == "2500" and run.data.params["hp.C"] == "0.5"
    assert run.data.params["test_size"] == "0.3"
    reg = xcom(dr, "register")
    assert reg["created"] is True and reg["reused"] is False and reg["origin"] == "trained"
    mv = mlflow_client.get_model_version(model_name, reg["version"])
    assert mv.tags[T.RUN_ID] == train["run_id"] and mv.tags[T.GATE_DECISION] == "passed"
    assert float(mv.tags["saga.metric.accuracy"]) >= 0.8  # the report came through the template form


def test_decorated_training_function_logs_what_train_model_operator_logs(
    airflow_db, mlflow_conn, mlflow_client, mlflow_settings, model_name, tmp_path
):
    dag = load_test_dag("saga_test_wiring.py", "saga_test_train_function")
    dr = run_dag(dag, {"model_name": model_name, "hyperparameters": {"max_iter": 2000}})
    assert dr.state == "success", task_states(dr)
    summary = xcom(dr, "fit")
    for key in [
        "run_id",
        "experiment_id",
        "model_uri",
        "model_name",
        "task",
        "target",
        "features",
        "estimator",
        "dataset",
        "holdout_uri",
        "reference_uri",
        "reference_stats_uri",
        "cache_key",
        "cache_hit",
        "cache_source_run_id",
        "fit_seconds",
    ]:
        assert key in summary, key
    assert summary["flavor"] == "sklearn" and summary["origin"] == "trained"
    assert summary["task"] == "classification" and summary["estimator"] == "sklearn.pipeline.Pipeline"
    assert summary["training_function"] == "saga_test_wiring:fit"
    run = mlflow_client.get_run(summary["run_id"])
    assert run.data.params["hp.max_iter"] == "2000" and run.data.params["arg.scale"] == "2.0"
    assert run.data.params["training_function"] == "saga_test_wiring:fit"
    assert run.data.tags[T.AIRFLOW_DAG_ID] == "saga_test_train_function"
    assert run.data.tags[T.AIRFLOW_TASK_ID] == "fit" and run.data.tags[T.DAG_FILE_HASH]
    assert run.data.tags[T.FUNCTION_HASH] and run.data.tags[T.MODEL_FLAVOR] == "sklearn"
    contexts = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset.digest
        for d in run.inputs.dataset_inputs
    }
    assert contexts == {"training": summary["dataset"]["digest"], "evaluation": summary["dataset"]["digest"]}
    lm = mlflow_client.get_logged_model(summary["model_uri"].removeprefix("models:/"))
    files = {f.path for f in mlflow_client.list_logged_model_artifacts(lm.model_id)}
    assert {"MLmodel", "input_example.json", "requirements.txt"} <= files
    reqs = _requirements(mlflow_settings, summary["model_uri"], tmp_path)
    assert all("==" in r for r in reqs) and any(r.startswith("scikit-learn==") for r in reqs)
    reg = xcom(dr, "register")
    assert (
        reg["created"]
        and mlflow_client.get_model_version(model_name, reg["version"]).tags[T.TRAINING_FUNCTION]
        == "saga_test_wiring:fit"
    )

    # The Pipeline uses a helper defined in the DAG file: it must load where that file cannot be imported.
    from airflow_saga.core.models import download_model
    from tests.support.models import breast_cancer

    rows = breast_cancer()[0].head(7)
    rows.columns = [c.replace(" ", "_") for c in rows.columns]
    local = download_model(mlflow_settings, summary["model_uri"], tmp_path / "m")
    import mlflow.pyfunc

    here = [float(v) for v in mlflow.pyfunc.load_model(local).predict(rows)]
    assert _predict_in_fresh_process({"fit": local}, rows, tmp_path)["fit"] == here


def test_every_flavour_from_a_dag_file_logs_and_loads_without_it(
    airflow_db, mlflow_conn, mlflow_client, mlflow_settings, tmp_path
):
    """XGBoost and LightGBM (sklearn API and native Boosters) and a PythonModel defined in the DAG file."""
    import mlflow.pyfunc

    from airflow_saga.core.models import download_model
    from tests.support.models import breast_cancer

    prefix = f"fw-{uuid.uuid4().hex[:6]}"
    dag = load_test_dag("saga_test_frameworks.py", "saga_test_frameworks")
    dr = run_dag(dag, {"prefix": prefix})
    assert dr.state == "success", task_states(dr)
    expected = {
        "xgb_sklearn": ("sklearn", "xgboost-cpu=="),
        "lgbm_sklearn": ("sklearn", "lightgbm=="),
        "xgb_booster": ("xgboost", "xgboost-cpu=="),
        "lgb_booster": ("lightgbm", "lightgbm=="),
        "rules": ("pyfunc", "mlflow=="),
    }
    rows = breast_cancer()[0].head(9)
    rows.columns = [c.replace(" ", "_") for c in rows.columns]
    paths, here = {}, {}
    for task_id, (flavor, pin) in expected.items():
        summary = xcom(dr, task_id)
        assert summary["flavor"] == flavor, (task_id, summary["flavor"])
        assert summary["task"] == "classification", task_id
        reqs = _requirements(mlflow_settings, summary["model_uri"], tmp_path)
        assert any(r.startswith(pin) for r in reqs), (task_id, reqs)
        assert all("==" in r for r in reqs), reqs
        if task_id == "rules":
            assert not any(r.startswith("scikit-learn") for r in reqs), reqs
        paths[task_id] = download_model(mlflow_settings, summary["model_uri"], tmp_path / task_id)
        here[task_id] = [float(v) for v in mlflow.pyfunc.load_model(paths[task_id]).predict(rows)]
        run = mlflow_client.get_run(summary["run_id"])
        assert run.data.tags[T.MODEL_FLAVOR] == flavor and run.data.tags[T.ORIGIN] == "trained"
    assert _predict_in_fresh_process(paths, rows, tmp_path) == here
