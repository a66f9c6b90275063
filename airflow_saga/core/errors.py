"""One exception type per failure family.

Messages name the model, version, field and value involved, because the reader of an Airflow task log
should not need a debugger to learn what was wrong with their input.
"""

from __future__ import annotations


class SagaError(Exception):
    """Base class for every error airflow-saga raises on purpose."""


class ParameterError(SagaError):
    """An operator parameter (often a rendered template) is malformed, too large or too deeply nested."""


class DataError(SagaError):
    """The data source is missing, empty, malformed, or lacks a requested column."""


class EstimatorError(SagaError):
    """The estimator spec cannot be resolved, built or fitted."""


class ConditionError(SagaError):
    """A quality-gate condition is malformed or refers to a metric the report lacks."""


class MetricError(SagaError):
    """A metric cannot be computed as asked: a user metric function failed or returned a non-number."""


class ModelError(SagaError):
    """A model URI does not resolve to a loadable MLflow model, or the model cannot score the data."""


class GateBlocked(SagaError):
    """The quality gate rejected the candidate (SageMaker's FailStep)."""

    def __init__(self, message: str, decision: dict | None = None) -> None:
        super().__init__(message)
        self.decision = decision or {}


class MlflowUnreachableError(SagaError):
    """The MLflow server could not be reached, or did not answer usably, within the configured bounds.

    Transient by nature (Airflow retries the task); the message names the server, with credentials
    redacted, the request and what happened.
    """


class MlflowConfigError(SagaError, ValueError):
    """An MLflow connection or its settings are invalid (names the field and the value)."""


class RegistryError(SagaError):
    """A registry operation was refused or failed (unknown model/version, bad state)."""


class ApprovalError(RegistryError):
    """An approval transition is invalid, was rejected, or timed out."""


class PromotionError(RegistryError):
    """A promotion or rollback was refused; nothing was changed."""


class AliasMovedError(PromotionError):
    """An alias change conditional on the alias's holder (``expect_holder=``) found another holder."""


class GovernanceBusyError(PromotionError):
    """The model's governance lock could not be had in time, or was lost before the change was complete.

    Unlike the other refusals this one is transient: nothing (more) was written, so retrying is safe and
    usually succeeds. Operators map it to a retryable failure.
    """


class PolicyError(RegistryError):
    """A governance policy refused a change (who may approve, four-eyes, protected aliases, ...).

    ``rule`` names the policy rule, so callers and the UI can show which one refused.
    """

    def __init__(self, message: str, rule: str = "policy") -> None:
        super().__init__(message)
        self.rule = rule


class CaptureError(SagaError):
    """Data-capture files or locations are invalid."""


class ServingError(SagaError):
    """The inference gateway is misconfigured or cannot load a model it must serve."""
