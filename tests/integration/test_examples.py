"""The README's three pipelines (dags/examples/) run as written: real MLflow server, Airflow dag.test().

The only change to a run is ``approval_mode=auto`` where the DAG has that Param (dag.test() has no person
to approve) and, for the hand-wired DAG, marking its human-in-the-loop path done the same way the
shipped pipeline's tests do. The notebook script runs as a subprocess with MLFLOW_TRACKING_URI set, as the
README says.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from airflow_saga.core import lineage_query
from airflow_saga.core import tags as T
from tests.conftest import DAGS_DIR, REPO
from tests.integration.conftest import SKIP_APPROVAL, task_states, xcom

pytestmark = pytest.mark.integration

EXAMPLES = DAGS_DIR / "examples"
HEAVY = ("mlflow", "sklearn", "pandas", "evidently")
MODELS = {
    "churn_csv_pipeline": "churn-csv",
    "churn_function_pipeline": "churn-function",
    "churn_external_pipeline": "churn-external",
}


def _example(dag_id: str):
    """Parse the examples folder like the dag-processor does (.airflowignore applies) and sync it."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(EXAMPLES))
    assert not bag.import_errors, bag.import_errors
    assert set(bag.dag_ids) == set(MODELS), bag.dag_ids  # the notebook script is not parsed
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.get_dag(dag_id)


def test_examples_parse_light_and_each_listens_for_its_own_models_drift(airflow_db):
    code = (
        "import sys, json, runpy\n"
        + "".join(f"runpy.run_path({str(EXAMPLES / f'{d}.py')!r})\n" for d in MODELS)
        + f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout
    for dag_id, model in MODELS.items():
        dag = _example(dag_id)
        assert dag.timetable.asset_condition.uri == f"saga://drift/{model}", dag_id


def test_a_drift_event_queues_only_that_models_pipeline(airflow_db, mlflow_conn):
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from tests.integration.conftest import load_test_dag

    _example("churn_csv_pipeline")  # syncs all three examples (and their assets) to the metadata DB
    with create_session() as s:
        for dag_id in MODELS:
            s.get(DagModel, dag_id).is_paused = False  # the scheduler only queues runs of unpaused DAGs
    emitter = load_test_dag("saga_test_guide.py", "saga_test_guide_drift_event")
    dr = emitter.test(run_conf={"model_name": "churn-function"}, logical_date=None)
    assert task_states(dr) == {"emit_drift_event": "success"}
    with create_session() as s:
        queued = set(s.scalars(select(AssetDagRunQueue.target_dag_id)).all())
    assert "churn_function_pipeline" in queued
    assert not {"churn_csv_pipeline", "churn_external_pipeline"} & queued, queued


def test_csv_example_trains_registers_and_promotes_champion(airflow_db, mlflow_conn, mlflow_client):
    dr = _example("churn_csv_pipeline").test(run_conf={"approval_mode": "auto"}, logical_date=None)
    states = task_states(dr)
    assert states["promote"] == "success", states
    reg = xcom(dr, "register")
    mv = mlflow_client.get_model_version("churn-csv", reg["version"])
    assert mv.tags[T.APPROVAL_STATUS] == "Approved"
    assert mv.tags[T.DATASET_SOURCE].endswith("dags/examples/data/churn.csv")
    assert mlflow_client.get_model_version_by_alias("churn-csv", T.CHAMPION).version == mv.version
    report = xcom(dr, "evaluate")
    assert report["candidate"]["metrics"]["accuracy"] >= 0.7


def test_function_example_logs_the_users_pipeline_and_waits_for_approval(
    airflow_db, mlflow_conn, mlflow_client, mlflow_settings, tmp_path
):
    dr = _example("churn_function_pipeline").test(logical_date=None, mark_success_pattern=SKIP_APPROVAL)
    states = task_states(dr)
    assert states["fit"] == states["register"] == "success", states
    training = xcom(dr, "fit")
    assert training["training_function"] == "churn_function_pipeline:fit"
    assert training["flavor"] == "sklearn"
    mv = mlflow_client.get_model_version("churn-function", xcom(dr, "register")["version"])
    assert mv.tags[T.APPROVAL_STATUS] == "PendingManualApproval"  # a person approves in Airflow
    # the DAG-file helper is pickled into the model: it loads and predicts with no DAG file importable
    import mlflow.pyfunc
    import pandas as pd

    from airflow_saga.core.models import download_model

    model = mlflow.pyfunc.load_model(download_model(mlflow_settings, mv.source, tmp_path / "model"))
    rows = pd.read_csv(EXAMPLES / "data" / "churn_holdout.csv").drop(columns=["churned"]).head(3)
    assert len(model.predict(rows)) == 3


def test_external_example_governs_a_model_logged_by_the_notebook_script(
    airflow_db, mlflow_conn, mlflow_client
):
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_conn.url}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "train_elsewhere.py")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    source_version = mlflow_client.get_model_version_by_alias("churn-notebook", "candidate")
    dr = _example("churn_external_pipeline").test(run_conf={"approval_mode": "auto"}, logical_date=None)
    states = task_states(dr)
    assert states["promote"] == "success", states
    mv = mlflow_client.get_model_version("churn-external", xcom(dr, "register")["version"])
    assert mv.tags[T.ORIGIN] == "external"
    assert mv.tags[T.SOURCE_MODEL_URI] == "models:/churn-notebook@candidate"
    assert mv.tags[T.SOURCE_REGISTRY].endswith(source_version.version)
    assert mv.run_id == source_version.run_id
    story = lineage_query.lineage(mlflow_client, "churn-external", mv.version)
    assert story is not None
    assert xcom(dr, "evaluate")["dataset"]["holdout_uri"].endswith("churn_holdout.csv")


