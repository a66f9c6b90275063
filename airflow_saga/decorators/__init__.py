"""TaskFlow decorators of the provider: ``@task.saga_train`` (see ``airflow_saga.decorators.saga_train``).

Registered through ``get_provider_info()["task-decorators"]``, so ``from airflow.sdk import task`` finds it
as ``task.saga_train``; ``from airflow_saga.decorators import saga_train`` works too.
"""

from __future__ import annotations

from airflow_saga.decorators.saga_train import saga_train, saga_train_task

__all__ = ["saga_train", "saga_train_task"]
