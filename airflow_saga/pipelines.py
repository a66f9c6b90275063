"""A model's whole governed pipeline as one DAG, in one call.

``training_pipeline(model_name=..., source=..., train=..., conditions=...)`` returns the DAG
``saga_training_pipeline`` is made of: train (an estimator import path, your own training function, or no
training at all for a model trained elsewhere) -> evaluate against the champion on the same rows -> quality
gate -> register -> approve (Airflow human-in-the-loop, an MLflow tag, or automatic) -> promote. The DAG is
scheduled on the model's drift Asset (``saga://drift/<model>``), so a drift alert from ``saga_drift_monitor``
retrains exactly this model.

Every input is an Airflow Param whose default is the value given here, so a run can be changed from the
trigger form or REST ``conf``; an asset-triggered run uses the defaults, which is why the drift Asset is
that of the default ``model_name``. Security settings (allowed estimator, source, connection and metric
prefixes) are arguments, never Params: a trigger form is untrusted.

This module imports only Airflow and airflow_saga's (light) operator modules, so a DAG file that calls it
still parses in milliseconds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param

from airflow_saga.assets import drift_asset
from airflow_saga.operators.approval import ApproveModelOperator, model_approval_request
from airflow_saga.operators.evaluate import DEFAULT_METRIC_PREFIXES, EvaluateModelOperator
from airflow_saga.operators.gate import QualityGateOperator
from airflow_saga.operators.promote import PromoteModelOperator
from airflow_saga.operators.register import RegisterModelOperator
from airflow_saga.operators.routing import ApprovalRouteOperator
from airflow_saga.operators.train import TrainFunctionOperator, TrainModelOperator
from airflow_saga.sensors.approval import ModelApprovalSensor

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["DEFAULT_CONDITIONS", "DRIFT", "training_pipeline"]

DEFAULT_CONDITIONS = "accuracy >= 0.9 and f1 >= 0.9 and improves(f1, min_absolute=-0.01)"
APPROVAL_MODES = ("airflow", "mlflow", "auto")

#: ``schedule=DRIFT`` (the default): run when the default model's drift Asset gets an event.
DRIFT = "drift"

_SOURCE_HELP = (
    "CSV/Parquet path or URI, sklearn:<breast_cancer|iris|wine|diabetes|digits>, module:function, or "
    "sql:<conn_id>:<query> (callable and SQL sources need allowed_source_prefixes / allowed_sql_conn_ids "
    "in the DAG)"
)


def training_pipeline(
    model_name: str,
    *,
    source: Any = None,
    target: str = "target",
    train: str | Callable[..., Any] | None = None,
    model_uri: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    conditions: str = DEFAULT_CONDITIONS,
    approval: str = "airflow",
    dag_id: str | None = None,
    schedule: Any = DRIFT,
    test_size: float = 0.25,
    cache: bool = False,
    cache_expire_after: str = "P30D",
    metrics: Mapping[str, Any] | None = None,
    slices: Sequence[Any] | None = None,
    pip_requirements: Sequence[str] = (),
    allowed_estimator_prefixes: Sequence[str] = ("sklearn.",),
    allowed_source_prefixes: Sequence[str] = (),
    allowed_sql_conn_ids: Sequence[str] = (),
    allowed_metric_prefixes: Sequence[str] = DEFAULT_METRIC_PREFIXES,
    approval_timeout: timedelta = timedelta(hours=72),
    description: str | None = None,
    tags: Sequence[str] = ("saga", "mlops"),
    default_args: Mapping[str, Any] | None = None,
    max_active_runs: int = 4,
    **dag_kwargs: Any,
) -> DAG:
    """Build the governed pipeline DAG of ``model_name``.

    :param model_name: registered model in MLflow (created on first registration); the default of the
        ``model_name`` Param and the model whose drift Asset schedules the DAG.
    :param source: the data: for training, what ``TrainModelOperator`` takes as ``data_source``; with
        ``model_uri``, the held-out data the model is evaluated on. Any data-source spec.
    :param target: the target column.
    :param train: how the model is made. A string is an estimator import path (``"sklearn.ensemble.
        RandomForestClassifier"`` or ``"my_pkg.models:make_pipeline"``, under
        ``allowed_estimator_prefixes``); a function is your training function (what ``@task.saga_train``
        takes). Give ``train`` or ``model_uri``, not both.
    :param model_uri: a model trained elsewhere (``runs:/<run>/model``, ``models:/<name>/<version>``,
        ``models:/<name>@<alias>``, ``m-<id>``): evaluated on ``source``, gated, registered and governed.
    :param hyperparameters: passed to the estimator's ``set_params`` or to your function.
    :param conditions: the quality gate (see the README's "Quality-gate conditions").
    :param approval: ``airflow`` (human in Airflow's Required Actions), ``mlflow`` (someone sets
        ``saga.approval.status`` in MLflow) or ``auto`` (approved because the gate passed).
    :param dag_id: default ``<model_name>_pipeline``, other characters than letters, digits and ``_``
        replaced by ``_`` (``churn-csv`` -> ``churn_csv_pipeline``).
    :param schedule: ``DRIFT`` (default): the drift Asset of ``model_name``; anything else is passed to
        the DAG as is (``None`` for manual runs only, a cron string, other Assets).
    :param metrics: user metric functions for evaluation, ``{"cost": "my_pkg.metrics:cost"}``.
    :param slices: slice definitions for sliced evaluation, e.g. ``["region"]``.
    :param pip_requirements: extra serving requirements of a training function's model.
    :param allowed_estimator_prefixes: modules an estimator path may come from.
    :param allowed_source_prefixes: modules a ``module:function`` data source may come from.
    :param allowed_sql_conn_ids: Airflow connections a SQL data source may query.
    :param allowed_metric_prefixes: modules user metrics may come from.
    :returns: the DAG, already registered with Airflow (built in a ``with`` block). Write
        ``dag = training_pipeline(...)`` anyway: Airflow's safe mode only parses files that contain the
        words "airflow" and "dag", and a file with neither is skipped without an error.
    """
    if (train is None) == (model_uri is None):
        raise TypeError(
            f"training_pipeline({model_name!r}): give train (an estimator import path or a training "
            "function) or model_uri (a model trained elsewhere), exactly one"
        )
    if not isinstance(model_name, str) or not model_name.strip():
        raise TypeError(f"training_pipeline: model_name must be a non-empty string, got {model_name!r}")
    if approval not in APPROVAL_MODES:
        raise ValueError(
            f"training_pipeline({model_name!r}): approval must be one of {APPROVAL_MODES}, got {approval!r}"
        )
    if train is not None and not (isinstance(train, str) or callable(train)):
        raise TypeError(
            f"training_pipeline({model_name!r}): train must be an estimator import path or a function, "
            f"got {type(train).__name__}"
        )
    if source is not None and not isinstance(source, (str, dict)):
        raise TypeError(
            f"training_pipeline({model_name!r}): source must be a data-source spec (a string or a dict "
            f"such as {{'sql': ..., 'conn_id': ...}}), got {type(source).__name__}"
        )
    if hyperparameters is not None and not isinstance(hyperparameters, dict):
        raise TypeError(
            f"training_pipeline({model_name!r}): hyperparameters must be a dict, "
            f"got {type(hyperparameters).__name__}"
        )
    if model_uri is not None and source is None:
        raise TypeError(f"training_pipeline({model_name!r}): a model_uri needs source= (its held-out data)")

    params = _params(
        model_name,
        source=source,
        target=target,
        train=train,
        model_uri=model_uri,
        hyperparameters=hyperparameters,
        conditions=conditions,
        approval=approval,
        test_size=test_size,
        cache=cache,
        cache_expire_after=cache_expire_after,
    )
    for key, param in params.items():
        # Airflow would refuse the DAG without naming the Param ("required params without default values,
        # or the default values are not valid"); name the argument and the value instead.
        try:
            param.resolve()
        except (ValueError, TypeError) as exc:
            why = str(exc.__cause__ or exc).splitlines()[0][:200]
            raise ValueError(
                f"training_pipeline({model_name[:80]!r}): {key}={param.value!r:.200} is not valid: {why}"
            ) from None
    if schedule == DRIFT:
        # An asset-triggered run has no conf: its Params take their defaults, so this is the default model's.
        schedule = drift_asset(model_name)
    dag = DAG(
        dag_id=dag_id or _dag_id(model_name),
        description=description or f"Train, evaluate, gate, register and approve model {model_name!r}",
        schedule=schedule,
        catchup=dag_kwargs.pop("catchup", False),
        max_active_runs=max_active_runs,
        tags=list(tags),
        default_args=dict(default_args)
        if default_args is not None
        else {"retries": 1, "retry_delay": timedelta(seconds=10)},
        params=params,
        **dag_kwargs,
    )
    with dag:
        name = "{{ params.model_name }}"
        evaluate_kw: dict[str, Any] = {
            "allowed_metric_prefixes": tuple(allowed_metric_prefixes),
            "allowed_data_prefixes": tuple(allowed_source_prefixes),
            "allowed_conn_ids": tuple(allowed_sql_conn_ids),
        }
        if metrics:
            evaluate_kw["metrics"] = dict(metrics)
        if slices:
            evaluate_kw["slices"] = list(slices)
        if model_uri is not None:
            evaluate = EvaluateModelOperator(
                task_id="evaluate",
                model_name=name,
                model_uri="{{ params.model_uri }}",
                holdout="{{ params.data_source }}",
                target="{{ params.target }}",
                **evaluate_kw,
            )
            candidate: dict[str, Any] = {"model_uri": "{{ params.model_uri }}"}
        else:
            first = _train_task(
                train,
                name,
                pip_requirements=pip_requirements,
                allowed_estimator_prefixes=allowed_estimator_prefixes,
                allowed_source_prefixes=allowed_source_prefixes,
                allowed_sql_conn_ids=allowed_sql_conn_ids,
            )
            evaluate = EvaluateModelOperator(
                task_id="evaluate", model_name=name, training=first.output, **evaluate_kw
            )
            candidate = {"training": first.output}
            first >> evaluate
        gate = QualityGateOperator(
            task_id="quality_gate", conditions="{{ params.conditions }}", report=evaluate.output
        )
        register = RegisterModelOperator(
            task_id="register",
            model_name=name,
            report=evaluate.output,
            decision=gate.output["decision"],
            auto_approve="{{ params.approval_mode == 'auto' }}",
            **candidate,
        )
        _approve_and_promote(register, name, approval_timeout)
        evaluate >> gate >> register
    return dag


def _params(
    model_name: str, *, source: Any, target: str, train: Any, model_uri: str | None, **d: Any
) -> dict[str, Param]:
    """The trigger form: every run setting, defaulting to what the DAG file says."""
    params: dict[str, Param] = {
        "model_name": Param(
            model_name,
            type="string",
            minLength=1,
            maxLength=200,
            description="Registered model in MLflow (created on first registration)",
        ),
    }
    if model_uri is not None:
        params["model_uri"] = Param(
            model_uri,
            type="string",
            minLength=1,
            description="The model trained elsewhere: runs:/<run>/<path>, models:/<name>/<version>, "
            "models:/<name>@<alias> or m-<id>",
        )
    params["data_source"] = Param(
        source if source is not None else "",
        # a dict spec ({"sql": ..., "conn_id": ...}) needs an object Param; a string stays a text field
        type="string" if source is None or isinstance(source, str) else ["object", "string"],
        **({} if source is None else {"minLength": 1}),
        description=("Held-out data to evaluate the model on: " if model_uri is not None else "")
        + _SOURCE_HELP,
    )
    params["target"] = Param(target, type="string", minLength=1, description="Target column")
    if isinstance(train, str):
        params["estimator"] = Param(
            train, type="string", description="Import path of a scikit-learn estimator or Pipeline factory"
        )
    if model_uri is None:
        params["hyperparameters"] = Param(
            dict(d["hyperparameters"] or {}),
            type="object",
            description="Passed to set_params() (or your training function); unknown names fail the run",
        )
        params["test_size"] = Param(d["test_size"], type="number", exclusiveMinimum=0, exclusiveMaximum=1)
    params["conditions"] = Param(
        d["conditions"],
        type="string",
        minLength=1,
        description="Quality gate, e.g. 'accuracy >= 0.9 and improves(f1, min_relative=0.01)'",
    )
    params["approval_mode"] = Param(
        d["approval"],
        type="string",
        enum=list(APPROVAL_MODES),
        description="airflow: approve in Airflow's Required Actions view; mlflow: set "
        "saga.approval.status in MLflow; auto: approved when the gate passes",
    )
    if model_uri is None:
        params["cache"] = Param(
            d["cache"], type="boolean", description="Reuse a previous identical training (same data content)"
        )
        params["cache_expire_after"] = Param(
            d["cache_expire_after"], type="string", description="ISO-8601 duration for cache hits"
        )
    return params


def _train_task(
    train: str | Callable[..., Any],
    name: str,
    *,
    pip_requirements: Sequence[str],
    allowed_estimator_prefixes: Sequence[str],
    allowed_source_prefixes: Sequence[str],
    allowed_sql_conn_ids: Sequence[str],
) -> TrainModelOperator | TrainFunctionOperator:
    common: dict[str, Any] = {
        "task_id": "train",
        "model_name": name,
        "hyperparameters": "{{ params.hyperparameters }}",
        "data_source": "{{ params.data_source }}",
        "target": "{{ params.target }}",
        "test_size": "{{ params.test_size }}",
        "cache": "{{ params.cache }}",
        "cache_expire_after": "{{ params.cache_expire_after }}",
        "allowed_source_prefixes": tuple(allowed_source_prefixes),
        "allowed_sql_conn_ids": tuple(allowed_sql_conn_ids),
    }
    if isinstance(train, str):
        return TrainModelOperator(
            estimator="{{ params.estimator }}",
            allowed_estimator_prefixes=tuple(allowed_estimator_prefixes),
            **common,
        )
    return TrainFunctionOperator(python_callable=train, pip_requirements=tuple(pip_requirements), **common)


def _approve_and_promote(register: RegisterModelOperator, name: str, timeout: timedelta) -> None:
    """approval_route -> (Airflow HITL | MLflow tag sensor | auto | already registered) -> promote."""
    version = "{{ ti.xcom_pull(task_ids='register', key='version') }}"
    route = ApprovalRouteOperator(
        task_id="approval_route",
        # A reused version (cache hit of a registered model) is already in the approval workflow.
        mode="{{ 'reused' if ti.xcom_pull(task_ids='register', key='reused') else params.approval_mode }}",
        routes={
            "airflow": "approve_in_airflow",
            "mlflow": "wait_for_mlflow_approval",
            "auto": "auto_approved",
            "reused": "already_registered",
        },
    )
    ask = model_approval_request(model_name=name, version=version, response_timeout=timeout)
    record = ApproveModelOperator(
        task_id="record_airflow_approval", model_name=name, version=version, hitl_task_id="approve_in_airflow"
    )
    wait_mlflow = ModelApprovalSensor(
        task_id="wait_for_mlflow_approval",
        model_name=name,
        version=version,
        deferrable=True,
        poke_interval=15,
        timeout=int(timeout.total_seconds()),
        retries=2,  # Airflow 3.3.2 can fail a trigger that fires within seconds (apache/airflow#71580)
    )
    auto = EmptyOperator(task_id="auto_approved")
    reused = EmptyOperator(task_id="already_registered")
    promote = PromoteModelOperator(
        task_id="promote",
        model_name=name,
        version=version,
        alias="auto",
        reason="approved by {{ params.approval_mode }} approval in {{ dag.dag_id }} run {{ run_id }}",
        trigger_rule="none_failed_min_one_success",
    )
    register >> route
    route >> ask >> record >> promote
    route >> wait_mlflow >> promote
    route >> auto >> promote
    route >> reused


def _dag_id(model_name: str) -> str:
    """``<model_name>_pipeline`` with every character but ASCII letters, digits and ``_`` made ``_``."""
    safe = "".join(c if (c.isascii() and c.isalnum()) or c == "_" else "_" for c in model_name.strip())
    return f"{safe}_pipeline"[:250]
