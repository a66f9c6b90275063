"""Small helpers shared by operators: coercing templated values and mapping core errors to Airflow's."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from collections.abc import Iterator


def as_dict(value: Any, field: str) -> dict[str, Any]:
    """Accept a dict, or a JSON string (what a non-native Jinja render or a UI form may give)."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise AirflowFailException(f"{field} must be a JSON object, got {value!r}: {exc}") from exc
        if isinstance(parsed, dict):
            return parsed
    raise AirflowFailException(f"{field} must be a JSON object, got {type(value).__name__}: {value!r}")


def as_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "1",
        "yes",
        "on",
        "false",
        "0",
        "no",
        "off",
        "",
    ):
        return value.strip().lower() in ("true", "1", "yes", "on")
    if isinstance(value, int):
        return bool(value)
    raise AirflowFailException(f"{field} must be a boolean, got {value!r}")


@contextlib.contextmanager
def saga_errors() -> Iterator[None]:
    """Bad input fails the task without retries (it will not fix itself); an unreachable MLflow retries.

    So does a governance change that could not get (or lost) the model's lock: nothing was written, and
    a retry usually finds the lock free.
    """
    from airflow_saga.core.errors import GovernanceBusyError, MlflowUnreachableError, SagaError

    try:
        yield
    except (MlflowUnreachableError, GovernanceBusyError) as exc:
        raise AirflowException(str(exc)) from exc
    except SagaError as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
