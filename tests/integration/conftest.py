"""Integration fixtures: Airflow's metadata DB (SQLite, per session) and the mlflow_default connection."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def airflow_db():
    from airflow.utils import db

    db.initdb()
    return True


@pytest.fixture(scope="session")
def mlflow_conn(mlflow_server):
    """Point Airflow's ``mlflow_default`` connection at the session's real MLflow server."""
    os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"] = json.dumps({"conn_type": "mlflow", "host": mlflow_server.url})
    yield mlflow_server
    os.environ.pop("AIRFLOW_CONN_MLFLOW_DEFAULT", None)


@pytest.fixture
def training_dag(airflow_db, mlflow_conn):
    """A freshly parsed DAG per test: ``dag.test(run_conf=...)`` writes the conf into the DAG's params."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import DAGS_DIR

    bag = DagBag(dag_folder=str(DAGS_DIR / "saga_training_pipeline.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("saga_training_pipeline")


# dag.test() has no scheduler to time out a human-in-the-loop task, so tests that are not about approval
# run in approval_mode=auto, or mark the approval path as done with this pattern.
SKIP_APPROVAL = (
    r"^(approve_in_airflow|record_airflow_approval|wait_for_mlflow_approval|auto_approved|promote)$"
)


def run_dag(dag, conf: dict, **kwargs):
    """Run ``dag`` in-process like a UI/REST trigger: no logical date, so ``{{ ds }}`` would fail."""
    conf = {"approval_mode": "auto", **conf}
    dr = dag.test(run_conf=conf, logical_date=None, **kwargs)
    return dr


def task_states(dag_run) -> dict[str, str]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as s:
        rows = s.execute(
            select(TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
    return {t: str(st.value if hasattr(st, "value") else st) for t, st in rows}


def xcom(dag_run, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel as XCom
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as s:
        row = s.execute(
            select(XCom.value).where(
                XCom.dag_id == dag_run.dag_id,
                XCom.run_id == dag_run.run_id,
                XCom.task_id == task_id,
                XCom.key == key,
            )
        ).first()
    if row is None:
        return None
    value = row[0]
    return json.loads(value) if isinstance(value, str) else value


TEST_DAGS_DIR = Path(__file__).parent / "dags"


def load_test_dag(file_name: str, dag_id: str):
    """A DAG from ``tests/integration/dags/<file_name>``, parsed fresh and written to the metadata DB.

    ``dag.test()`` only finds DAGs it can serialise from a configured bundle; test DAGs live outside the
    shipped ``dags/`` folder, so they are synced under the ``dags-folder`` bundle first (needs airflow_db).
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(TEST_DAGS_DIR / file_name))
    assert not bag.import_errors, bag.import_errors
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.get_dag(dag_id)
