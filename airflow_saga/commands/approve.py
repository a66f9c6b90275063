"""``saga approve``: approve (or ``--reject``) a model version, recorded with via="api"."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from airflow_saga.commands._governance import add_by, add_common

    p = subparsers.add_parser("approve", help="approve or reject a model version")
    p.add_argument("model", help="registered model name")
    p.add_argument("version", help="version number")
    p.add_argument("--reject", action="store_true", help="reject instead of approve (revokes an approval)")
    p.add_argument("--comment", required=True, help="why (recorded in the approval log)")
    add_by(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from airflow_saga.commands._governance import client, policy, who
    from airflow_saga.core import approval
    from airflow_saga.core import lineage_query as lq
    from airflow_saga.core import tags as T

    status = T.REJECTED if args.reject else T.APPROVED
    mv = approval.set_status(
        client(args),
        args.model,
        args.version,
        status,
        by=who(args),
        comment=args.comment,
        via="api",
        policy=policy(args, args.model),
    )
    entry = approval.last_entry(mv)
    if args.json:
        print(
            lq.dumps(
                {
                    "model": args.model,
                    "version": str(mv.version),
                    "status": approval.get_status(mv),
                    "last": entry,
                }
            )
        )
    else:
        print(
            f"Model {args.model} version {mv.version}: {approval.get_status(mv)} "
            f"(by {entry.get('by')} at {entry.get('at')})"
        )
    return 0
