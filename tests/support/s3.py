"""A real S3-compatible server on loopback (moto's server mode) for capture and MLflow-artifact tests.

Clients find it the way they would find MinIO in production: through the AWS environment variables
(``AWS_ENDPOINT_URL`` for pyarrow through ``core.capture_store``, boto3 and the AWS CLI;
``MLFLOW_S3_ENDPOINT_URL`` for MLflow's artifact client) and dummy credentials.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from airflow_saga.devstack.procs import VENV_BIN, free_port, spawn, stop, wait_http


class MotoS3:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.root / "moto.log"
        self.proc = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "saga-test",
            "AWS_SECRET_ACCESS_KEY": "saga-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.url,
            "MLFLOW_S3_ENDPOINT_URL": self.url,
        }

    def start(self) -> MotoS3:
        cmd = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = spawn(cmd, self.log, None)
        wait_http(self.url + "/moto-api/", 60, self.proc, self.log)
        return self

    def bucket(self, prefix: str = "saga") -> str:
        """A new empty bucket (S3 names: 3-63 lowercase characters)."""
        import pyarrow.fs as pafs

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        fs = pafs.S3FileSystem(
            access_key=self.env["AWS_ACCESS_KEY_ID"], secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=self.url, region="us-east-1", allow_bucket_creation=True,
        )  # fmt: skip
        fs.create_dir(name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(
            access_key=self.env["AWS_ACCESS_KEY_ID"], secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=self.url, region="us-east-1",
        )  # fmt: skip
        sel = pafs.FileSelector(f"{bucket}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True)
        return sorted(i.path for i in fs.get_file_info(sel) if i.type == pafs.FileType.File)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
