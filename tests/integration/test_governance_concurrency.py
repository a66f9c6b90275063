"""Concurrent promotions, rollbacks and approvals on one model, against MLflow on PostgreSQL.

Each operation runs in its own process with its own client and starts on a shared event, so they really
contend for the model. Afterwards: champion is Approved, the history has exactly the entries the
successful operations say they wrote (none lost, none duplicated), sequence numbers run 1..N, and replaying
the history gives the aliases the registry actually holds.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid
from collections import Counter

import pytest

from airflow_saga.core import approval, promotion
from airflow_saga.core import tags as T
from airflow_saga.core.locking import lock_name
from tests.support.governance_worker import run_op
from tests.support.registry import make_version

PG = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(scope="module")
def pg_mlflow(tmp_path_factory):
    """A real MLflow server on a private PostgreSQL database, dropped afterwards."""
    from tests.conftest import postgres_admin
    from tests.support.procs import MlflowServer

    db = f"saga_gov_{uuid.uuid4().hex[:10]}"
    admin = postgres_admin()  # a missing PostgreSQL fails the test (opt-out: SAGA_TESTS_WITHOUT_POSTGRES=1)
    admin.cursor().execute(f'CREATE DATABASE "{db}"')
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-pg"), backend_uri=f"{PG}/{db}")
    try:
        server.start(timeout=180)
        yield server
    finally:
        server.stop()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


@pytest.mark.integration
def test_concurrent_promotions_rollbacks_and_rejections(pg_mlflow, model_name):
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client

    client = build_client(MlflowSettings(tracking_uri=pg_mlflow.url))
    approved = [make_version(client, model_name, status=T.APPROVED) for _ in range(6)]
    pend_a, pend_b, pend_c = (make_version(client, model_name) for _ in range(3))
    promotion.promote(client, model_name, approved[0], T.CHAMPION, by="setup", reason="baseline")

    ops = [
        *[("promote", v, T.CHAMPION) for v in approved[1:]],  # 5 champion promotions
        ("promote", pend_a, T.CHAMPION),  # Pending: must be refused
        ("promote", pend_a, T.CHALLENGER),  # allowed (not Rejected)
        ("status", pend_a, T.REJECTED),  # races the challenger promotion
        ("status", pend_b, T.APPROVED),
        ("promote", pend_b, T.CHAMPION),  # only if its approval landed first
        ("status", pend_c, T.REJECTED),
        ("promote", pend_c, T.CHAMPION),  # never: Pending or Rejected
        ("rollback", None),
        ("rollback", None),
        ("rollback", approved[2]),
        ("status", approved[4], T.REJECTED),  # revoke; refused if it is champion at that moment
    ]
    assert len(ops) >= 10
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(processes=len(ops)) as pool:
            pending = [
                pool.apply_async(run_op, (pg_mlflow.url, model_name, i, op, start))
                for i, op in enumerate(ops)
            ]
            time.sleep(2)
            start.set()
            results = [p.get(timeout=600) for p in pending]

    # Every failure must be a deliberate refusal, never a lost lock or a server error.
    for r in results:
        if not r["ok"]:
            assert r["error"].startswith(("PromotionError", "ApprovalError")), r
            assert "Could not lock" not in r["error"] and "Lease" not in r["error"], r
    by_idx = {r["idx"]: r for r in results}
    for idx in (5, 11):  # champion from a Pending version that may have been rejected meanwhile
        assert not by_idx[idx]["ok"] and "only Approved versions can become champion" in by_idx[idx]["error"]

    hist = promotion.history(client, model_name)
    # History is complete: exactly the setup entry plus what each successful op reported, by its own id.
    written = Counter(h["by"] for h in hist)
    assert written.pop("setup") == 1
    for r in results:
        mine = written.get(f"w{r['idx']}", 0)
        if r["count"] is not None:
            assert mine == r["count"], (r, hist)
        elif not r["ok"]:
            assert mine == 0, (r, hist)
    assert sum(written.values()) == len(hist) - 1
    assert [h["seq"] for h in hist] == list(range(1, len(hist) + 1))
    # Replaying the history gives the aliases the registry holds now.
    replay: dict[str, str | None] = {}
    for h in hist:
        if replay.get(h["alias"]) is not None:
            assert h["from"] == replay[h["alias"]], (h, hist)
        replay[h["alias"]] = h["to"]
    current = promotion.aliases(client, model_name)
    assert {a: v for a, v in replay.items() if v is not None} == current
    # The invariant: champion is an Approved version; no Rejected challenger; no lock left behind.
    champion = current[T.CHAMPION]
    assert approval.get_status(client.get_model_version(model_name, champion)) == T.APPROVED
    if T.CHALLENGER in current:
        assert approval.get_status(client.get_model_version(model_name, current[T.CHALLENGER])) != T.REJECTED
    assert not client.search_registered_models(f"name = '{lock_name(model_name)}'")
    print(
        f"{len(hist)} history entries; results:", *[(r["op"], r["ok"], r["error"]) for r in results], sep="\n"
    )
