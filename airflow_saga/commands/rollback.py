"""``saga rollback``: put @champion back on the previous champion or on ``--to VERSION``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from airflow_saga.commands._governance import add_by, add_common

    p = subparsers.add_parser(
        "rollback", help="roll @champion back to the previous (or a given) Approved version"
    )
    p.add_argument("model", help="registered model name")
    p.add_argument(
        "--to", dest="target", default=None, help="target version (default: the previous champion)"
    )
    p.add_argument(
        "--reason", required=True, help="why (tagged on the rolled-back version and in the history)"
    )
    add_by(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from airflow_saga.commands._governance import client, policy, who
    from airflow_saga.core import lineage_query as lq
    from airflow_saga.core import promotion

    res = promotion.rollback(
        client(args),
        args.model,
        args.target,
        by=who(args),
        reason=args.reason,
        policy=policy(args, args.model),
    )
    if args.json:
        print(lq.dumps(res.as_dict()))
    else:
        print(f"Model {args.model}: @champion rolled back {res.previous or '-'} -> {res.version}")
    return 0
