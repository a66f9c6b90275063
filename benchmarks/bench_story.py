"""Benchmark: what version descriptions and unrecorded-change checks cost governance, on MLflow + PostgreSQL.

Usage: python -m benchmarks.bench_story [--ops 20] [--rounds 2] [--sequential 30]

Starts MLflow on a private PostgreSQL database (default pool) and measures, in the same run:

* the governance storm (``tests.support.governance_worker``: promote / rollback / approve / reject /
  remove, one process each, released together) with ``SAGA_VERSION_DESCRIPTIONS=off`` (the reference)
  and ``on``, ``--rounds`` times each in ABBA order (so a load that drifts during the run cancels); the ratio of the medians of the per-operation p50 and of
  the storm's wall time, and the history's integrity in each storm;
* sequential promotions (one process, no contention; each displaces the previous champion, so two
  descriptions are rewritten): seconds per promotion with descriptions off and on, in ABBA order;
* ``alias_history.unrecorded_aliases`` (what the gateway calls on each load or swap) and
  ``lineage_query.aliases_at`` (time travel) per call, against ``get_registered_model`` (one request) as
  the reference.

The machine is shared: absolute seconds are noisy, compare the ratios, and note the load printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from typing import Any

from benchmarks.pg_mlflow import PgMlflow


def one_storm(stack: PgMlflow, n: int) -> dict[str, Any]:
    from airflow_saga.core import promotion
    from airflow_saga.core import tags as T
    from tests.support.governance_worker import check_history, run_storm, storm_ops
    from tests.support.registry import make_version

    client = stack.client()
    name = f"bench-story-{uuid.uuid4().hex[:6]}"
    approved = [make_version(client, name, status=T.APPROVED) for _ in range(10)]
    pending = [make_version(client, name) for _ in range(14)]
    promotion.promote(client, name, approved[0], T.CHAMPION, by="setup", reason="baseline")
    out = run_storm(stack.server.url, name, storm_ops(approved, pending, n), watcher_client=client)
    hist = check_history(client, name, out["results"], setup_entries=1)
    ok = sum(1 for r in out["results"] if r["outcome"] in ("ok", "refused"))
    intact = not (hist["lost"] or hist["extra"]) and hist["contiguous"] and hist["replay_matches_aliases"]
    return {"p50": out["p50"], "max": out["max"], "wall": out["wall"], "clean": ok, "intact": intact}


def sequential(stack: PgMlflow, n: int) -> float:
    from airflow_saga.core import promotion
    from airflow_saga.core import tags as T
    from tests.support.registry import make_version

    client = stack.client()
    name = f"bench-seq-{uuid.uuid4().hex[:6]}"
    versions = [make_version(client, name, status=T.APPROVED) for _ in range(n)]
    t0 = time.perf_counter()
    for v in versions:
        promotion.promote(client, name, v, T.CHAMPION, by="bench", reason="next")
    return (time.perf_counter() - t0) / n


def reads(stack: PgMlflow, repeat: int = 30) -> dict[str, float]:
    from airflow_saga.core import alias_history as H
    from airflow_saga.core import lineage_query as lq
    from airflow_saga.core import promotion
    from airflow_saga.core import tags as T
    from tests.support.registry import make_version

    client = stack.client()
    name = f"bench-reads-{uuid.uuid4().hex[:6]}"
    vs = [make_version(client, name, status=T.APPROVED) for _ in range(5)]
    for i in range(40):  # a 40-entry history
        promotion.promote(client, name, vs[i % 5], T.CHAMPION, by="bench", reason=f"#{i}")
    middle = promotion.history(client, name)[20]["at"]

    def timed(fn: Any) -> float:
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    return {
        "get_registered_model": timed(lambda: client.get_registered_model(name)),
        "unrecorded_aliases": timed(lambda: H.unrecorded_aliases(client, name)),
        "aliases_at": timed(lambda: lq.aliases_at(client, name, middle)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20, help="operations per storm")
    parser.add_argument("--rounds", type=int, default=2, help="storms per mode (off, on alternating)")
    parser.add_argument("--sequential", type=int, default=30, help="promotions timed one after another")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    load0 = os.getloadavg()[0]
    storms: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    seq: dict[str, float] = {}
    with PgMlflow("saga_bench_story") as stack:
        for i in range(args.rounds):
            for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):  # ABBA: load drift cancels
                os.environ["SAGA_VERSION_DESCRIPTIONS"] = mode
                storms[mode].append(one_storm(stack, args.ops))
                print(f"storm descriptions={mode}: {storms[mode][-1]}", file=sys.stderr, flush=True)
        for mode in ("off", "on", "on", "off"):
            os.environ["SAGA_VERSION_DESCRIPTIONS"] = mode
            seq[mode] = seq.get(mode, 0.0) + sequential(stack, args.sequential) / 2
        os.environ.pop("SAGA_VERSION_DESCRIPTIONS", None)
        r = reads(stack)

    def med(mode: str, key: str) -> float:
        return statistics.median(s[key] for s in storms[mode])

    lines = [
        "| measure | descriptions off (reference) | descriptions on | ratio on/off |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (
        ("p50", "storm op seconds, p50"),
        ("max", "storm op seconds, max"),
        ("wall", "storm wall s"),
    ):
        lines.append(
            f"| {label} (median of {args.rounds}) | {med('off', key):.2f} | {med('on', key):.2f} | "
            f"{med('on', key) / med('off', key):.2f} |"
        )
    lines.append(
        f"| sequential promotion seconds (n={args.sequential}) | {seq['off']:.3f} | {seq['on']:.3f} | "
        f"{seq['on'] / seq['off']:.2f} |"
    )
    clean = {m: f"{sum(s['clean'] for s in storms[m])}/{args.ops * args.rounds}" for m in storms}
    intact = {m: all(s["intact"] for s in storms[m]) for m in storms}
    lines.append(f"| ops ending ok/refused | {clean['off']} | {clean['on']} | |")
    lines.append(f"| history intact (no loss, no duplicate, replays) | {intact['off']} | {intact['on']} | |")
    lines += [
        "",
        "| read (median of 30) | seconds | ratio to get_registered_model |",
        "|---|---:|---:|",
    ]
    for key, value in r.items():
        lines.append(f"| {key} | {value:.4f} | {value / r['get_registered_model']:.1f} |")
    lines.append("")
    lines.append(f"machine load average (1 min) at start / end: {load0:.1f} / {os.getloadavg()[0]:.1f}")
    print("\n".join(lines))
    return 0 if all(intact.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
