"""Helpers shared by the monitoring operators: capture directory, window bounds, number coercion."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

DEFAULT_CAPTURE_DIR = ".saga/capture"


def default_capture_dir() -> str:
    """``SAGA_CAPTURE_DIR``, else ``.saga/capture`` (the gateway's and the CLI's shared default)."""
    return os.environ.get("SAGA_CAPTURE_DIR") or DEFAULT_CAPTURE_DIR


def as_number(value: Any, field: str, *, integer: bool = False, allow_none: bool = False) -> Any:
    if value is None or value == "":
        if allow_none:
            return None
        raise AirflowFailException(f"{field} is required")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise AirflowFailException(f"{field} must be a number, got {value!r}") from exc
    if integer:
        if number != int(number):
            raise AirflowFailException(f"{field} must be a whole number, got {value!r}")
        return int(number)
    return number


def resolve_window(start: Any, end: Any, hours: Any) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC: explicit bounds win; otherwise the last ``hours`` hours up to ``end`` or now."""
    from airflow_saga.core.capture_scan import to_utc

    try:
        e = to_utc(end) or dt.datetime.now(dt.UTC)
        s = to_utc(start)
    except ValueError as exc:
        raise AirflowFailException(f"window bounds must be ISO-8601 timestamps: {exc}") from exc
    if s is None:
        h = as_number(hours, "window_hours")
        if h <= 0:
            raise AirflowFailException(f"window_hours must be positive, got {hours!r}")
        s = e - dt.timedelta(hours=h)
    if s >= e:
        raise AirflowFailException(f"window start {s.isoformat()} is not before its end {e.isoformat()}")
    return s, e
