"""Evaluate and gate any MLflow model, on any held-out data, overall and per slice (real MLflow server).

Models are logged the way a notebook elsewhere would log them (a run, a LoggedModel, a registered version),
in several flavours: scikit-learn, a native XGBoost booster, a rule-based PythonModel. Held-out data comes
from a CSV file, a callable and PostgreSQL through an Airflow connection. Operator paths run under
``dag.test()`` in DAGs with default settings (no ``render_template_as_native_obj``).
"""

from __future__ import annotations

import json
import uuid

import pytest

from airflow_saga.core import conditions as C
from airflow_saga.core import tags as T
from airflow_saga.core.errors import ConditionError, DataError, MetricError, RegistryError
from airflow_saga.core.evaluation import evaluate
from tests.integration.conftest import task_states, xcom
from tests.support import eval_models as E

pytestmark = pytest.mark.integration

USER_PREFIX = ("tests.support.user_metrics",)


@pytest.fixture(scope="module")
def holdout_csv(tmp_path_factory):
    _, holdout = E.site_data()
    path = tmp_path_factory.mktemp("holdout") / "holdout.csv"
    holdout.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def logged(mlflow_client):
    """The candidate and champion of tests.support.eval_models, logged once as LoggedModels of runs."""
    train, _ = E.site_data()
    champ, cand = E.site_models()
    return {
        "candidate": E.log_sklearn(mlflow_client, cand, train[E.features(True)]),
        "champion": E.log_sklearn(mlflow_client, champ, train[E.features(False)]),
    }


def _runs(client, model_name):
    exp = client.get_experiment_by_name(f"saga/{model_name}")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _eval(settings, client, model_name, uri, holdout, **kw):
    return evaluate(
        settings, client, model_name=model_name, candidate_uri=uri, target="target", holdout=holdout, **kw
    )


def test_every_kind_of_model_uri_is_evaluated_with_its_lineage(
    mlflow_settings, mlflow_client, model_name, holdout_csv, logged
):
    cand = logged["candidate"]
    version = E.register(mlflow_client, f"{model_name}-elsewhere", cand, aliases=("staging",))
    uris = [
        cand["model_uri"],  # models:/m-...
        cand["model_id"],  # a bare logged-model id
        f"runs:/{cand['run_id']}/model",  # MLflow 3: resolved to the run's logged model
        f"models:/{model_name}-elsewhere/{version}",
        f"models:/{model_name}-elsewhere@staging",
    ]
    reports = [_eval(mlflow_settings, mlflow_client, model_name, uri, holdout_csv) for uri in uris]
    f1s = {r["candidate"]["metrics"]["f1"] for r in reports}
    assert len(f1s) == 1, "the same model, whatever its URI, scores the same"
    for uri, rep in zip(uris, reports, strict=True):
        c = rep["candidate"]
        assert c["model_uri"] == (uri if not uri.startswith("m-") else f"models:/{uri}")
        assert c["source_run_id"] == cand["run_id"] and c["model_id"] == cand["model_id"]
        assert c["origin"] == "external" and c["loaded_as"] == "sklearn" and "sklearn" in c["flavors"]
        assert {"roc_auc", "log_loss", "f1_macro", "balanced_accuracy"} <= set(c["metrics"])
        assert rep["champion"] is None and rep["task"] == "classification" and rep["task_source"] == "model"
        assert rep["dataset"]["holdout_rows"] == 285 and len(rep["dataset"]["holdout_digest"]) == 16
        # a run of its own records where the model came from, and holds the report
        run = mlflow_client.get_run(c["run_id"])
        assert run.info.status == "FINISHED" and run.data.tags[T.RUN_KIND] == "evaluate"
        assert run.data.tags[T.EVAL_CANDIDATE_URI] == c["model_uri"]
        assert run.data.tags[T.EVAL_CANDIDATE_SOURCE_RUN] == cand["run_id"]
        assert run.data.tags[T.EVAL_REPORT_URI] == rep["report_uri"]
        assert run.data.metrics["eval.f1"] == c["metrics"]["f1"]
    registered = reports[3]["candidate"]["registered_model"]
    assert registered == {"name": f"{model_name}-elsewhere", "version": version}


