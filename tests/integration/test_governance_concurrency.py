"""Concurrent promotions, rollbacks, approvals and removals on one model, against MLflow on PostgreSQL.

Each operation runs in its own process with its own client (forked from a server that has imported
everything, then released together), so they really contend for the model. A watcher reads champion all
through the storm. Afterwards: champion is Approved, the history has exactly the entries the successful
operations say they wrote (none lost, none duplicated), sequence numbers run 1..N, replaying the history
gives the aliases the registry holds, and MLflow's log shows no connection-pool exhaustion. MLflow runs
with its default database pool, so the client's polling is what keeps the pool healthy. Timing is not
asserted here; the reliability benchmark reports it.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from airflow_saga.core import approval, promotion
from airflow_saga.core import tags as T
from airflow_saga.core.locking import lock_name
from tests.support.governance_worker import check_history, run_storm, storm_ops
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
    # db_pool=None: MLflow's default pool (5 + 10 per engine), the setting users most likely run.
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-pg"), backend_uri=f"{PG}/{db}", db_pool=None)
    try:
        server.start(timeout=180)
        yield server
    finally:
        server.stop()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


STORM_OPS = 30  # the reliability benchmark runs 100 (benchmarks/reliability/governance.py)


@pytest.mark.integration
def test_concurrent_promotions_rollbacks_and_approvals(pg_mlflow, model_name):
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client

    client = build_client(MlflowSettings(tracking_uri=pg_mlflow.url))
    approved = [make_version(client, model_name, status=T.APPROVED) for _ in range(6)]
    pending = [make_version(client, model_name) for _ in range(8)]
    promotion.promote(client, model_name, approved[0], T.CHAMPION, by="setup", reason="baseline")
    ops = storm_ops(approved, pending, STORM_OPS)
    assert {op[0] for op in ops} == {"promote", "status", "rollback", "remove"}

    storm = run_storm(pg_mlflow.url, model_name, ops, watcher_client=client)

    results = storm["results"]
    assert storm["missing"] == 0, storm
    # Every operation succeeded or refused with the package's own message; none hit a server error.
    for r in results:
        assert r["outcome"] in ("ok", "refused", "busy"), r
        if r["outcome"] == "busy":  # only under extreme load: a clean, retryable refusal
            assert r["error"].startswith(("GovernanceBusyError", "LockLost")) and "nothing" in r["error"], r
        if r["outcome"] == "refused":
            assert r["error"].startswith(("PromotionError", "ApprovalError", "AliasMovedError")), r
            assert model_name in r["error"], r
    assert any(r["outcome"] == "ok" for r in results)
    # Champion never pointed at a non-Approved version, watched all through the storm and checked after.
    watcher = storm["watcher"]
    assert watcher.probes > 0 and watcher.violations == [] and watcher.errors == []
    current = promotion.aliases(client, model_name)
    assert approval.get_status(client.get_model_version(model_name, current[T.CHAMPION])) == T.APPROVED
    if T.CHALLENGER in current:
        assert approval.get_status(client.get_model_version(model_name, current[T.CHALLENGER])) != T.REJECTED
        assert current[T.CHALLENGER] != current[T.CHAMPION]
    # History: exactly what the successful operations wrote, numbered 1..N, replaying to today's aliases.
    hist = check_history(client, model_name, results, setup_entries=1)
    assert (hist["lost"], hist["extra"]) == (0, 0), hist
    assert hist["contiguous"] and hist["replay_matches_aliases"], hist
    assert not client.search_registered_models(f"name = '{lock_name(model_name)}'")
    # MLflow's connection pool held: no QueuePool exhaustion in its log.
    server_log = pg_mlflow.log.read_text(errors="replace")
    assert "QueuePool limit" not in server_log and "TimeoutError" not in server_log
    print(
        f"{len(ops)} ops in {storm['wall']:.1f}s (p50 {storm['p50']:.1f}s, max {storm['max']:.1f}s): "
        f"{Counter(r['outcome'] for r in results)}; {hist['entries']} history entries"
    )
