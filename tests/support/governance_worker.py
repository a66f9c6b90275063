"""A storm of concurrent governance operations on one model, each in its own process (test and benchmark).

Processes come from a ``forkserver`` that has already imported MLflow and airflow-saga, and every worker
builds its client and then waits at a shared event, so the clock measures the operations, not Python
start-up (100 cold imports of MLflow would take minutes of CPU on two cores). A watcher thread in the
calling process reads champion and its status all through the storm.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import statistics
import threading
import time
from typing import Any

from airflow_saga.core import tags as T

PRELOAD = [
    "mlflow",
    "airflow_saga.core.governance",
    "airflow_saga.core.mlflow_client",
    "tests.support.governance_worker",
]


def run_op(tracking_uri: str, name: str, idx: int, op: tuple, start_event: Any, ready: Any, out: Any) -> None:
    """Build a client, report ``ready``, run ``op`` as user ``w<idx>`` once ``start_event`` fires."""
    from airflow_saga.core import approval, promotion
    from airflow_saga.core.errors import GovernanceBusyError, MlflowUnreachableError, SagaError
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client

    client = build_client(MlflowSettings(tracking_uri=tracking_uri, max_retries=0))
    by = f"w{idx}"
    ready.put(idx)
    start_event.wait(300)
    t0 = time.monotonic()
    kind, *args = op
    outcome, error, count = "ok", None, None
    try:
        if kind == "promote":
            count = len(promotion.promote(client, name, args[0], args[1], by=by, reason="storm").entries)
        elif kind == "rollback":
            count = len(promotion.rollback(client, name, args[0], by=by, reason="storm rollback").entries)
        elif kind == "remove":
            count = len(promotion.remove_alias(client, name, args[0], by=by, reason="storm removal").entries)
        elif kind == "status":
            approval.set_status(client, name, args[0], args[1], by=by, comment="storm")
        else:
            raise ValueError(kind)
    except MlflowUnreachableError as exc:  # the server did not answer in time: an error, not a refusal
        outcome, error, count = "error", f"{type(exc).__name__}: {exc}", 0
    except GovernanceBusyError as exc:
        outcome, error, count = "busy", f"{type(exc).__name__}: {exc}", 0
    except SagaError as exc:
        outcome, error, count = "refused", f"{type(exc).__name__}: {exc}", 0
    except Exception as exc:  # a server error, a foreign exception: what the storm must never produce
        outcome, error, count = "error", f"{type(exc).__name__}: {exc}", 0
    out.put(
        {
            "idx": idx,
            "op": op,
            "outcome": outcome,
            "error": error,
            "count": count,
            "seconds": time.monotonic() - t0,
        }
    )


def storm_ops(approved: list[str], pending: list[str], n: int, seed: int = 7) -> list[tuple]:
    """``n`` operations of every kind, seeded: promotions (some refused), approvals, rejections, rollbacks."""
    rng = random.Random(seed)
    everyone = approved + pending
    kinds = [
        (30, lambda: ("promote", rng.choice(approved), T.CHAMPION)),
        (14, lambda: ("promote", rng.choice(everyone), T.CHALLENGER)),
        (10, lambda: ("promote", rng.choice(pending), T.CHAMPION)),  # refused unless approved meanwhile
        (16, lambda: ("status", rng.choice(pending), T.APPROVED)),
        (10, lambda: ("status", rng.choice(everyone), T.REJECTED)),  # refused for the champion
        (10, lambda: ("rollback", None)),
        (5, lambda: ("rollback", rng.choice(approved))),
        (5, lambda: ("remove", T.CHALLENGER)),
    ]
    ops = [make() for weight, make in kinds for _ in range(weight)]
    rng.shuffle(ops)
    while len(ops) < n:
        ops += ops[: n - len(ops)]
    return ops[:n]


class ChampionWatcher(threading.Thread):
    """Reads champion and its status in a loop; counts every moment a non-Approved version held it.

    Each probe reads alias, status, alias, status. Rejected is terminal and Pending can only move to a
    decision, so "champion at the second read and Rejected at the first status read" or "champion at the
    second read and still Pending at the second status read" proves champion pointed at a non-Approved
    version at that moment; anything else that changed between reads is inconclusive, never a false alarm.
    """

    def __init__(self, client: Any, name: str, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.client, self.name, self.interval = client, name, interval
        self.stop_event = threading.Event()
        self.probes = 0
        self.violations: list[tuple[str, str]] = []
        self.errors: list[str] = []

    def _status(self, version: str) -> str:
        return (self.client.get_model_version(self.name, version).tags or {}).get(
            T.APPROVAL_STATUS, T.PENDING
        )

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                first = (self.client.get_registered_model(self.name).aliases or {}).get(T.CHAMPION)
                if first is not None:
                    s1 = self._status(first)
                    again = (self.client.get_registered_model(self.name).aliases or {}).get(T.CHAMPION)
                    s2 = self._status(first)
                    if again == first and (s1 == T.REJECTED or s2 == T.PENDING):
                        self.violations.append((first, s1 if s1 == T.REJECTED else s2))
                self.probes += 1
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)


def run_storm(
    tracking_uri: str, name: str, ops: list[tuple], *, watcher_client: Any = None
) -> dict[str, Any]:
    """Run ``ops`` concurrently, one process each, released together; return outcomes and timings."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    start, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=run_op, args=(tracking_uri, name, i, op, start, ready, out))
        for i, op in enumerate(ops)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 300
    for _ in procs:  # every worker has imported, built its client and is waiting at the event
        ready.get(timeout=max(1.0, deadline - time.monotonic()))
    watcher = ChampionWatcher(watcher_client, name) if watcher_client is not None else None
    if watcher is not None:
        watcher.start()
    t0 = time.monotonic()
    start.set()
    results = []
    for _ in procs:
        try:
            results.append(out.get(timeout=max(1.0, deadline + 300 - time.monotonic())))
        except Exception:  # a worker that died without reporting shows as missing below
            break
    wall = time.monotonic() - t0
    for p in procs:
        p.join(timeout=30)
    if watcher is not None:
        watcher.stop()
    seconds = [r["seconds"] for r in results]
    return {
        "results": sorted(results, key=lambda r: r["idx"]),
        "missing": len(ops) - len(results),
        "wall": wall,
        "p50": statistics.median(seconds) if seconds else None,
        "max": max(seconds) if seconds else None,
        "watcher": watcher,
    }


