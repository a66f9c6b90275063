"""saga_training_pipeline: train -> evaluate -> gate -> register -> approve -> promote, on MLflow.

Approval is a Param: ``airflow`` asks a human in Airflow's human-in-the-loop UI (Required Actions), ``mlflow``
waits for someone to set ``saga.approval.status`` on the version in MLflow (a deferrable sensor), ``auto``
registers the version as Approved because the gate passed. After approval the version becomes
``challenger``, or ``champion`` when the model has none yet.

Every input is an Airflow Param, so a run is configured from the UI's trigger form or the REST API's
``conf``. Steps hand results on as XComArgs (``train.output``), so the DAG runs with Airflow's default
template settings. A cache hit that reuses a model already registered goes to ``already_registered``: no
second version, no second approval, no promotion over itself. No template uses ``{{ ds }}``: runs
triggered from the UI or REST have no logical date. This file imports only Airflow and airflow_saga's
operators, so it parses in milliseconds.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param

from airflow_saga.assets import drift_asset
from airflow_saga.operators.approval import ApproveModelOperator, model_approval_request
from airflow_saga.operators.evaluate import EvaluateModelOperator
from airflow_saga.operators.gate import QualityGateOperator
from airflow_saga.operators.promote import PromoteModelOperator
from airflow_saga.operators.register import RegisterModelOperator
from airflow_saga.operators.routing import ApprovalRouteOperator
from airflow_saga.operators.train import TrainModelOperator
from airflow_saga.sensors.approval import ModelApprovalSensor

DEFAULT_CONDITIONS = "accuracy >= 0.9 and f1 >= 0.9 and improves(f1, min_absolute=-0.01)"

with DAG(
    dag_id="saga_training_pipeline",
    description="Train, evaluate against the champion, gate, and register a model version in MLflow",
    # Retrain when the drift monitor reports drift of the default model (its Params defaults apply to
    # asset-triggered runs, so the asset must name the same model); manual triggers work as before.
    schedule=drift_asset("saga-breast-cancer"),
    catchup=False,
    max_active_runs=4,
    tags=["saga", "mlops"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    params={
        "model_name": Param(
            "saga-breast-cancer",
            type="string",
            minLength=1,
            maxLength=200,
            description="Registered model in MLflow (created on first registration)",
        ),
        "data_source": Param(
            "sklearn:breast_cancer",
            type="string",
            minLength=1,
            description="CSV/Parquet path or URI, or sklearn:<breast_cancer|iris|wine|diabetes|digits> "
            "(callable and SQL sources need allowed_source_prefixes / allowed_sql_conn_ids in the DAG)",
        ),
        "target": Param("target", type="string", minLength=1, description="Target column"),
        "estimator": Param(
            "sklearn.linear_model.LogisticRegression",
            type="string",
            description="Import path of a scikit-learn estimator or Pipeline factory",
        ),
        "hyperparameters": Param(
            {"max_iter": 5000},
            type="object",
            description="Passed to set_params(); unknown names fail the run",
        ),
        "test_size": Param(0.25, type="number", exclusiveMinimum=0, exclusiveMaximum=1),
        "conditions": Param(
            DEFAULT_CONDITIONS,
            type="string",
            minLength=1,
            description="Quality gate, e.g. 'accuracy >= 0.9 and improves(f1, min_relative=0.01)'",
        ),
        "approval_mode": Param(
            "airflow",
            type="string",
            enum=["airflow", "mlflow", "auto"],
            description="airflow: approve in Airflow's Required Actions view; mlflow: set "
            "saga.approval.status in MLflow; auto: approved when the gate passes",
        ),
        "cache": Param(
            False, type="boolean", description="Reuse a previous identical training (same data content)"
        ),
        "cache_expire_after": Param("P30D", type="string", description="ISO-8601 duration for cache hits"),
    },
) as dag:
    train = TrainModelOperator(
        task_id="train",
        model_name="{{ params.model_name }}",
        estimator="{{ params.estimator }}",
        hyperparameters="{{ params.hyperparameters }}",
        data_source="{{ params.data_source }}",
        target="{{ params.target }}",
        test_size="{{ params.test_size }}",
        cache="{{ params.cache }}",
        cache_expire_after="{{ params.cache_expire_after }}",
    )
    evaluate = EvaluateModelOperator(
        task_id="evaluate", model_name="{{ params.model_name }}", training=train.output
    )
    gate = QualityGateOperator(
        task_id="quality_gate", conditions="{{ params.conditions }}", report=evaluate.output
    )
    register = RegisterModelOperator(
        task_id="register",
        model_name="{{ params.model_name }}",
        training=train.output,
        report=evaluate.output,
        decision=gate.output["decision"],
        auto_approve="{{ params.approval_mode == 'auto' }}",
    )
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
    ask = model_approval_request(
        model_name="{{ params.model_name }}",
        version=version,
        response_timeout=timedelta(hours=72),
    )
    record = ApproveModelOperator(
        task_id="record_airflow_approval",
        model_name="{{ params.model_name }}",
        version=version,
        hitl_task_id="approve_in_airflow",
    )
    wait_mlflow = ModelApprovalSensor(
        task_id="wait_for_mlflow_approval",
        model_name="{{ params.model_name }}",
        version=version,
        deferrable=True,
        poke_interval=15,
        timeout=72 * 3600,
        retries=2,  # Airflow 3.3.2 can fail a trigger that fires within seconds (apache/airflow#71580)
    )
    auto = EmptyOperator(task_id="auto_approved")
    reused = EmptyOperator(task_id="already_registered")
    promote = PromoteModelOperator(
        task_id="promote",
        model_name="{{ params.model_name }}",
        version=version,
        alias="auto",
        reason="approved by {{ params.approval_mode }} approval in {{ dag.dag_id }} run {{ run_id }}",
        trigger_rule="none_failed_min_one_success",
    )
    train >> evaluate >> gate >> register >> route
    route >> ask >> record >> promote
    route >> wait_mlflow >> promote
    route >> auto >> promote
    route >> reused
