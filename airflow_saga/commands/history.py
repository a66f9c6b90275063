"""``saga history``: the ordered promotion history of a registered model."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from airflow_saga.commands._governance import add_common

    p = subparsers.add_parser("history", help="print the promotion history of a registered model")
    p.add_argument("model", help="registered model name")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from airflow_saga.commands._governance import client
    from airflow_saga.core import lineage_query as lq
    from airflow_saga.core import promotion

    c = client(args)
    entries = promotion.history(c, args.model)
    if args.json:
        print(
            lq.dumps({"model": args.model, "aliases": promotion.aliases(c, args.model), "history": entries})
        )
    else:
        current = promotion.aliases(c, args.model)
        print(
            f"Model {args.model}: "
            + (", ".join(f"@{a} -> v{v}" for a, v in sorted(current.items())) or "no aliases")
        )
        print(lq.format_history(entries))
    return 0
