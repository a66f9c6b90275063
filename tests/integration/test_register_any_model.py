"""Register any MLflow model, trained anywhere, by URI: every URI form, its lineage, and missing URIs."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest

from airflow_saga.core import lineage_query
from airflow_saga.core import tags as T
from airflow_saga.core.errors import RegistryError
from airflow_saga.core.registration import register_candidate
from tests.integration.conftest import load_test_dag, run_dag, task_states, xcom

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def outside(mlflow_client):
    """Models logged the way a team outside Airflow would: plain MLflow, no saga training summary."""
    import mlflow.sklearn

    from airflow_saga.core.models import log_model
    from tests.support.models import breast_cancer, fit

    exp = mlflow_client.create_experiment(f"outside-{uuid.uuid4().hex[:8]}")
    X, _ = breast_cancer()
    # 1) a LoggedModel named "model" on a run (what mlflow.<flavor>.log_model makes in MLflow 3)
    run = mlflow_client.create_run(exp).info.run_id
    logged = log_model(mlflow_client, fit(), experiment_id=exp, run_id=run, input_example=X)
    mlflow_client.set_terminated(run)
    # 2) an MLflow-2-style model: MLmodel files as artifacts of another run, no LoggedModel
    old_run = mlflow_client.create_run(exp).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.sklearn.save_model(fit(seed=1), str(Path(tmp) / "m"), serialization_format="cloudpickle")
        mlflow_client.log_artifacts(old_run, str(Path(tmp) / "m"), artifact_path="clf")
    mlflow_client.set_terminated(old_run)
    # 3) a version and an alias in another registered model
    other = f"team-{uuid.uuid4().hex[:6]}"
    mlflow_client.create_registered_model(other)
    mv = mlflow_client.create_model_version(other, logged.model_uri, run_id=run, model_id=logged.model_id)
    mlflow_client.set_registered_model_alias(other, "prod", mv.version)
    return {
        "run": run,
        "model_id": logged.model_id,
        "old_run": old_run,
        "other": other,
        "other_v": mv.version,
    }


def test_every_uri_form_registers_once_with_external_lineage(mlflow_client, model_name, outside):
    mid, run = outside["model_id"], outside["run"]
    first = register_candidate(mlflow_client, model_name, model_uri=f"runs:/{run}/model")
    assert first["created"] and first["origin"] == "external" and first["model_uri"] == f"models:/{mid}"
    mv = mlflow_client.get_model_version(model_name, first["version"])
    assert mv.source == f"models:/{mid}" and mv.run_id == run
    assert mv.tags[T.ORIGIN] == "external" and mv.tags[T.SOURCE_MODEL_URI] == f"runs:/{run}/model"
    assert mv.tags[T.RUN_ID] == run and mv.tags[T.MODEL_FLAVOR] == "sklearn"
    # the same underlying model through every other form is the same version, never a second one
    for uri in (
        f"models:/{mid}",
        mid,
        f"models:/{outside['other']}/{outside['other_v']}",
        f"models:/{outside['other']}@prod",
    ):
        again = register_candidate(mlflow_client, model_name, model_uri=uri)
        assert (again["version"], again["created"]) == (first["version"], False), uri
    assert len(mlflow_client.search_model_versions(f"name='{model_name}'")) == 1

    # an MLflow-2-style run artifact model is its own model
    old = register_candidate(mlflow_client, model_name, model_uri=f"runs:/{outside['old_run']}/clf")
    assert old["created"] and old["model_uri"] == f"runs:/{outside['old_run']}/clf"
    assert old["run_id"] == outside["old_run"]

    story = lineage_query.lineage(mlflow_client, model_name, first["version"])
    assert story["origin"]["kind"] == "external" and story["origin"]["fitted_by_run"] == run
    text = lineage_query.format_lineage(story)
    assert f"external model runs:/{run}/model, from run {run}" in text


def test_registry_uri_records_the_version_it_came_from(mlflow_client, model_name, outside):
    out = register_candidate(mlflow_client, model_name, model_uri=f"models:/{outside['other']}@prod")
    mv = mlflow_client.get_model_version(model_name, out["version"])
    assert mv.tags[T.SOURCE_REGISTRY] == f"{outside['other']}/{outside['other_v']}"
    assert mv.tags[T.SOURCE_MODEL_URI] == f"models:/{outside['other']}@prod"


@pytest.mark.parametrize(
    ("make_uri", "match"),
    [
        (
            lambda o: "runs:/0123456789abcdef0123456789abcdef/model",
            "model URI 'runs:/0123456789abcdef0123456789abcdef/model' does not exist",
        ),
        (lambda o: f"runs:/{o['run']}/nope", "run [0-9a-f]+ has no model at 'nope'"),
        (lambda o: "models:/no-such-model-xyz/1", "'models:/no-such-model-xyz/1' does not exist"),
        (lambda o: f"models:/{o['other']}/99", "/99' does not exist"),
        (lambda o: f"models:/{o['other']}@nope", "@nope' does not exist"),
        (
            lambda o: "m-00000000000000000000000000000000",
            "m-00000000000000000000000000000000' does not exist",
        ),
        (
            lambda o: "models:/m-00000000000000000000000000000000",
            "m-00000000000000000000000000000000' does not exist",
        ),
        (lambda o: "s3://bucket/model", "is not a model URI"),
        (lambda o: "", "model_uri is empty"),
    ],
    ids=[
        "unknown-run",
        "no-model-at-path",
        "unknown-model",
        "unknown-version",
        "unknown-alias",
        "unknown-id",
        "unknown-models-id",
        "not-a-model-uri",
        "empty",
    ],
)
def test_a_uri_that_does_not_exist_fails_clearly_and_registers_nothing(
    mlflow_client, model_name, outside, make_uri, match
):
    with pytest.raises(RegistryError, match=match):
        register_candidate(mlflow_client, model_name, model_uri=make_uri(outside))
    assert mlflow_client.search_registered_models(f"name='{model_name}'") == []


def test_register_operator_takes_a_model_uri_in_a_default_dag(
    airflow_db, mlflow_conn, mlflow_client, model_name, outside
):
    dag = load_test_dag("saga_test_wiring.py", "saga_test_register_uri")
    dr = run_dag(dag, {"model_name": model_name, "model_uri": f"runs:/{outside['run']}/model"})
    assert dr.state == "success", task_states(dr)
    reg = xcom(dr, "register")
    assert (
        reg["created"]
        and reg["origin"] == "external"
        and str(xcom(dr, "register", "version")) == reg["version"]
    )
    mv = mlflow_client.get_model_version(model_name, reg["version"])
    assert mv.tags[T.AIRFLOW_DAG_ID] == "saga_test_register_uri" and mv.tags[T.APPROVAL_STATUS] == T.PENDING

    dag = load_test_dag("saga_test_wiring.py", "saga_test_register_uri")
    bad = run_dag(dag, {"model_name": model_name + "-x", "model_uri": f"runs:/{outside['run']}/missing"})
    assert bad.state == "failed" and task_states(bad)["register"] == "failed"
    assert mlflow_client.search_registered_models(f"name='{model_name}-x'") == []
