"""Shared bits of the governance subcommands (lineage, history, approve, promote, rollback)."""

from __future__ import annotations

import getpass
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from mlflow import MlflowClient


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


def add_by(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", default=None, help="who is acting (default: $SAGA_USER or your login name)")
    parser.add_argument(
        "--policy",
        default=None,
        help="governance policy: a JSON file or JSON text (default: the Airflow Variable "
        "saga_governance_policy when Airflow is installed, else $SAGA_GOVERNANCE_POLICY)",
    )


def policy(args: argparse.Namespace, model: str) -> Any:
    """The policy for ``model``: --policy, else the Airflow Variable (if Airflow is here), else None (core's
    default). Users and roles are checked against Airflow's auth manager when Airflow is installed."""
    from airflow_saga.core.errors import PolicyError

    given = getattr(args, "policy", None)
    if given and not given.lstrip().startswith("{"):
        try:
            with open(given, encoding="utf-8") as fh:
                given = fh.read()
        except OSError as exc:
            msg = f"--policy {args.policy!r} cannot be read: {exc}"
            raise PolicyError(msg, rule="configuration") from None
    try:
        from airflow_saga import policies
    except ImportError:  # no Airflow: validate what we can without its user directory
        if not given:
            return None
        from airflow_saga.core.policy import ConfigResolver

        return ConfigResolver(given, source="--policy")(model)
    if given:
        return policies.resolver(given, "--policy")(model)
    return policies.policy_for(model, metastore=True)


def who(args: argparse.Namespace) -> str:
    return args.by or os.environ.get("SAGA_USER") or getpass.getuser()


def client(args: argparse.Namespace) -> MlflowClient:
    """A bounded client for the URI given on the command line or in the environment."""
    from airflow_saga.core.mlflow_client import build_client, settings_from_env

    return build_client(settings_from_env(args.tracking_uri))
