"""``saga promote``: move the champion or challenger alias to a version, recorded in the history."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from airflow_saga.commands._governance import add_by, add_common

    p = subparsers.add_parser("promote", help="point @champion / @challenger at a version")
    p.add_argument("model", help="registered model name")
    p.add_argument("version", help="version number")
    p.add_argument("--alias", choices=("champion", "challenger", "auto"), default="champion")
    p.add_argument("--reason", required=True, help="why (recorded in the promotion history)")
    add_by(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from airflow_saga.commands._governance import client, policy, who
    from airflow_saga.core import lineage_query as lq
    from airflow_saga.core import promotion

    res = promotion.promote(
        client(args),
        args.model,
        args.version,
        args.alias,
        by=who(args),
        reason=args.reason,
        policy=policy(args, args.model),
    )
    if args.json:
        print(lq.dumps(res.as_dict()))
    elif res.changed:
        print(f"Model {args.model}: @{res.alias} {res.previous or '-'} -> {res.version}")
    else:
        print(f"Model {args.model}: version {res.version} already holds @{res.alias}; nothing changed")
    return 0