def test_native_booster_and_python_model_and_a_champion_of_another_flavour(
    mlflow_settings, mlflow_client, model_name, holdout_csv, logged
):
    train, _ = E.site_data()
    booster = E.log_dir(
        mlflow_client, E.save_xgboost_booster(train[E.features(False)], train["target"], E.tmpdir())
    )
    rules = E.log_dir(
        mlflow_client,
        E.save_pyfunc(E.RuleScorer(), train[E.features(False)], E.tmpdir()),
        as_run_artifact=True,
    )
    # the champion is the rule-based PythonModel; candidates of other flavours are judged on the same rows
    E.register(mlflow_client, model_name, rules, aliases=("champion",))

    rep = _eval(
        mlflow_settings, mlflow_client, model_name, booster["model_uri"], holdout_csv, slices=["site"]
    )
    c, ch = rep["candidate"], rep["champion"]
    assert c["loaded_as"] == "pyfunc" and "xgboost" in c["flavors"]
    assert c["predictions"] == "positive-class probability (>= 0.5)"
    assert c["metrics"]["roc_auc"] > 0.95 and c["metrics"]["f1"] > 0.9
    assert ch["version"] == "1" and ch["loaded_as"] == "pyfunc" and ch["predictions"] == "labels"
    assert ch["metrics"]["example_count"] == c["metrics"]["example_count"] == 285.0
    assert "returns no class probabilities" in ch["unavailable"]["roc_auc"]
    assert all(s["champion"]["metrics"]["example_count"] == s["rows"] for s in rep["slices"]["results"])

    rule_rep = _eval(mlflow_settings, mlflow_client, model_name, rules["model_uri"], holdout_csv)
    assert rule_rep["candidate"]["metrics"]["f1"] == rule_rep["champion"]["metrics"]["f1"]
    # a condition that needs probabilities the model does not have says why
    with pytest.raises(ConditionError) as info:
        C.evaluate("roc_auc >= 0.9", rule_rep)
    assert "candidate.roc_auc is unavailable: roc_auc needs class probabilities" in str(info.value)
    assert "loaded through pyfunc) returns no class probabilities" in str(info.value)


@pytest.mark.parametrize(
    "uri",
    [
        "models:/no-such-model/1",
        "models:/no-such-model@champion",
        "models:/m-0123456789abcdef0123456789abcdef",
        "m-0123456789abcdef0123456789abcdef",
        "runs:/0123456789abcdef0123456789abcdef/model",
    ],
)
def test_a_model_uri_that_does_not_exist_is_a_clear_error_and_writes_nothing(
    mlflow_settings, mlflow_client, model_name, holdout_csv, uri
):
    with pytest.raises(RegistryError) as info:
        _eval(mlflow_settings, mlflow_client, model_name, uri, holdout_csv)
    message = str(info.value)
    assert f"model URI {uri!r}" in message
    assert "does not exist" in message or "there is no logged model" in message
    assert _runs(mlflow_client, model_name) == []


def test_a_run_without_that_model_and_a_file_that_is_not_a_model(
    mlflow_settings, mlflow_client, model_name, holdout_csv, logged
):
    with pytest.raises(RegistryError, match="has no model at 'nope'"):
        _eval(
            mlflow_settings,
            mlflow_client,
            model_name,
            f"runs:/{logged['candidate']['run_id']}/nope",
            holdout_csv,
        )
    exp = E.experiment_id(mlflow_client)
    run = mlflow_client.create_run(exp)
    empty = mlflow_client.create_logged_model(exp, name="empty", source_run_id=run.info.run_id)
    mlflow_client.finalize_logged_model(empty.model_id, "READY")
    with pytest.raises(RegistryError, match="has no MLmodel file"):
        _eval(mlflow_settings, mlflow_client, model_name, empty.model_id, holdout_csv)
    with pytest.raises(RegistryError, match="is not a model URI"):
        _eval(mlflow_settings, mlflow_client, model_name, holdout_csv, holdout_csv)
    assert _runs(mlflow_client, model_name) == []


def test_user_metrics_are_named_in_the_report_and_usable_in_conditions(
    mlflow_settings, mlflow_client, model_name, holdout_csv, logged
):
    metrics = {
        "cost": {"function": "tests.support.user_metrics:cost", "greater_is_better": False},
        "brier": "tests.support.user_metrics:brier",
        "mcc": "sklearn.metrics:matthews_corrcoef",
    }
    rep = _eval(
        mlflow_settings,
        mlflow_client,
        model_name,
        logged["candidate"]["model_uri"],
        holdout_csv,
        metrics=metrics,
        allowed_metric_prefixes=(*USER_PREFIX, "sklearn.metrics"),
        slices=["site"],
    )
    assert rep["user_metrics"]["cost"] == {
        "function": "tests.support.user_metrics:cost",
        "needs_proba": False,
        "greater_is_better": False,
    }
    assert rep["user_metrics"]["brier"]["needs_proba"] is True
    m = rep["candidate"]["metrics"]
    assert m["cost"] >= 0 and 0 < m["brier"] < 0.1 and 0 < m["mcc"] <= 1
    assert all("cost" in s["candidate"]["metrics"] for s in rep["slices"]["results"])
    assert C.evaluate("cost <= 60 and mcc > 0.8 and brier < 0.1", rep)["passed"]
    assert mlflow_client.get_run(rep["candidate"]["run_id"]).data.metrics["eval.cost"] == m["cost"]


