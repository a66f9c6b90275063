"""A real ``mlflow server`` on 127.0.0.1 with its own backend store and proxied artifacts.

``auth_admin_password`` starts MLflow's ``basic-auth`` app: its user store and admin password go into a
private (0600) config file next to the server's data, never into its command line or environment.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from airflow_saga.devstack.procs import VENV_BIN, free_port, spawn, stop, wait_http


class MlflowServer:
    def __init__(
        self,
        root: Path,
        backend_uri: str | None = None,
        port: int | None = None,
        allowed_hosts: str | None = None,
        db_pool: tuple[int, int] | None = (10, 10),
        auth_admin_password: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.backend_uri = backend_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.root / "mlflow-server.log"
        self.allowed_hosts = allowed_hosts
        # (pool_size, max_overflow) of each of the server's SQLAlchemy engines (tracking and registry) on
        # PostgreSQL; None keeps MLflow's defaults (5, 10). SQLite ignores it.
        self.db_pool = db_pool
        self.auth_admin_password = auth_admin_password
        self.proc = None

    def command(self) -> list[str]:
        cmd = [
            str(VENV_BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if self.allowed_hosts:
            cmd += ["--allowed-hosts", self.allowed_hosts]
        if self.auth_admin_password:
            cmd += ["--app-name", "basic-auth"]
        return cmd

    def _auth_config(self) -> Path:
        """MLflow's basic-auth ini: users in a SQLite file of this server, no permission unless granted."""
        path = self.root / "basic_auth.ini"
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{self.root / 'basic_auth.db'}\n"
            "admin_username = admin\n"
            f"admin_password = {self.auth_admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 60\n"
        )
        return path

    def start(self, timeout: float = 180) -> MlflowServer:
        env = dict(os.environ)
        env.pop("MLFLOW_TRACKING_URI", None)
        env.update(
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # halves start time and memory (no huey workers)
            MLFLOW_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="1",
            MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
            MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        )
        for key in ("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"):
            env.pop(key, None)
        if self.db_pool is not None and self.backend_uri.startswith("postgresql"):
            env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] = str(self.db_pool[0])
            env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"] = str(self.db_pool[1])
        if self.auth_admin_password:
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self._auth_config())
            key = self.root / "flask_secret"
            if not key.exists():
                key.touch(mode=0o600)
                key.write_text(secrets.token_urlsafe(32))
            # Flask's session key; MLflow reads it only from the environment.
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = key.read_text()
        self.proc = spawn(self.command(), self.log, env)
        wait_http(f"{self.url}/health", timeout, self.proc, self.log)
        # /health answers before the API is usable; wait for a real API call too (401 = up, with auth).
        ok = (200, 401) if self.auth_admin_password else (200,)
        api = f"{self.url}/api/2.0/mlflow/experiments/search?max_results=1"
        wait_http(api, 60, self.proc, self.log, ok=ok)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
