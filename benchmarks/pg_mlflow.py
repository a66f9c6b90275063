"""An MLflow server on a private PostgreSQL database, both removed on exit: the benchmarks' contention stack.

Why PostgreSQL: the governance figures (storms, history size) are about a shared registry, which in
production is MLflow on PostgreSQL; SQLite serialises writers and would measure itself instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

PG = os.environ.get("SAGA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")


class PgMlflow:
    """``with PgMlflow("saga_bench_gov") as stack``: ``stack.server.url``, ``stack.db_uri``, ``stack.client()``."""

    def __init__(self, prefix: str = "saga_bench") -> None:
        self.prefix = prefix

    def __enter__(self) -> PgMlflow:
        import psycopg2

        from tests.support.procs import MlflowServer

        self.db = f"{self.prefix}_{uuid.uuid4().hex[:10]}"
        self.admin = psycopg2.connect(f"{PG}/postgres")
        self.admin.autocommit = True
        self.admin.cursor().execute(f'CREATE DATABASE "{self.db}"')
        self.db_uri = f"{PG}/{self.db}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix.replace('_', '-')}-"))
        self.server = MlflowServer(self.tmp / "mlflow", backend_uri=self.db_uri, db_pool=None).start(
            timeout=240
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.admin.cursor().execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        self.admin.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def client(self) -> Any:
        from airflow_saga.core.mlflow_client import MlflowSettings, build_client

        return build_client(MlflowSettings(tracking_uri=self.server.url))
