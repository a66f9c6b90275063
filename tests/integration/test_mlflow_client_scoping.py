"""Per-connection clients: two users of one MLflow server, in one process, never borrow each other's rights.

A real MLflow ``basic-auth`` server (every request authenticated; no permission unless granted): alice may
read model A and the experiment, bob may read model B only. Their clients run alternately and concurrently
from this process, through the client API, MLflow's artifact download path (which builds its own
credentials from the environment: none here) and the approval trigger's code path (two Airflow
connections polled from one event loop through ``asyncio.to_thread``, as the triggerer does).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_saga.core.mlflow_client import MlflowSettings, bounded, build_client, download_artifacts

pytestmark = pytest.mark.integration

ADMIN_PW = "admin-" + secrets.token_urlsafe(12)
PASSWORDS = {"alice": "alice-" + secrets.token_urlsafe(12), "bob": "bob-" + secrets.token_urlsafe(12)}


def _denied(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) == "PERMISSION_DENIED" or "403" in str(exc)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    from airflow_saga.core.registry import register_version
    from airflow_saga.devstack.mlflow_server import MlflowServer

    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        assert var not in os.environ  # the only credentials in play are the clients' own
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), auth_admin_password=ADMIN_PW).start()
    try:
        admin_settings = MlflowSettings(server.url, username="admin", password=ADMIN_PW)
        admin = build_client(admin_settings)
        exp = admin.create_experiment("scoping")
        run = admin.create_run(exp).info.run_id
        path = tmp_path_factory.mktemp("artifact") / "probe.txt"
        path.write_text("only alice may read this")
        admin.log_artifact(run, str(path))
        admin.set_terminated(run, "FINISHED")
        for name in ("A", "B"):
            register_version(admin, name, model_uri=f"runs:/{run}/probe.txt", run_id=run, tags={})
        from mlflow.server.auth.client import AuthServiceClient

        users = AuthServiceClient(server.url)  # builds env credentials (none): the scope supplies admin's
        with bounded(admin_settings):
            for user, password in PASSWORDS.items():
                users.create_user(user, password)
            users.grant_user_permission("alice", "registered_model", "A", "READ")
            users.grant_user_permission("alice", "experiment", exp, "READ")
            users.grant_user_permission("bob", "registered_model", "B", "READ")
        yield {"server": server, "run_id": run}
    finally:
        server.stop()


def _settings(url: str, user: str) -> MlflowSettings:
    return MlflowSettings(url, username=user, password=PASSWORDS[user], call_timeout=60)


def test_two_users_alternately_and_concurrently_never_mix(auth_server):
    url = auth_server["server"].url
    clients = {
        "alice": build_client(_settings(url, "alice")),
        "bob": build_client(_settings(url, "bob")),
        # credentials in the URI are moved into the settings and work the same way
        "bob-uri": build_client(MlflowSettings(url.replace("://", f"://bob:{PASSWORDS['bob']}@"))),
    }
    allowed = {"alice": "A", "bob": "B", "bob-uri": "B"}

    def probe(who: str, model: str) -> tuple[str, str, str]:
        try:
            clients[who].get_registered_model(model)
            return who, model, "ok"
        except Exception as exc:
            return who, model, "denied" if _denied(exc) else f"other: {exc}"

    jobs = [(who, model) for _ in range(6) for who in clients for model in ("A", "B")]
    sequential = [probe(who, model) for who, model in jobs[:6]]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda j: probe(*j), jobs))
    for who, model, outcome in sequential + concurrent:
        assert outcome == ("ok" if allowed[who] == model else "denied"), (who, model, outcome)


def test_artifact_downloads_use_the_calling_connections_credentials(auth_server, tmp_path):
    """MLflow's artifact repositories build credentials from the environment; the call scope gives them
    the caller's own (alice: allowed; bob: denied; nobody: unauthenticated), concurrently."""
    url, run = auth_server["server"].url, auth_server["run_id"]
    uri = f"runs:/{run}/probe.txt"
    outcomes: dict[str, str] = {}
    lock = threading.Lock()

    def fetch(label: str, settings: MlflowSettings) -> None:
        dst = tmp_path / label
        dst.mkdir()
        try:
            local = download_artifacts(settings, uri, str(dst))
            with open(local) as fh:
                outcome = fh.read()
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            outcomes[label] = outcome

    variants = {
        **{f"alice-{i}": _settings(url, "alice") for i in range(3)},
        **{f"bob-{i}": _settings(url, "bob") for i in range(3)},
        "nobody": MlflowSettings(url, call_timeout=60),
    }
    threads = [threading.Thread(target=fetch, args=item) for item in variants.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for label, outcome in outcomes.items():
        if label.startswith("alice"):
            assert outcome == "only alice may read this", (label, outcome)
        else:
            assert "only alice" not in outcome and (
                "403" in outcome or "401" in outcome or "PERMISSION" in outcome
            ), (
                label,
                outcome,
            )
    assert len(outcomes) == len(variants)


def test_approval_trigger_code_path_keeps_two_connections_apart(auth_server, monkeypatch):
    """Two Airflow connections to one host, polled from one event loop as the triggerer polls them."""
    from airflow_saga.triggers.approval import check_once

    url = auth_server["server"].url
    for user in PASSWORDS:
        conn = {"conn_type": "mlflow", "host": url, "login": user, "password": PASSWORDS[user]}
        monkeypatch.setenv(f"AIRFLOW_CONN_SAGA_{user.upper()}", json.dumps(conn))

    async def poll(conn_id: str, model: str) -> tuple[str, str, str]:
        try:
            result = await asyncio.to_thread(check_once, conn_id, model, "1")
            return conn_id, model, result["status"]
        except Exception as exc:
            return conn_id, model, "denied" if _denied(exc) else f"other: {exc}"

    async def main() -> list[tuple[str, str, str]]:
        jobs = [poll(f"saga_{u}", m) for _ in range(4) for u in PASSWORDS for m in ("A", "B")]
        return await asyncio.gather(*jobs)

    for conn_id, model, outcome in asyncio.run(main()):
        mine = {"saga_alice": "A", "saga_bob": "B"}[conn_id]
        assert outcome == ("pending" if model == mine else "denied"), (conn_id, model, outcome)
