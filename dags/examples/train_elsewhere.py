"""Train a model outside Airflow and log it to MLflow, the way a notebook would (not a DAG).

Run: MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python dags/examples/train_elsewhere.py
It registers the model as churn-notebook and points the alias "candidate" at it, which is what
churn_external_pipeline evaluates and governs.
"""

from __future__ import annotations

from pathlib import Path


def main() -> str:
    import mlflow
    import pandas as pd
    import sklearn
    from sklearn.ensemble import GradientBoostingClassifier

    frame = pd.read_csv(Path(__file__).parent / "data" / "churn.csv")
    X, y = frame.drop(columns=["churned"]), frame["churned"]
    mlflow.set_experiment("churn-notebook")
    with mlflow.start_run():
        model = GradientBoostingClassifier(max_depth=2, random_state=0).fit(X, y)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=X.head(5),
            serialization_format="cloudpickle",  # MLflow's default (skops) refuses tree models
            pip_requirements=[f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}"],
        )
    version = mlflow.register_model(info.model_uri, "churn-notebook").version
    mlflow.MlflowClient().set_registered_model_alias("churn-notebook", "candidate", version)
    return f"models:/churn-notebook/{version} ({info.model_uri}) is churn-notebook@candidate"


if __name__ == "__main__":
    print(main())