def check_history(
    client: Any, name: str, results: list[dict[str, Any]], setup_entries: int
) -> dict[str, Any]:
    """Lost/duplicated entries: the history must hold exactly what the successful operations wrote."""
    from collections import Counter

    from airflow_saga.core import promotion

    hist = promotion.history(client, name)
    written = Counter(h["by"] for h in hist)
    lost, extra = 0, 0
    for r in results:
        mine = written.get(f"w{r['idx']}", 0)
        if r["count"] is not None and mine != r["count"]:
            lost += max(0, r["count"] - mine)
            extra += max(0, mine - r["count"])
        elif r["outcome"] != "ok" and mine:
            extra += mine
    seqs = [h["seq"] for h in hist]
    replay: dict[str, str | None] = {}
    replay_ok = True
    for h in hist:
        if replay.get(h["alias"]) is not None and h["from"] != replay[h["alias"]]:
            replay_ok = False
        replay[h["alias"]] = h["to"]
    current = promotion.aliases(client, name)
    replay_ok = replay_ok and {a: v for a, v in replay.items() if v is not None} == current
    return {
        "entries": len(hist),
        "setup": setup_entries,
        "lost": lost,
        "extra": extra,
        "contiguous": seqs == list(range(1, len(seqs) + 1)),
        "replay_matches_aliases": replay_ok,
        "aliases": current,
        "history": hist,
    }
