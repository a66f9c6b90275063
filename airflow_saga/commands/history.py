"""``saga history``: the ordered promotion history of a registered model."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from airflow_saga.commands._governance import add_common

    p = subparsers.add_parser(
        "history",
        help="print the promotion history of a registered model, and alias changes made outside saga",
    )
    p.add_argument("model", help="registered model name")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from airflow_saga.commands._governance import client
    from airflow_saga.core import alias_history as H
    from airflow_saga.core import lineage_query as lq

    c = client(args)
    state = H.read_state(c, args.model)
    entries = H.history_of(c, state)
    unrecorded = H.unrecorded_in(c, state)
    gaps = H.history_gaps(entries)
    if args.json:
        print(
            lq.dumps(
                {
                    "model": args.model,
                    "aliases": state.aliases,
                    "history": entries,
                    "unrecorded": [u.as_dict() for u in unrecorded],
                    "gaps": gaps,
                }
            )
        )
        return 0
    print(
        f"Model {args.model}: "
        + (", ".join(f"@{a} -> v{v}" for a, v in sorted(state.aliases.items())) or "no aliases")
    )
    print(lq.format_history(entries))
    for g in gaps:
        print(lq.format_gap(g))
    for u in unrecorded:
        print(f"UNRECORDED CHANGE: {u.message()}")
    return 0
