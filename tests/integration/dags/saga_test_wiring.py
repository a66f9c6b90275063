"""Test DAGs with Airflow's DEFAULT template settings (no render_template_as_native_obj).

``saga_test_default_wiring`` mixes the two wiring styles a user writes: XComArgs (``train.output``,
``gate.output["decision"]``) and string templates (``"{{ ti.xcom_pull(task_ids='train') }}"``), which a
default DAG renders to the ``str()`` of the value. ``saga_test_train_function`` is ``@task.saga_train`` with
a training function defined here, in the DAG file, the way a user writes one.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from airflow_saga.operators.evaluate import EvaluateModelOperator
from airflow_saga.operators.gate import QualityGateOperator
from airflow_saga.operators.register import RegisterModelOperator
from airflow_saga.operators.train import TrainModelOperator

PARAMS = {
    "model_name": Param("saga-test-wiring", type="string"),
    "hyperparameters": Param({"max_iter": 3000, "C": 0.5}, type="object"),
    "cache": Param(False, type="boolean"),
}

with DAG(dag_id="saga_test_default_wiring", schedule=None, params=PARAMS, tags=["test"]):
    train = TrainModelOperator(
        task_id="train",
        model_name="{{ params.model_name }}",
        estimator="sklearn.linear_model.LogisticRegression",
        data_source="sklearn:breast_cancer",
        target="target",
        hyperparameters="{{ params.hyperparameters }}",  # renders "{'max_iter': 3000, 'C': 0.5}"
        test_size="0.3",
        cache="{{ params.cache }}",
    )
    evaluate = EvaluateModelOperator(
        task_id="evaluate",
        model_name="{{ params.model_name }}",
        training="{{ ti.xcom_pull(task_ids='train') }}",  # template form: a rendered Python repr
    )
    gate = QualityGateOperator(task_id="gate", conditions="accuracy >= 0.8", report=evaluate.output)
    register = RegisterModelOperator(
        task_id="register",
        model_name="{{ params.model_name }}",
        training=train.output,  # XComArg form
        report="{{ ti.xcom_pull(task_ids='evaluate') }}",
        decision=gate.output["decision"],
    )
    train >> evaluate >> gate >> register


def _log1p_features(frame):  # a helper in the DAG file, used inside the fitted Pipeline
    import numpy as np

    return np.log1p(frame.clip(lower=0))


with DAG(dag_id="saga_test_train_function", schedule=None, params=PARAMS, tags=["test"]):

    @task.saga_train(
        model_name="{{ params.model_name }}",
        data_source="sklearn:breast_cancer",
        target="target",
        hyperparameters="{{ params.hyperparameters }}",
        cache="{{ params.cache }}",
    )
    def fit(X, y, hyperparameters, ti, scale: float = 1.0):
        """A user's own training function: a Pipeline with a DAG-file helper, sklearn API."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        assert ti.task_id == "fit" and scale == 2.0
        return make_pipeline(
            FunctionTransformer(_log1p_features), StandardScaler(), LogisticRegression(**hyperparameters)
        ).fit(X, y)

    training = fit(scale=2.0)
    evaluate = EvaluateModelOperator(
        task_id="evaluate", model_name="{{ params.model_name }}", training=training
    )
    gate = QualityGateOperator(task_id="gate", conditions="accuracy >= 0.8", report=evaluate.output)
    RegisterModelOperator(
        task_id="register",
        model_name="{{ params.model_name }}",
        training=training,
        report=evaluate.output,
        decision=gate.output["decision"],
    ).set_upstream(gate)


with DAG(
    dag_id="saga_test_sql_source",
    schedule=None,
    params={"model_name": Param("saga-test-sql", type="string"), "data_source": Param("", type="string")},
    tags=["test"],
):
    sql_train = TrainModelOperator(
        task_id="train",
        model_name="{{ params.model_name }}",
        estimator="sklearn.ensemble.RandomForestClassifier",
        hyperparameters={"n_estimators": 10, "random_state": 0},
        data_source="{{ params.data_source }}",
        target="label",
        allowed_sql_conn_ids=["saga_test_pg", "saga_test_missing"],
    )
    sql_eval = EvaluateModelOperator(
        task_id="evaluate", model_name="{{ params.model_name }}", training=sql_train.output
    )
    RegisterModelOperator(
        task_id="register",
        model_name="{{ params.model_name }}",
        training=sql_train.output,
        report=sql_eval.output,
    )


with DAG(
    dag_id="saga_test_register_uri",
    schedule=None,
    params={"model_name": Param("saga-test-uri", type="string"), "model_uri": Param("", type="string")},
    tags=["test"],
):
    RegisterModelOperator(
        task_id="register", model_name="{{ params.model_name }}", model_uri="{{ params.model_uri }}"
    )
