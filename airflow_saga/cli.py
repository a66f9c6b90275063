"""The ``saga`` command.

Each subcommand lives in ``airflow_saga.commands.<name>`` and exposes ``register(subparsers)``; this keeps
``saga --help`` fast (subcommand modules import heavy libraries only when they run) and lets features add
commands without touching one shared file.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("demo", "serve", "lineage", "history", "approve", "promote", "rollback")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saga", description="airflow-saga: ML model lifecycle on Airflow + MLflow"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"airflow_saga.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"airflow_saga.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from airflow_saga.core.errors import SagaError
    from airflow_saga.core.redaction import redact

    try:
        return int(args.func(args) or 0)
    except SagaError as exc:
        print(f"saga {args.command}: error: {redact(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
