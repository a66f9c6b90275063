"""Shared bits of the governance subcommands (lineage, history, approve, promote, rollback)."""

from __future__ import annotations

import getpass
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from mlflow import MlflowClient


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


def add_by(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", default=None, help="who is acting (default: $SAGA_USER or your login name)")


def who(args: argparse.Namespace) -> str:
    return args.by or os.environ.get("SAGA_USER") or getpass.getuser()


def client(args: argparse.Namespace) -> MlflowClient:
    """A bounded client for the URI given on the command line or in the environment."""
    from airflow_saga.core.mlflow_client import build_client, settings_from_env

    return build_client(settings_from_env(args.tracking_uri))
