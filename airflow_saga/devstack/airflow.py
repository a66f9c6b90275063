"""Airflow's embedded topology as processes: what ``airflow standalone`` runs, on loopback only.

``airflow standalone`` binds its log servers on all interfaces with no option to change it, so we start
the same components ourselves (db migrate, api-server on 127.0.0.1, scheduler and triggerer with
``--skip-serve-logs``, dag-processor). The same class runs the CeleryExecutor topology when given a
PostgreSQL URL and a Redis broker (plus a Celery worker).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from airflow_saga.devstack.procs import VENV_BIN, bytecode_env, free_port, spawn, stop, tail, wait_http


class AirflowStack:
    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        *,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        sql_alchemy_conn: str | None = None,
        celery_broker_url: str | None = None,
        celery_result_backend: str | None = None,
        users: dict[str, str] | None = None,
        roles: dict[str, str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags_folder = Path(dags_folder)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.users = users or {"admin": "admin"}
        self.roles = roles or {}  # SimpleAuthManager role per user (viewer, user, op, admin); default admin
        self.celery = celery_broker_url is not None
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = self._env(extra_env or {}, sql_alchemy_conn, celery_broker_url, celery_result_backend)

    def _env(
        self, extra: dict[str, str], sql: str | None, broker: str | None, backend: str | None
    ) -> dict[str, str]:
        pw_file = self.home / "passwords.json"
        pw_file.write_text(json.dumps(self.users))
        secret_file = self.home / "secrets.json"
        if secret_file.exists():
            s = json.loads(secret_file.read_text())
        else:
            from cryptography.fernet import Fernet

            s = {
                "jwt": secrets.token_urlsafe(48),
                "api": secrets.token_urlsafe(32),
                "fernet": Fernet.generate_key().decode(),
            }
            secret_file.write_text(json.dumps(s))
        env = dict(os.environ)
        env.update(bytecode_env())
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # scheduled monitors (drift, shadow) stay off until a test or a user unpauses them
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if broker else "LocalExecutor",
                "AIRFLOW__CORE__FERNET_KEY": s["fernet"],
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                    f"{u}:{self.roles.get(u, 'admin')}" for u in self.users
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pw_file),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql or f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": s["api"],
                "AIRFLOW__API_AUTH__JWT_SECRET": s["jwt"],
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                # Scheduler /health, as probed by the compose health check; on loopback here.
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "1",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            }
        )
        if broker:
            if not sql or sql.startswith("sqlite"):
                raise ValueError("CeleryExecutor needs a server database (PostgreSQL), not SQLite")
            env["AIRFLOW__CELERY__BROKER_URL"] = broker
            # Celery's result backend is SQLAlchemy: "db+" and a driver-less postgresql:// URL.
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = backend or "db+" + sql.replace("+psycopg2", "")
            env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = "2"
            env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"] = "21600"
        env.update(extra)
        return env

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _start(self, name: str, *args: str) -> None:
        self.procs[name] = spawn(
            [str(VENV_BIN / "airflow"), *args], self.home / "logs" / f"{name}.log", self.env
        )

    def process_commands(self) -> dict[str, list[str]]:
        """The ``airflow`` subcommands this topology runs, one process each. docker-compose.yaml runs the same
        ones (its test compares them); here log servers are skipped because everything shares one disk."""
        cmds = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port)],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }
        if self.celery:
            cmds["celery-worker"] = ["celery", "worker", "--concurrency", "2", "--skip-serve-logs"]
        return cmds

    def start(self, timeout: float = 240) -> AirflowStack:
        res = self.airflow("db", "migrate")
        if res.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        for name, args in self.process_commands().items():
            self._start(name, *args)
        wait_http(
            f"{self.url}/api/v2/version",
            timeout,
            self.procs["api-server"],
            self.home / "logs" / "api-server.log",
            ok=(200,),
        )
        self.wait_healthy(timeout)
        if self.celery:
            self.wait_celery_worker(timeout)
        return self

    @property
    def scheduler_health_url(self) -> str:
        return f"http://127.0.0.1:{self.env['AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT']}/health"

    def log_path(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def wait_celery_worker(self, timeout: float) -> None:
        """``/monitor/health`` does not cover Celery workers; the worker logs ``celery@host ready.`` once it
        consumes from the broker, which is cheaper to watch than ``celery inspect ping`` (imports Airflow)."""
        deadline = time.monotonic() + timeout
        proc, log = self.procs["celery-worker"], self.log_path("celery-worker")
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker exited {proc.returncode}:\n{tail(log)}")
            if log.exists() and " ready." in log.read_text(errors="replace"):
                return
            time.sleep(1)
        raise TimeoutError(f"Celery worker not ready after {timeout}s:\n{tail(log)}")

    def wait_healthy(self, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(
                        f"airflow {name} exited {p.returncode}:\n{tail(self.home / 'logs' / f'{name}.log')}"
                    )
            try:
                last = requests.get(f"{self.url}/api/v2/monitor/health", timeout=3).json()
                parts = [
                    last.get(k, {}).get("status")
                    for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                ]
                if all(p == "healthy" for p in parts):
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow not healthy after {timeout}s: {last}")

    def stop(self) -> None:
        for name in ("celery-worker", "triggerer", "dag-processor", "scheduler", "api-server"):
            p = self.procs.pop(name, None)
            if p is not None:
                stop(p)

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{tail(self.home / 'logs' / f'{n}.log', 3000)}" for n in self.procs)
