"""``@task.saga_train``: your own training function as a fully recorded saga training step.

Example (a DAG with default settings)::

    from airflow.sdk import DAG, task
    from airflow_saga.operators.evaluate import EvaluateModelOperator

    with DAG("churn_xgb", schedule=None):

        @task.saga_train(model_name="churn", data_source="sql:warehouse:SELECT * FROM churn",
                         target="churned", hyperparameters={"n_estimators": 200},
                         allowed_sql_conn_ids=["warehouse"])
        def fit(X, y, hyperparameters):
            from xgboost import XGBClassifier
            return XGBClassifier(**hyperparameters).fit(X, y)

        training = fit()            # an XComArg: the training summary
        EvaluateModelOperator(task_id="evaluate", model_name="churn", training=training)

The function asks for what it needs by parameter name (``train``, ``X``, ``y``, ``hyperparameters``,
``target``, ``features``, Airflow context values such as ``ti`` or ``params``, and the call's own
arguments), and returns the fitted model: any scikit-learn-API estimator (XGBoost/LightGBM wrappers
included), a native ``xgboost.Booster`` / ``lightgbm.Booster``, or an ``mlflow.pyfunc.PythonModel``. With no
``data_source`` it loads its own data and returns ``airflow_saga.core.training.TrainedModel(model,
train=..., target=..., holdout=..., source=...)``. The step logs what ``TrainModelOperator`` logs and
returns the same training summary; see ``TrainFunctionOperator`` for every parameter.

This module imports only Airflow and the standard library at top level: DAG files that use the decorator
parse in milliseconds, and the function's own heavy imports belong inside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.decorator import get_unique_task_id, task_decorator_factory

from airflow_saga.operators.train import TrainFunctionOperator

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    from airflow.sdk.bases.decorator import TaskDecorator


class _SagaTrainDecoratedOperator(TrainFunctionOperator):
    """``TrainFunctionOperator`` as built by ``@task.saga_train`` (unique task ids, like ``@task``)."""

    custom_operator_name: str = "@task.saga_train"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        task_id: str,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        multiple_outputs: bool = False,
        **kwargs: Any,
    ) -> None:
        if not getattr(self, "_BaseOperator__from_mapped", False):
            task_id = get_unique_task_id(task_id, kwargs.get("dag"), kwargs.get("task_group"))
        # The summary is one XCom value (a dict) that evaluate and register take whole.
        super().__init__(
            python_callable=python_callable,
            task_id=task_id,
            op_args=op_args,
            op_kwargs=op_kwargs,
            multiple_outputs=False,
            **kwargs,
        )


def saga_train_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a training function into a ``TrainFunctionOperator`` (``@task.saga_train(model_name=...)``)."""
    kwargs.pop("multiple_outputs", None)
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=False,
        decorated_operator_class=_SagaTrainDecoratedOperator,
        **kwargs,
    )


saga_train = saga_train_task
