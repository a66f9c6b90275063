"""SQL data sources through an Airflow connection, against the PostgreSQL on this machine.

A private database per module (dropped afterwards). The connection carries a password (trust auth ignores
it), which must appear in no tag, param, dataset input, XCom value or log line.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from airflow_saga.core import tags as T
from airflow_saga.core.errors import DataError
from tests.integration.conftest import load_test_dag, run_dag, task_states, xcom

pytestmark = pytest.mark.integration

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
SECRET = f"pw-{uuid.uuid4().hex}"
QUERY = "SELECT a, b, label FROM churn WHERE a > -100 ORDER BY id"


@pytest.fixture(scope="module")
def pg_conn():
    """A private database with a small table, and Airflow connection ``saga_test_pg`` pointing at it."""
    import psycopg2

    from tests.conftest import postgres_admin

    db = f"saga_sql_{uuid.uuid4().hex[:10]}"
    admin = postgres_admin()  # a missing PostgreSQL fails the test (opt-out: SAGA_TESTS_WITHOUT_POSTGRES=1)
    admin.cursor().execute(f'CREATE DATABASE "{db}"')
    try:
        with psycopg2.connect(dbname=db, **PG) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE churn (id serial PRIMARY KEY, a float8, b float8, label int)")
            rows = [(float(i % 17) / 3, float((i * 7) % 11), int((i % 17) > 8)) for i in range(240)]
            cur.executemany("INSERT INTO churn (a, b, label) VALUES (%s, %s, %s)", rows)
        os.environ["AIRFLOW_CONN_SAGA_TEST_PG"] = json.dumps(
            {
                "conn_type": "postgres",
                "host": PG["host"],
                "port": PG["port"],
                "login": "postgres",
                "password": SECRET,
                "schema": db,
            }
        )
        yield db
    finally:
        os.environ.pop("AIRFLOW_CONN_SAGA_TEST_PG", None)
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


def test_read_sql_reads_and_names_bad_queries_and_connections(pg_conn):
    from airflow_saga.hooks.sql import read_sql

    frame = read_sql("saga_test_pg", QUERY)
    assert list(frame.columns) == ["a", "b", "label"] and len(frame) == 240
    with pytest.raises(
        DataError, match=r"SQL query on connection 'saga_test_pg' failed: .*no_such_table"
    ) as e:
        read_sql("saga_test_pg", "SELECT * FROM no_such_table")
    assert SECRET not in str(e.value)
    with pytest.raises(DataError, match="Airflow connection 'nope_conn' does not exist"):
        read_sql("nope_conn", "SELECT 1")


def test_sql_source_trains_and_records_query_never_credentials(
    pg_conn, airflow_db, mlflow_conn, mlflow_client, model_name, capfd
):
    dag = load_test_dag("saga_test_wiring.py", "saga_test_sql_source")
    source = f"sql:saga_test_pg:{QUERY}"
    dr = run_dag(dag, {"model_name": model_name, "data_source": source})
    assert dr.state == "success", task_states(dr)
    train = xcom(dr, "train")
    ds = train["dataset"]
    assert ds["kind"] == "sql" and ds["conn_id"] == "saga_test_pg" and ds["query"] == QUERY
    assert ds["source"] == source and ds["rows"] == 240
    run = mlflow_client.get_run(train["run_id"])
    assert run.data.tags[T.DATASET_SOURCE] == source and run.data.params["data_source"] == source
    mv = mlflow_client.get_model_version(model_name, xcom(dr, "register")["version"])
    assert mv.tags[T.DATASET_SOURCE] == source and mv.tags[T.DATASET_DIGEST] == ds["digest"]
    recorded = json.dumps(
        [
            dict(run.data.tags),
            dict(run.data.params),
            [d.dataset.source for d in run.inputs.dataset_inputs],
            dict(mv.tags),
            train,
            xcom(dr, "register"),
            xcom(dr, "evaluate"),
        ],
        default=str,
    )
    logs = capfd.readouterr()
    assert "saga_test_pg" in recorded and SECRET not in recorded
    assert "Trained sklearn.ensemble.RandomForestClassifier" in logs.out + logs.err  # the task log was seen
    assert SECRET not in logs.out + logs.err


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("sql:saga_test_pg:SELECT a, b, label FROM no_such_table", "no_such_table"),
        ("sql:saga_test_pg:SELEC a FROM churn", "syntax error"),
        ("sql:saga_test_missing:SELECT 1 AS a, 0 AS label", "connection 'saga_test_missing' does not exist"),
        ("sql:some_other_conn:SELECT 1 AS a, 0 AS label", "'some_other_conn' is not allowed here"),
    ],
    ids=["unknown-table", "bad-syntax", "unknown-connection", "connection-not-allowed"],
)
def test_bad_sql_sources_fail_clearly_and_register_nothing(
    pg_conn, airflow_db, mlflow_conn, mlflow_client, model_name, capfd, source, message
):
    dag = load_test_dag("saga_test_wiring.py", "saga_test_sql_source")
    dr = run_dag(dag, {"model_name": model_name, "data_source": source})
    assert dr.state == "failed"
    assert task_states(dr)["train"] == "failed"
    logs = capfd.readouterr()
    assert message in logs.out + logs.err and SECRET not in logs.out + logs.err
    assert mlflow_client.search_model_versions(f"name='{model_name}'") == []
    assert mlflow_client.get_experiment_by_name(f"saga/{model_name}") is None  # not even an experiment
