"""Which window a monitor run judges: data interval, logical date, Params, or the last hours."""

from __future__ import annotations

import datetime as dt

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_saga.operators._monitor import monitor_window

UTC = dt.UTC
L = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_scheduled_run_judges_its_data_interval_whatever_the_clock():
    ctx = {"logical_date": L, "data_interval_start": L - dt.timedelta(hours=1), "data_interval_end": L}
    assert monitor_window(ctx, "", "", 24) == (L - dt.timedelta(hours=1), L, "data_interval")
    assert monitor_window(ctx, None, None, 1) == monitor_window(ctx, "", "", 1)


def test_a_manual_run_with_a_logical_date_judges_the_hours_before_it():
    ctx = {"logical_date": L, "data_interval_start": L, "data_interval_end": L}  # Airflow 3: [L, L)
    assert monitor_window(ctx, "", "", 2) == (L - dt.timedelta(hours=2), L, "logical_date")


def test_params_win_and_runs_without_a_logical_date_look_back_from_now():
    ctx = {"logical_date": L, "data_interval_start": L - dt.timedelta(hours=1), "data_interval_end": L}
    s, e, src = monitor_window(ctx, "2026-01-01T00:00:00Z", "2026-01-01T06:00:00+00:00", 1)
    assert (s, e, src) == (
        dt.datetime(2026, 1, 1, tzinfo=UTC),
        dt.datetime(2026, 1, 1, 6, tzinfo=UTC),
        "params",
    )
    before = dt.datetime.now(UTC)
    s, e, src = monitor_window({"logical_date": None}, "", "", 3)
    assert src == "window_hours" and e >= before and e - s == dt.timedelta(hours=3)


@pytest.mark.parametrize(
    ("start", "end", "hours", "match"),
    [
        ("", "", -1, "window_hours must be positive"),
        ("", "", "soon", "window_hours must be a number"),
        ("yesterday", "", 1, "ISO-8601"),
        ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", 1, "is not before its end"),
    ],
)
def test_bad_windows_fail_clearly(start, end, hours, match):
    with pytest.raises(AirflowFailException, match=match):
        monitor_window({}, start, end, hours)


def test_airflow_context_values_are_pendulum_datetimes():
    import pendulum

    lp = pendulum.datetime(2026, 3, 1, 12, tz="UTC")
    ctx = {"logical_date": lp, "data_interval_start": lp, "data_interval_end": lp}
    s, e, src = monitor_window(ctx, "", "", 1)
    assert (s, e, src) == (L - dt.timedelta(hours=1), L, "logical_date")
    assert type(s) is dt.datetime and s.isoformat() == "2026-03-01T11:00:00+00:00"
