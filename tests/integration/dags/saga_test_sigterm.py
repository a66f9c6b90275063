"""A training task that Airflow terminates while its MLflow run is open.

``saga_test_sigterm`` is ``@task.saga_train`` returning an estimator that is slow to serialise: the first
time it is pickled (when the model is logged, inside the training run) it touches the file named by
``SAGA_TEST_TRAINING_MARKER`` and waits, so the test can send SIGTERM to the process that runs the task, as
Airflow's supervisor does on a timeout, a "mark failed" or a worker shutdown, while the run is RUNNING.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

with DAG(
    dag_id="saga_test_sigterm",
    schedule=None,
    params={"model_name": Param("saga-test-sigterm", type="string")},
    tags=["test"],
):

    @task.saga_train(
        model_name="{{ params.model_name }}", data_source="sklearn:breast_cancer", target="target"
    )
    def slow_to_save(X, y):
        """A real estimator whose first pickling (the model upload, run open) signals and then hangs."""
        from sklearn.linear_model import LogisticRegression

        class SlowToSave(LogisticRegression):
            def __getstate__(self):
                import os
                import time
                from pathlib import Path

                marker = Path(os.environ["SAGA_TEST_TRAINING_MARKER"])
                if not marker.exists():
                    marker.touch()
                    time.sleep(600)
                return super().__getstate__()

        return SlowToSave(max_iter=3000).fit(X, y)

    slow_to_save()