@pytest.fixture
def string_column_csv(tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    path = tmp_path / "with_plan.csv"
    pd.DataFrame(
        {
            "tenure": rng.integers(1, 70, 80),
            "plan": rng.choice(["basic", "pro"], 80),
            "target": rng.integers(0, 2, 80),
        }
    ).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("dag_id", "conf", "failed_task", "message"),
    [
        (
            "saga_test_guide_trained",
            {"data_source": "STRING_CSV"},
            "train",
            "these feature columns are not numeric: 'plan' (object, e.g. '",
        ),
        (
            "saga_test_guide_trained",
            {"conditions": "f1_marco >= 0.5"},
            "quality_gate",
            "(did you mean 'f1_macro'?)",
        ),
        (
            "saga_test_guide_trained",
            {"data_source": "tests.support.data_sources:not_a_frame"},
            "train",
            "not a pandas DataFrame",
        ),
        (
            "saga_test_guide_trained",
            {"data_source": "tests.support.data_sources:nothing"},
            "train",
            "returned None",
        ),
        (
            "saga_test_guide_external",
            {},
            "evaluate",
            "model URI 'runs:/0123456789abcdef0123456789abcdef/model' does not exist",
        ),
    ],
    ids=["string-column", "unknown-metric", "callable-not-a-frame", "callable-none", "missing-model-uri"],
)
def test_a_new_users_mistakes_fail_naming_the_value_and_register_nothing(
    airflow_db,
    mlflow_conn,
    mlflow_client,
    model_name,
    string_column_csv,
    capfd,
    dag_id,
    conf,
    failed_task,
    message,
):
    from tests.integration.conftest import load_test_dag, run_dag

    conf = {k: str(string_column_csv) if v == "STRING_CSV" else v for k, v in conf.items()}
    dag = load_test_dag("saga_test_guide.py", dag_id)
    dr = run_dag(dag, {"model_name": model_name, **conf})
    assert dr.state == "failed"
    states = task_states(dr)
    assert states[failed_task] == "failed", states
    assert states["register"] in ("upstream_failed", "skipped"), states
    logs = capfd.readouterr()
    assert message in logs.out + logs.err
    assert mlflow_client.search_model_versions(f"name='{model_name}'") == []
