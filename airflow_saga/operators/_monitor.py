"""Helpers shared by the monitoring operators: capture directory, window bounds, number coercion."""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

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


def monitor_window(
    context: Context, start: Any, end: Any, hours: Any
) -> tuple[dt.datetime, dt.datetime, str]:
    """The window a monitor run judges, and where it came from.

    An explicit ``start`` (up to ``end``, or up to now) wins. Otherwise a scheduled run (or a backfill)
    judges its data interval, and a manual run given a logical date (whose interval Airflow leaves empty)
    the ``window_hours`` before it: either way re-running it later judges exactly the same traffic. A run
    without a logical date (Airflow 3's default for REST and UI triggers) judges the last
    ``window_hours`` up to ``end`` or now.
    """
    from airflow_saga.core.capture_scan import to_utc

    def given(value: Any) -> bool:
        return value is not None and str(value).strip() != ""

    if given(start):
        s, e = resolve_window(start, end, hours)
        return s, e, "params"
    lo, hi = _plain(context.get("data_interval_start")), _plain(context.get("data_interval_end"))
    logical = _plain(context.get("logical_date"))
    if not given(end) and lo is not None and hi is not None and logical is not None:
        s, e = to_utc(lo), to_utc(hi)
        if s is not None and e is not None and s < e:
            return s, e, "data_interval"
        # a manual run given a logical date has an empty interval [L, L): judge the window_hours before L
        s, e = resolve_window(None, to_utc(logical), hours)
        return s, e, "logical_date"
    s, e = resolve_window(start, end, hours)
    return s, e, "window_hours"


def _plain(value: Any) -> dt.datetime | None:
    """A plain aware ``datetime`` in UTC from Airflow's context values (pendulum DateTimes)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return dt.datetime(*value.timetuple()[:6], value.microsecond, tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(value.timestamp(), dt.UTC)