@pytest.mark.parametrize(
    ("metrics", "fragment"),
    [
        (
            {"m": "tests.support.user_metrics:explodes"},
            "user metric 'm' (tests.support.user_metrics:explodes) raised",
        ),
        ({"m": "tests.support.user_metrics:returns_none"}, "returned None (NoneType), not a number"),
        ({"m": "tests.support.user_metrics:returns_nan"}, "returned NaN"),
        ({"m": "tests.support.user_metrics:returns_array"}, "returned an array of shape (285,)"),
        ({"m": "os:system"}, "outside the allowed prefixes"),
    ],
)
def test_a_bad_metric_function_is_a_clear_error_and_writes_nothing(
    mlflow_settings, mlflow_client, model_name, holdout_csv, logged, metrics, fragment
):
    with pytest.raises(MetricError) as info:
        _eval(
            mlflow_settings,
            mlflow_client,
            model_name,
            logged["candidate"]["model_uri"],
            holdout_csv,
            metrics=metrics,
            allowed_metric_prefixes=USER_PREFIX,
        )
    assert fragment in str(info.value)
    assert _runs(mlflow_client, model_name) == []


def test_bad_holdout_and_slices_write_nothing(
    mlflow_settings, mlflow_client, model_name, holdout_csv, logged
):
    uri = logged["candidate"]["model_uri"]
    with pytest.raises(DataError, match="lacks target column 'label'"):
        evaluate(
            mlflow_settings,
            mlflow_client,
            model_name=model_name,
            candidate_uri=uri,
            target="label",
            holdout=holdout_csv,
        )
    with pytest.raises(DataError, match=r"column 'sight' is not in the data \(did you mean 'site'\?\)"):
        _eval(mlflow_settings, mlflow_client, model_name, uri, holdout_csv, slices=["sight"])
    with pytest.raises(DataError, match="outside"):
        _eval(mlflow_settings, mlflow_client, model_name, uri, "os.path:join")
    assert _runs(mlflow_client, model_name) == []


# ------------------------------------------------------------------------------------------ under Airflow


def _sync(dag):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


def test_a_regression_confined_to_one_slice_blocks_the_gate_and_the_decision_names_it(
    airflow_db, mlflow_conn, mlflow_client, model_name, holdout_csv, logged
):
    """Real data, real models: the candidate is within 0.01 F1 overall, but about 0.11 worse on site C."""
    from airflow.sdk import DAG

    from airflow_saga.operators.evaluate import EvaluateModelOperator
    from airflow_saga.operators.gate import QualityGateOperator

    E.register(mlflow_client, model_name, logged["champion"], aliases=("champion",))
    overall = "improves(f1, min_absolute=-0.02)"
    sliced = 'slice_improves(f1, min_absolute=-0.02, by="site")'
    with DAG(f"t_slices_{uuid.uuid4().hex[:8]}", schedule=None) as dag:  # default settings
        evaluate = EvaluateModelOperator(
            task_id="evaluate",
            model_name=model_name,
            model_uri=logged["candidate"]["model_uri"],
            holdout=holdout_csv,
            target="target",
            slices=["site", {"column": "mean_radius", "quantiles": 2}],
            min_slice_rows=25,
        )
        gate = QualityGateOperator(
            task_id="gate", conditions=f"{overall} and {sliced}", report=evaluate.output
        )
        evaluate >> gate
    dr = _sync(dag).test(logical_date=None)
    states = task_states(dr)
    assert states == {"evaluate": "success", "gate": "failed"}, states
    report = xcom(dr, "evaluate")
    by_name = {s["name"]: s for s in report["slices"]["results"]}
    median = float(E.site_data()[1]["mean_radius"].median())
    assert report["slices"]["definitions"][1]["resolved_edges"] == [pytest.approx(median)]
    halves = {f"mean_radius=(-inf, {median:.6g})", f"mean_radius=[{median:.6g}, +inf)"}
    assert set(by_name) == {"site=A", "site=B", "site=C", *halves}
    assert by_name["site=C"]["rows"] == 30 and by_name["site=C"]["eligible"] is True
    decision = xcom(dr, "gate", "decision")
    overall_check, slice_check = decision["checks"]
    assert overall_check["passed"] is True, "the overall metric hides the regression"
    assert slice_check["passed"] is False and slice_check["slice"] == "site=C"
    assert slice_check["failing_slices"] == ["site=C"]
    assert slice_check["absolute_improvement"] < -0.1
    assert decision["reasons"][0].startswith(f"{sliced}: on slice site=C (30 rows) candidate.f1 = 0.829")
    # the decision is on the evaluation run in MLflow too, and nothing was registered
    run = mlflow_client.get_run(report["candidate"]["run_id"])
    assert run.data.tags[T.GATE_DECISION] == "blocked"
    assert [v.version for v in mlflow_client.search_model_versions(f"name='{model_name}'")] == ["1"]


