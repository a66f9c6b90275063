"""``read_sql``: the SQL loader ``core.sources`` is given in Airflow, through a connection's DB-API hook.

Any connection whose hook is a common-sql ``DbApiHook`` works (PostgreSQL, MySQL, Snowflake, BigQuery,
SQLite, ...): ``Connection.get_hook()`` picks the provider's hook and its ``get_df`` runs the query. Errors
are ``DataError``s that name the connection id and never its credentials: the password is registered with
``core.redaction`` and removed from any driver message that might quote it (Airflow masks it in task logs
too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_saga.core.errors import DataError
from airflow_saga.core.redaction import redact, register_secret

if TYPE_CHECKING:
    import pandas as pd


def read_sql(conn_id: str, query: str) -> pd.DataFrame:
    """Run ``query`` on Airflow connection ``conn_id``; return the result as a pandas DataFrame."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise DataError(f"data_source: Airflow connection {conn_id!r} does not exist") from exc
    register_secret(conn.password)
    try:
        hook = conn.get_hook()
    except Exception as exc:
        raise DataError(
            f"data_source: connection {conn_id!r} (type {conn.conn_type!r}) has no usable hook: {redact(exc)}"
        ) from None
    run = getattr(hook, "get_df", None)
    if run is None:
        raise DataError(
            f"data_source: connection {conn_id!r} (type {conn.conn_type!r}) is not a SQL connection; "
            f"its hook {type(hook).__name__} has no get_df (a common-sql DbApiHook is needed)"
        )
    try:
        return run(query, df_type="pandas")
    except Exception as exc:  # the driver's own error types differ per database
        first = redact(exc).strip().splitlines()
        raise DataError(
            f"data_source: SQL query on connection {conn_id!r} failed: {type(exc).__name__}: "
            f"{' '.join(first[:3])[:1000]}"
        ) from None
