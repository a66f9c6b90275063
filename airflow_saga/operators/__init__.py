"""Thin Airflow operators over ``airflow_saga.core``.

This package's modules import only Airflow and the standard library at top level, so DAG files that import
them parse in milliseconds; ML libraries are imported inside ``execute()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "ApproveModelOperator",
    "EvaluateModelOperator",
    "PromoteModelOperator",
    "QualityGateOperator",
    "RegisterModelOperator",
    "RollbackModelOperator",
    "TrainFunctionOperator",
    "TrainModelOperator",
]

_LAZY = {
    "TrainModelOperator": "airflow_saga.operators.train",
    "TrainFunctionOperator": "airflow_saga.operators.train",
    "EvaluateModelOperator": "airflow_saga.operators.evaluate",
    "QualityGateOperator": "airflow_saga.operators.gate",
    "RegisterModelOperator": "airflow_saga.operators.register",
    "PromoteModelOperator": "airflow_saga.operators.promote",
    "RollbackModelOperator": "airflow_saga.operators.rollback",
    "ApproveModelOperator": "airflow_saga.operators.approval",
}

if TYPE_CHECKING:
    from airflow_saga.operators.approval import ApproveModelOperator
    from airflow_saga.operators.evaluate import EvaluateModelOperator
    from airflow_saga.operators.gate import QualityGateOperator
    from airflow_saga.operators.promote import PromoteModelOperator
    from airflow_saga.operators.register import RegisterModelOperator
    from airflow_saga.operators.rollback import RollbackModelOperator
    from airflow_saga.operators.train import TrainFunctionOperator, TrainModelOperator


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