@pytest.fixture
def pg_holdout(holdout_csv, monkeypatch):
    """The held-out rows in a private PostgreSQL database, behind an Airflow connection."""
    import pandas as pd
    import psycopg2
    from sqlalchemy import create_engine

    db = f"saga_eval_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{db}"')
    engine = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}")
    try:
        pd.read_csv(holdout_csv).to_sql("holdout", engine, index=False)
        engine.dispose()
        monkeypatch.setenv(
            "AIRFLOW_CONN_EVAL_WAREHOUSE",
            json.dumps(
                {
                    "conn_type": "postgres",
                    "host": "127.0.0.1",
                    "port": 5432,
                    "login": "postgres",
                    "schema": db,
                }
            ),
        )
        yield "eval_warehouse"
    finally:
        engine.dispose()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


def test_external_model_on_sql_holdout_with_user_metric_in_a_default_dag(
    airflow_db, mlflow_conn, mlflow_client, model_name, logged, pg_holdout
):
    from airflow.sdk import DAG

    from airflow_saga.operators.evaluate import EvaluateModelOperator
    from airflow_saga.operators.gate import QualityGateOperator

    with DAG(f"t_sql_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
        evaluate = EvaluateModelOperator(
            task_id="evaluate",
            model_name=model_name,
            model_uri=f"runs:/{logged['candidate']['run_id']}/model",
            # JSON text, as a trigger form gives it
            holdout=f'{{"sql": "SELECT * FROM holdout", "conn_id": "{pg_holdout}"}}',
            allowed_conn_ids=[pg_holdout],
            target="target",
            metrics='{"cost": {"function": "tests.support.user_metrics:cost", "greater_is_better": false}}',
            allowed_metric_prefixes=USER_PREFIX,
        )
        gate = QualityGateOperator(
            task_id="gate",
            conditions="cost <= 60 and roc_auc >= 0.95 and not champion.exists",
            report="{{ ti.xcom_pull(task_ids='evaluate') }}",  # a rendered Python dict, no native rendering
        )
        evaluate >> gate
    dr = _sync(dag).test(logical_date=None)
    assert task_states(dr) == {"evaluate": "success", "gate": "success"}
    report = xcom(dr, "evaluate")
    assert report["dataset"]["holdout_uri"] == f"sql:{pg_holdout}:SELECT * FROM holdout"
    assert report["dataset"]["holdout_rows"] == 285
    assert report["candidate"]["source_run_id"] == logged["candidate"]["run_id"]
    run = mlflow_client.get_run(report["candidate"]["run_id"])
    assert run.data.tags["saga.airflow.dag_id"] == dag.dag_id and run.data.tags[T.GATE_DECISION] == "passed"
    assert xcom(dr, "gate", "decision")["passed"] is True


def test_operator_refuses_a_missing_model_uri_without_writing(
    airflow_db, mlflow_conn, mlflow_client, model_name, holdout_csv
):
    from airflow.sdk import DAG

    from airflow_saga.operators.evaluate import EvaluateModelOperator

    with DAG(f"t_missing_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
        EvaluateModelOperator(
            task_id="evaluate",
            model_name=model_name,
            model_uri="models:/nope/3",
            holdout=holdout_csv,
            target="target",
        )
    dr = _sync(dag).test(logical_date=None)
    assert task_states(dr) == {"evaluate": "failed"}
    assert _runs(mlflow_client, model_name) == []
