"""Operator construction: mistakes a DAG author can make are caught at parse time, naming what is wrong."""

from __future__ import annotations

import pytest

from airflow_saga.operators.register import RegisterModelOperator
from airflow_saga.operators.train import TrainFunctionOperator


def _fit(X, y, hyperparameters, learning_rate):
    return None


def test_training_function_needing_an_unsupplied_argument_fails_at_parse_time():
    with pytest.raises(TypeError, match=r"needs \['learning_rate'\], which nothing supplies"):
        TrainFunctionOperator(
            task_id="t", python_callable=_fit, model_name="m", data_source="x.csv", target="y"
        )
    TrainFunctionOperator(
        task_id="t",
        python_callable=_fit,
        model_name="m",
        data_source="x.csv",
        target="y",
        op_kwargs={"learning_rate": 0.1},
    )


def test_without_data_source_the_data_arguments_are_not_available():
    with pytest.raises(TypeError, match="no data_source is set"):
        TrainFunctionOperator(task_id="t", python_callable=lambda X, y: None, model_name="m")


def test_register_needs_a_training_summary_or_a_model_uri():
    with pytest.raises(TypeError, match="needs training"):
        RegisterModelOperator(task_id="r", model_name="m")


def test_decorator_builds_the_operator_with_unique_task_ids():
    from airflow.sdk import DAG, task

    with DAG("d", schedule=None) as dag:

        @task.saga_train(model_name="m", data_source="sklearn:iris", target="target")
        def fit(X, y):
            return None

        first, second = fit(), fit()
    assert {first.operator.task_id, second.operator.task_id} == {"fit", "fit__1"}
    assert isinstance(first.operator, TrainFunctionOperator) and set(dag.task_ids) == {"fit", "fit__1"}
    assert first.operator.custom_operator_name == "@task.saga_train"
