"""Reliability: governance under contention, history size and crashes, against MLflow on PostgreSQL.

Measures (each row: section, measure, value, target, met):

- retry storm: 40 concurrent registrations of one training run make 1 version;
- the N-operation storm (promote / rollback / approve / reject / remove, one process each, released together
  after import): outcomes, p50 and max seconds, lost history entries, non-Approved champion ever seen;
- promote time at 0, 1,000 and 10,000 history entries (seeded straight into the database through MLflow's
  own SQL store, then timed through the server), as a ratio to 0, and the model's tag count at the end;
- stale-lock recovery: a process holding the lock is killed with SIGKILL; time until the next promotion
  succeeds.

MLflow runs with its default database pool (5 + 10 per engine), so the figures show the client's behaviour,
not a tuned server. Run standalone::

    .venv/bin/python -m benchmarks.reliability.governance [--quick] [--parts retry,storm,history,stale]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any

from benchmarks.pg_mlflow import PgMlflow

SECTION = "governance"


def _row(measure: str, value: str, target: str | None = None, met: bool | None = None) -> dict[str, Any]:
    return {"section": SECTION, "measure": measure, "value": value, "target": target, "met": met}


# ------------------------------------------------------------------------------------------ retry storm
def retry_storm(stack: PgMlflow, retries: int) -> list[dict[str, Any]]:
    from airflow_saga.core.registry import register_version

    client = stack.client()
    name = f"bench-retry-{uuid.uuid4().hex[:6]}"
    run = client.create_run("0")
    client.set_terminated(run.info.run_id)
    errors: list[str] = []

    def register() -> None:
        try:
            register_version(
                client, name, model_uri=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags={}
            )
        except Exception as exc:  # counted: a retry storm must not surface errors
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=register) for _ in range(retries)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    versions = len(client.search_model_versions(f"name='{name}'"))
    return [
        _row(f"{retries} concurrent register retries -> versions", str(versions), "1", versions == 1),
        _row("errors in the register retry storm", str(len(errors)), "0", not errors),
    ]


# ------------------------------------------------------------------------------------------------ storm
def storm(stack: PgMlflow, n: int) -> list[dict[str, Any]]:
    from airflow_saga.core import approval, promotion
    from airflow_saga.core import tags as T
    from tests.support.governance_worker import check_history, run_storm, storm_ops
    from tests.support.registry import make_version

    client = stack.client()
    name = f"bench-storm-{uuid.uuid4().hex[:6]}"
    approved = [make_version(client, name, status=T.APPROVED) for _ in range(10)]
    pending = [make_version(client, name) for _ in range(14)]
    promotion.promote(client, name, approved[0], T.CHAMPION, by="setup", reason="baseline")
    out = run_storm(stack.server.url, name, storm_ops(approved, pending, n), watcher_client=client)
    results = out["results"]
    counts = Counter(r["outcome"] for r in results)
    hist = check_history(client, name, results, setup_entries=1)
    champion = promotion.aliases(client, name).get(T.CHAMPION)
    final_ok = (
        champion is not None and approval.get_status(client.get_model_version(name, champion)) == T.APPROVED
    )
    watcher = out["watcher"]
    bad_champion = len(watcher.violations) + (0 if final_ok else 1)
    # "busy" is a refusal with a clear message too (GovernanceBusyError: "could not lock ... within Ns:
    # another promotion ... holds it; nothing was changed, retry"): the "refusing with a clear
    # message". Only "error" (no answer, a server error, a foreign exception) is not clean.
    within = sum(1 for r in results if r["outcome"] in ("ok", "refused", "busy") and r["seconds"] <= 60)
    pool_errors = stack.server.log.read_text(errors="replace").count("QueuePool limit")
    ok, refused, busy, errors = (counts.get(k, 0) for k in ("ok", "refused", "busy", "error"))
    return [
        _row(
            f"{n} concurrent ops: ok / refused / busy / error",
            f"{ok} / {refused} / {busy} / {errors + out['missing']}",
            None,
            None,
        ),
        _row(
            f"{n} concurrent ops ending cleanly (ok, refused or busy) within 60 s",
            f"{within}/{n}",
            f"{n}/{n}",
            within == n,
        ),
        _row(
            "storm op seconds p50 / max",
            f"{out['p50']:.1f} / {out['max']:.1f}",
            "max <= 60",
            out["max"] <= 60,
        ),
        _row("storm wall seconds (all ops)", f"{out['wall']:.1f}"),
        _row(
            "lost / duplicated history entries",
            f"{hist['lost']} / {hist['extra']}",
            "0 / 0",
            not (hist["lost"] or hist["extra"]),
        ),
        _row(
            "history contiguous and replays to the aliases",
            str(hist["contiguous"] and hist["replay_matches_aliases"]),
            "True",
            hist["contiguous"] and hist["replay_matches_aliases"],
        ),
        _row(
            f"non-Approved champion seen ({watcher.probes} probes)", str(bad_champion), "0", bad_champion == 0
        ),
        _row("MLflow QueuePool errors (default pool)", str(pool_errors), "0", pool_errors == 0),
    ]


# ---------------------------------------------------------------------------------------- history size
def _seed_history(stack: PgMlflow, name: str, entries: int, champion: str) -> None:
    """Write ``entries`` committed history entries straight into the database (MLflow's SQL store)."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow import MlflowClient

    from airflow_saga.core import alias_history as H
    from airflow_saga.core import compat
    from airflow_saga.core import tags as T

    http = stack.client()
    state = H.read_state(http, name)
    writer = H.HistoryWriter(http, state, lambda: None)
    eid = writer.experiment_id()
    if not entries:
        return
    direct = MlflowClient(tracking_uri=stack.db_uri)
    t0 = H.now_ms() - entries - 10_000
    other = "1" if champion != "1" else "2"

    def one(seq: int) -> None:
        frm, to = (other, champion) if seq % 2 == 0 else (champion, other)
        entry = {"seq": seq, "at": H.iso_ms(t0 + seq), "by": "seed", "action": "promote", "alias": T.CHAMPION}
        entry |= {"from": None if seq == 1 else frm, "to": to, "reason": "seeded"}
        run = direct.create_run(
            eid, start_time=t0 + seq, tags=H.entry_tags(name, entry, "seed"), run_name=H.run_name(entry)
        )
        compat.end_run(direct, run.info.run_id, "FINISHED", t0 + seq)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(1, entries + 1)))
    head = H.Head(
        seq=entries, experiment_id=eid, time_ms=t0 + entries, aliases={T.CHAMPION: champion}, runs=[]
    )
    http.set_registered_model_tag(name, T.HISTORY_HEAD, head.to_tag())
    http.set_registered_model_alias(name, T.CHAMPION, champion)


