"""``saga lineage``: the recorded story of a model version, or the reverse look-ups."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from airflow_saga.commands._governance import add_common

    p = subparsers.add_parser(
        "lineage",
        help="print a version's lineage, or find versions by dataset digest / DAG run",
        description="saga lineage MODEL [VERSION | @alias]  |  saga lineage MODEL [@alias] --at TIME  |  "
        "saga lineage --dataset DIGEST [--model M]  |  saga lineage --dag-run DAG_ID RUN_ID",
    )
    p.add_argument("model", nargs="?", help="registered model name")
    p.add_argument("version", nargs="?", help="version number or @alias (default: @champion, else latest)")
    p.add_argument("--dataset", metavar="DIGEST", help="versions trained on this dataset content digest")
    p.add_argument(
        "--model", dest="model_filter", metavar="M", help="with --dataset: only versions of this model"
    )
    p.add_argument(
        "--dag-run", nargs=2, metavar=("DAG_ID", "RUN_ID"), help="versions from this Airflow DAG run"
    )
    p.add_argument(
        "--at",
        metavar="TIME",
        help="time travel: which version held each alias at TIME, and the history entry that put it "
        "there; with @alias, also that version's lineage. TIME is ISO-8601 (2026-12-01T14:30:00Z, "
        "+01:00 offsets; no zone means UTC) or epoch milliseconds",
    )
    add_common(p)
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from airflow_saga.commands._governance import client
    from airflow_saga.core import lineage_query as lq

    if args.dataset and args.dag_run:
        args._parser.error("use either --dataset or --dag-run, not both")
    if args.model_filter and not args.dataset:
        args._parser.error("--model filters --dataset; for one model's lineage use: saga lineage MODEL")
    if args.model_filter and args.model and args.model != args.model_filter:
        args._parser.error(f"two model names given: {args.model!r} and --model {args.model_filter!r}")
    if args.at is not None and (args.dataset or args.dag_run):
        args._parser.error("--at goes with MODEL [@alias], not with --dataset or --dag-run")
    if args.dataset or args.dag_run:
        c = client(args)
        if args.dataset:
            rows = lq.versions_by_dataset(c, args.dataset, name=args.model_filter or args.model)
        else:
            rows = lq.versions_by_dag_run(c, *args.dag_run)
        print(lq.dumps(rows) if args.json else lq.format_versions(rows))
        return 0
    if not args.model:
        args._parser.error("give MODEL [VERSION|@alias], --dataset DIGEST or --dag-run DAG_ID RUN_ID")
    if args.at is not None:
        return _at(args)
    story = lq.lineage(client(args), args.model, args.version)
    print(lq.dumps(story) if args.json else lq.format_lineage(story))
    return 0


def _at(args: argparse.Namespace) -> int:
    from airflow_saga.commands._governance import client
    from airflow_saga.core import lineage_query as lq
    from airflow_saga.core.alias_history import ALIASES

    alias = None
    if args.version is not None:
        alias = args.version.removeprefix("@")
        if not args.version.startswith("@") or alias not in ALIASES:
            args._parser.error(
                f"--at answers which version held an alias: give {' or '.join('@' + a for a in ALIASES)}"
                f", not {args.version!r}"
            )
    c = client(args)
    answer = lq.aliases_at(c, args.model, args.at, field="--at")
    held = answer["aliases"][alias]["version"] if alias else None
    story = lq.lineage(c, args.model, held) if held else None
    if args.json:
        print(lq.dumps({**answer, "lineage": story} if alias else answer))
        return 0
    print(lq.format_aliases_at(answer))
    if alias:
        print()
        print(lq.format_lineage(story) if story else f"@{alias} was held by no version at {answer['at']}")
    return 0
