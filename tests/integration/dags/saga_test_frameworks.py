"""One ``@task.saga_train`` per model flavour, each function defined here in the DAG file.

Imports mlflow at top level on purpose: a ``PythonModel`` subclass must exist when the DAG file is parsed,
as it would in a user's DAG. (Shipped DAGs never do this; this file is a test fixture.)
"""

from __future__ import annotations

import mlflow.pyfunc
from airflow.sdk import DAG, Param, task

DATA = "sklearn:breast_cancer"


class RuleScorer(mlflow.pyfunc.PythonModel):
    """A rule-based scorer that imports no sklearn: its rules are its parameters."""

    def __init__(self, rules: dict[str, float]) -> None:
        self.rules = rules

    def predict(self, context, model_input, params=None):
        score = sum((model_input[col] > limit).astype(int) for col, limit in self.rules.items())
        return (score >= max(1, len(self.rules) // 2)).astype(int).to_numpy()


with DAG(dag_id="saga_test_frameworks", schedule=None, params={"prefix": Param("fw", type="string")}):

    @task.saga_train(model_name="{{ params.prefix }}-xgb", data_source=DATA, target="target")
    def xgb_sklearn(X, y):
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1).fit(X, y)

    @task.saga_train(model_name="{{ params.prefix }}-lgbm", data_source=DATA, target="target")
    def lgbm_sklearn(X, y):
        from lightgbm import LGBMClassifier

        return LGBMClassifier(n_estimators=20, n_jobs=1, verbose=-1).fit(X, y)

    @task.saga_train(
        model_name="{{ params.prefix }}-xgb-booster",
        data_source=DATA,
        target="target",
        hyperparameters={"max_depth": 3, "objective": "binary:logistic"},
    )
    def xgb_booster(X, y, hyperparameters):
        import xgboost

        return xgboost.train({**hyperparameters, "nthread": 1}, xgboost.DMatrix(X, label=y), 10)

    @task.saga_train(model_name="{{ params.prefix }}-lgb-booster", data_source=DATA, target="target")
    def lgb_booster(train, target, features):
        import lightgbm

        ds = lightgbm.Dataset(train[features], label=train[target])
        return lightgbm.train({"objective": "binary", "verbose": -1, "num_threads": 1}, ds, 10)

    @task.saga_train(model_name="{{ params.prefix }}-rules", data_source=DATA, target="target")
    def rules(train, target):
        # "Fit" = pick each rule's threshold: the mean of the feature among positives (no sklearn).
        positives = train[train[target] == 1]
        return RuleScorer({c: float(positives[c].mean()) for c in ("mean_radius", "mean_texture")})

    for fn in (xgb_sklearn, lgbm_sklearn, xgb_booster, lgb_booster, rules):
        fn()
