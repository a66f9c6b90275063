"""A user's pipeline for one framework: ``@task.saga_train`` -> evaluate -> gate -> register.

The ``framework`` Param picks XGBoost (sklearn API), LightGBM, or a rule-based ``mlflow.pyfunc.PythonModel``
that imports no sklearn; ``size`` makes a second version differ from the first (more trees, more rules),
the way a new prompt strategy or a retrained model ships as a new version. Approval and promotion are done
by people (``saga approve`` / ``saga promote``, i.e. ``core.approval`` / ``core.promotion``) in the test.

Imports mlflow at top level on purpose: the ``PythonModel`` subclass must exist when the DAG file is
parsed, as it does in a user's DAG file. (Shipped DAGs never do this; this file is a test fixture.)
"""

from __future__ import annotations

import mlflow.pyfunc
from airflow.sdk import DAG, Param, task

from airflow_saga.operators.evaluate import EvaluateModelOperator
from airflow_saga.operators.gate import QualityGateOperator
from airflow_saga.operators.register import RegisterModelOperator

#: Features whose values are smaller for benign tumours (target 1) in breast_cancer, most telling first.
RULE_FEATURES = (
    "worst_perimeter",
    "worst_concave_points",
    "worst_radius",
    "mean_concave_points",
    "worst_area",
)


class RuleScorer(mlflow.pyfunc.PythonModel):
    """Benign when most rules hold; a rule is ``feature <= threshold``. The rules are its parameters."""

    def __init__(self, rules: dict[str, float]) -> None:
        self.rules = rules

    def predict(self, context, model_input, params=None):
        votes = sum((model_input[col] <= limit).astype(int) for col, limit in self.rules.items())
        return (2 * votes > len(self.rules)).astype(int).to_numpy()


with DAG(
    dag_id="saga_test_framework_lifecycle",
    schedule=None,
    params={
        "model_name": Param("fw-lifecycle", type="string"),
        "framework": Param("xgboost", type="string", enum=["xgboost", "lightgbm", "rules"]),
        "size": Param(1, type="integer", minimum=1),
        "conditions": Param("accuracy >= 0.85 and f1_macro >= 0.8", type="string"),
    },
):

    @task.saga_train(
        model_name="{{ params.model_name }}", data_source="sklearn:breast_cancer", target="target"
    )
    def fit(X, y, train, target, params):
        from airflow_saga.core.training import TrainedModel

        framework, size = params["framework"], int(params["size"])
        if framework == "xgboost":
            from xgboost import XGBClassifier

            return XGBClassifier(n_estimators=10 * size, max_depth=3, n_jobs=1).fit(X, y)
        if framework == "lightgbm":
            from lightgbm import LGBMClassifier

            return LGBMClassifier(n_estimators=10 * size, n_jobs=1, verbose=-1).fit(X, y)
        # "Fit" = put each rule's threshold half way between the two classes' means (no sklearn).
        means = train.groupby(target)[list(RULE_FEATURES)].mean()
        rules = {c: float((means.loc[0, c] + means.loc[1, c]) / 2) for c in RULE_FEATURES[: 1 + 2 * size]}
        return TrainedModel(RuleScorer(rules), params={"rules": rules})

    training = fit()
    evaluate = EvaluateModelOperator(
        task_id="evaluate", model_name="{{ params.model_name }}", training=training
    )
    gate = QualityGateOperator(
        task_id="quality_gate", conditions="{{ params.conditions }}", report=evaluate.output
    )
    RegisterModelOperator(
        task_id="register",
        model_name="{{ params.model_name }}",
        training=training,
        report=evaluate.output,
        decision=gate.output["decision"],
    )