def history_size(stack: PgMlflow, sizes: tuple[int, ...], promotes: int) -> list[dict[str, Any]]:
    from airflow_saga.core import promotion
    from airflow_saga.core import tags as T
    from tests.support.registry import make_version

    client = stack.client()
    models: dict[int, tuple[str, str, str]] = {}
    for size in sizes:  # seed every size first, then time them in turns, so load drift hits all alike
        name = f"bench-hist{size}-{uuid.uuid4().hex[:6]}"
        v1, v2 = (make_version(client, name, status=T.APPROVED) for _ in range(2))
        _seed_history(stack, name, size, v2 if size % 2 == 0 else v1)
        models[size] = (name, v1, v2)
    times: dict[int, list[float]] = {size: [] for size in sizes}
    for i in range(promotes):
        for size in sizes:
            name, v1, v2 = models[size]
            current = promotion.aliases(client, name).get(T.CHAMPION)
            target = v1 if current == v2 else v2
            t0 = time.perf_counter()
            promotion.promote(client, name, target, T.CHAMPION, by="bench", reason=f"timed {i}")
            times[size].append(time.perf_counter() - t0)
    medians = {size: statistics.median(times[size]) for size in sizes}
    tags_at: dict[int, int] = {}
    for size in sizes:
        name = models[size][0]
        assert len(promotion.history_page(client, name, limit=5).entries) == min(5, size + promotes)
        tags_at[size] = len(client.get_registered_model(name).tags)
    base = medians[sizes[0]]
    rows = [
        _row(
            f"promote at {size:,} history entries (median of {promotes}, sizes timed in turns)",
            f"{medians[size] * 1000:.0f} ms",
        )
        for size in sizes
    ]
    top = sizes[-1]
    ratio = medians[top] / base
    rows.append(_row(f"promote at {top:,} / at 0 entries", f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2))
    rows.append(
        _row(
            f"registered-model tags at {top:,} entries",
            str(tags_at[top]),
            "<= 5 (page readable)",
            tags_at[top] <= 5,
        )
    )
    return rows


# ---------------------------------------------------------------------------------------- stale lock
_HOLDER = """
import sys, time
from airflow_saga.core.governance import Transaction
from airflow_saga.core.mlflow_client import MlflowSettings, build_client
client = build_client(MlflowSettings(tracking_uri=sys.argv[1]))
with Transaction(client, sys.argv[2], purpose="benchmark: killed inside the lock"):
    print("HOLDING", flush=True)
    time.sleep(3600)
"""


def stale_lock(stack: PgMlflow, trials: int) -> list[dict[str, Any]]:
    from airflow_saga.core import promotion
    from airflow_saga.core import tags as T
    from tests.support.registry import make_version

    client = stack.client()
    waits = []
    for _ in range(trials):
        name = f"bench-stale-{uuid.uuid4().hex[:6]}"
        v = make_version(client, name, status=T.APPROVED)
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, stack.server.url, name], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "HOLDING"
            time.sleep(2.0)  # a couple of lease renewals happen first
            os.kill(holder.pid, signal.SIGKILL)
            t0 = time.monotonic()
            promotion.promote(client, name, v, T.CHAMPION, by="bench", reason="after SIGKILL")
            waits.append(time.monotonic() - t0)
        finally:
            if holder.poll() is None:
                holder.kill()
            holder.wait(timeout=30)
    worst = max(waits)
    return [
        _row(
            f"stale-lock recovery after SIGKILL (max of {trials})",
            f"{worst:.1f} s (median {statistics.median(waits):.1f} s)",
            "<= 10 s",
            worst <= 10,
        )
    ]


PARTS = ("retry", "storm", "history", "stale")


def measure(quick: bool = False, parts: tuple[str, ...] = PARTS) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    load = os.getloadavg()[0]
    with PgMlflow("saga_bench_gov") as stack:
        if "retry" in parts:
            rows += retry_storm(stack, 10 if quick else 40)
        if "storm" in parts:
            rows += storm(stack, 20 if quick else 100)
        if "history" in parts:
            rows += history_size(stack, (0, 200) if quick else (0, 1_000, 10_000), 3 if quick else 9)
        if "stale" in parts:
            rows += stale_lock(stack, 1 if quick else 3)
    rows.append(_row("machine load average (1 min) at start / end", f"{load:.1f} / {os.getloadavg()[0]:.1f}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}"
    )
    args = parser.parse_args(argv)
    from benchmarks.bench_reliability import render

    parts = tuple(p.strip() for p in args.parts.split(","))
    if set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(set(parts) - set(PARTS))}; choose from {list(PARTS)}")
    rows = measure(quick=args.quick, parts=parts)
    print(render(rows))
    return 1 if any(r["met"] is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
