"""MlflowHook: an Airflow connection of type ``mlflow`` -> a bounded ``MlflowClient``.

The hook owns the connection-to-settings mapping only; the HTTP bounding and credential handling live in
``airflow_saga.core.mlflow_client`` so the CLI and the gateway behave exactly like Airflow tasks.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_saga.core.errors import MlflowConfigError
from airflow_saga.core.mlflow_client import MlflowSettings, build_client, ping
from airflow_saga.core.redaction import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient


def settings_from_connection(conn: Any) -> MlflowSettings:
    """Map an Airflow Connection to MLflow settings.

    ``host`` may be a full URL (``http://mlflow:5000``) or a bare host with ``schema``/``port``; an
    ``extra.tracking_uri`` overrides both, which is how a ``sqlite:///`` or ``databricks`` URI is given.
    Bounds (``call_timeout``, ``connect_timeout``, ``read_timeout``, ``max_retries``, ``backoff_factor``)
    come from the extra; a value that is not a number is refused naming the connection and the key.
    """
    extra = conn.extra_dejson or {}
    if not isinstance(extra, dict):
        raise MlflowConfigError(f"Connection {conn.conn_id!r}: extra must be a JSON object")
    tracking_uri = extra.get("tracking_uri")
    if not tracking_uri:
        host = (conn.host or "").strip()
        if not host:
            raise MlflowConfigError(
                f"Connection {conn.conn_id!r}: set host (e.g. http://127.0.0.1:5000) or extra.tracking_uri"
            )
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}"
        if conn.port and host.count(":") < 2:
            host = f"{host}:{conn.port}"
        tracking_uri = host
    kwargs: dict[str, Any] = {}
    for key, cast in (
        ("max_retries", int),
        ("backoff_factor", float),
        ("connect_timeout", float),
        ("read_timeout", float),
        ("call_timeout", float),
    ):
        if extra.get(key) is not None:
            try:
                kwargs[key] = cast(extra[key])
            except (TypeError, ValueError):
                raise MlflowConfigError(
                    f"Connection {conn.conn_id!r}: extra.{key} must be a number, got {extra[key]!r}"
                ) from None
    try:
        return MlflowSettings(
            tracking_uri=str(tracking_uri).rstrip("/"),
            registry_uri=extra.get("registry_uri") or None,
            username=conn.login or None,
            password=conn.password or None,
            token=extra.get("token") or None,
            ui_url=extra.get("ui_url") or None,
            **kwargs,
        )
    except MlflowConfigError as exc:
        raise MlflowConfigError(f"Connection {conn.conn_id!r}: {exc}") from None


class MlflowHook(BaseHook):
    """Interact with an MLflow tracking server and model registry.

    :param mlflow_conn_id: Airflow connection of type ``mlflow``.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def settings(self) -> MlflowSettings:
        return settings_from_connection(self.get_connection(self.mlflow_conn_id))

    def get_conn(self) -> MlflowClient:
        """A client bound to this connection; fails within seconds, naming the URI, if MLflow is down."""
        return build_client(self.settings)

    @cached_property
    def client(self) -> MlflowClient:
        return self.get_conn()

    def test_connection(self) -> tuple[bool, str]:
        try:
            ping(self.settings)
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            return False, redact(f"{type(exc).__name__}: {exc}")
        return True, redact(f"Connected to MLflow at {self.settings.tracking_uri}")

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema"],
            "relabeling": {"host": "Tracking URI", "login": "Username", "password": "Password"},
            "placeholders": {
                "host": "http://mlflow:5000",
                "extra": '{"registry_uri": null, "token": null, "ui_url": null, "call_timeout": 20, '
                '"max_retries": 3, "connect_timeout": 5}',
            },
        }
