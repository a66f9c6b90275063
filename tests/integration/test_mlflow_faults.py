"""MLflow faults with real parts: a server SIGKILLed mid-train / mid-register / mid-promote, a SIGSTOPped
server, and a socket server that accepts and never answers.

Each fault must end in the package's ``MlflowUnreachableError`` (or its Airflow/CLI/gateway rendering)
within the configured call timeout, naming the server without its credentials; after a kill and the
task's retry there is no RUNNING run, no duplicate version and no half-moved alias. Most tests use a short
``call_timeout`` (a few seconds) so the suite stays fast; one checks the real default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from airflow_saga.core import tags as T
from airflow_saga.core.errors import MlflowUnreachableError, ServingError
from airflow_saga.core.mlflow_client import DEFAULT_CALL_TIMEOUT, MlflowSettings, build_client
from airflow_saga.devstack.faults import KillableMlflow, SilentServer, frozen
from tests.support.registry import make_version

pytestmark = pytest.mark.integration

SHORT = 3.0  # seconds: the call timeout most tests use
MARGIN = 15.0  # generous slack over a timeout for process and load overhead; never a performance figure
SECRET = "pw-" + "Zq8vYt3LmW"  # a password that must never appear in any message


def _hung_settings(url: str, **kw) -> MlflowSettings:
    return MlflowSettings(url, username="alice", password=SECRET, call_timeout=SHORT, **kw)


def _assert_clear(message: str, url: str) -> None:
    assert "unreachable" in message, message
    assert url.split("://")[1] in message, message
    assert SECRET not in message, message


@pytest.fixture
def silent():
    with SilentServer() as server:
        yield server


# --- a server that accepts and never answers ----------------------------------------------------------
def test_hook_against_a_silent_server_fails_clearly_within_the_call_timeout(silent, monkeypatch):
    from airflow_saga.hooks.mlflow import MlflowHook

    conn = {"conn_type": "mlflow", "host": silent.url, "login": "alice", "password": SECRET,
            "extra": {"call_timeout": SHORT}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_FAULTS_SILENT", json.dumps(conn))
    hook = MlflowHook("faults_silent")
    t0 = time.monotonic()
    with pytest.raises(MlflowUnreachableError) as err:
        hook.get_conn()
    assert time.monotonic() - t0 < SHORT + MARGIN
    _assert_clear(str(err.value), silent.url)
    ok, message = hook.test_connection()
    assert not ok
    _assert_clear(message, silent.url)


def test_the_default_call_timeout_bounds_a_silent_server_under_30_seconds(silent):
    """The one test that waits for the real default (the others use a short timeout)."""
    client = build_client(MlflowSettings(silent.url), check=False)
    t0 = time.monotonic()
    with pytest.raises(MlflowUnreachableError, match="unreachable"):
        client.get_registered_model("anything")
    waited = time.monotonic() - t0
    assert DEFAULT_CALL_TIMEOUT - 1 <= waited < 30, waited


@pytest.mark.parametrize("argv", [["history", "some-model"], ["lineage", "some-model", "1"]])
def test_cli_against_a_silent_server_exits_with_a_clear_error(silent, argv):
    uri = silent.url.replace("://", f"://alice:{SECRET}@")  # credentials in the URI must not leak either
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SAGA_MLFLOW_CALL_TIMEOUT": str(SHORT)}
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "airflow_saga.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert time.monotonic() - t0 < 120  # includes the interpreter start and MLflow's import
    _assert_clear(res.stderr, silent.url)
    assert SECRET not in res.stdout
    assert "Traceback" not in res.stderr


def test_monitor_operator_against_a_silent_server_raises_a_retryable_clear_error(silent, monkeypatch):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from airflow_saga.operators.drift import DriftMonitorOperator

    conn = {"conn_type": "mlflow", "host": silent.url, "login": "alice", "password": SECRET,
            "extra": {"call_timeout": SHORT}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_FAULTS_MONITOR", json.dumps(conn))
    op = DriftMonitorOperator(task_id="drift", model_name="m", mlflow_conn_id="faults_monitor")
    t0 = time.monotonic()
    with pytest.raises(AirflowException) as err:
        op.execute({})
    assert not isinstance(err.value, AirflowFailException)  # unreachable MLflow retries; bad input does not
    assert time.monotonic() - t0 < SHORT + MARGIN
    _assert_clear(str(err.value), silent.url)


# --- a real server, frozen (SIGSTOP) -------------------------------------------------------------------
@pytest.fixture(scope="module")
def served_version(mlflow_server, mlflow_client):
    """A trained, registered model on the session server (the gateway loads its artifacts)."""
    from airflow_saga.core.registry import register_version
    from airflow_saga.core.training import TrainSpec, train

    name = f"faults-frozen-{os.getpid()}"
    spec = TrainSpec(model_name=name, estimator="sklearn.linear_model.LogisticRegression",
                     data_source="sklearn:breast_cancer", target="target",
                     hyperparameters={"max_iter": 5000})  # fmt: skip
    summary = train(mlflow_client, spec)
    mv, _ = register_version(
        mlflow_client, name, model_uri=summary["model_uri"], run_id=summary["run_id"], tags={}
    )
    mlflow_client.set_registered_model_alias(name, T.CHAMPION, str(mv.version))
    return name, str(mv.version)


def test_gateway_model_load_from_a_frozen_server_fails_clearly(mlflow_server, served_version):
    """Alias resolution, the download URI and the artifact download itself (MLflow's thread pool) are
    all bounded; the gateway reports the unreachable server, redacted."""
    from airflow_saga.serving.models import Loader

    name, version = served_version
    settings = MlflowSettings(mlflow_server.url, username="alice", password=SECRET, call_timeout=SHORT)
    loader = Loader(settings, name, fast_path=False)
    try:
        assert loader.load(T.CHAMPION, version).version == version  # loads while the server answers
        for step in (lambda: loader.resolve(T.CHAMPION), lambda: loader.load(T.CHAMPION, version)):
            with frozen(mlflow_server.proc):
                t0 = time.monotonic()
                with pytest.raises(ServingError) as err:
                    step()
                waited = time.monotonic() - t0
            assert waited < SHORT + MARGIN, waited
            assert isinstance(err.value.__cause__, MlflowUnreachableError), repr(err.value.__cause__)
            _assert_clear(str(err.value), mlflow_server.url)
    finally:
        loader.close()


def test_artifact_download_stalled_mid_flight_is_bounded(mlflow_server, served_version, tmp_path):
    """The download request itself reaches a server that then stops: MLflow's streamed download path."""
    from airflow_saga.core.mlflow_client import download_artifacts

    name, version = served_version
    settings = MlflowSettings(mlflow_server.url, call_timeout=SHORT)
    uri = build_client(settings).get_model_version_download_uri(name, version)
    with frozen(mlflow_server.proc):
        t0 = time.monotonic()
        with pytest.raises(MlflowUnreachableError, match="unreachable"):
            download_artifacts(settings, uri, str(tmp_path))
        assert time.monotonic() - t0 < SHORT + MARGIN


# --- a real server, killed (SIGKILL) mid-operation, then restarted ------------------------------------
@pytest.fixture(scope="module")
def killable(tmp_path_factory):
    k = KillableMlflow(tmp_path_factory.mktemp("mlflow-killable"))
    yield k
    k.close()


def _killable_client(killable: KillableMlflow):
    return build_client(MlflowSettings(killable.url, call_timeout=SHORT, max_retries=1))


def test_server_killed_mid_train_leaves_no_running_run_once_the_retry_ran(killable, model_name):
    from airflow_saga.core.runs import CLOSED_BY
    from airflow_saga.core.training import TrainSpec, train

    client = _killable_client(killable)
    spec = TrainSpec(model_name=model_name, estimator="sklearn.linear_model.LogisticRegression",
                     data_source="sklearn:breast_cancer", target="target",
                     hyperparameters={"max_iter": 5000})  # fmt: skip
    task = {"dag_id": "faults", "run_id": "manual__kill", "task_id": "train", "map_index": "-1"}
    # the model's first artifact upload: after the run, its params, datasets and logged model exist
    killable.proxy.arm(r"PUT /api/2\.0/mlflow-artifacts/artifacts/\S*/models/", "before", killable.kill)
    with pytest.raises(MlflowUnreachableError) as err:
        train(client, spec, airflow={**task, "try_number": "1"})
    assert killable.proxy.fired.is_set()
    _assert_clear(str(err.value), killable.url)

    killable.restart()
    exp_id = client.get_experiment_by_name(spec.experiment).experiment_id
    (orphan,) = client.search_runs([exp_id])
    assert orphan.info.status == "RUNNING"  # the server died before the run could be marked FAILED

    summary = train(client, spec, airflow={**task, "try_number": "2"})  # Airflow's retry of the task
    runs = {r.info.run_id: r for r in client.search_runs([exp_id])}
    assert [r.info.run_id for r in runs.values() if r.info.status == "RUNNING"] == []
    assert runs[orphan.info.run_id].info.status == "FAILED"
    assert "try 2 closed this run of try 1" in runs[orphan.info.run_id].data.tags[CLOSED_BY]
    assert runs[summary["run_id"]].info.status == "FINISHED"


def test_server_killed_mid_register_creates_no_duplicate_version(killable, model_name):
    from airflow_saga.core.registry import register_version

    client = _killable_client(killable)
    run_id = client.create_run("0").info.run_id
    client.set_terminated(run_id)
    # the server creates the version, then dies before its answer reaches the client
    killable.proxy.arm(r"POST /api/2\.0/mlflow/model-versions/create", "after", killable.kill)
    kwargs = {"model_uri": f"runs:/{run_id}/model", "run_id": run_id, "tags": {}}
    with pytest.raises(MlflowUnreachableError) as err:
        register_version(client, model_name, **kwargs)
    _assert_clear(str(err.value), killable.url)

    killable.restart()
    mv, created = register_version(client, model_name, **kwargs)  # the retry
    versions = client.search_model_versions(f"name='{model_name}'")
    assert [str(v.version) for v in versions] == ["1"] and str(mv.version) == "1"
    assert created is False  # the version the dead server had created was found, not made again


def test_server_killed_mid_promote_leaves_no_half_moved_alias(killable, model_name):
    from airflow_saga.core import promotion

    client = _killable_client(killable)
    first = make_version(client, model_name, status=T.APPROVED)
    second = make_version(client, model_name, status=T.APPROVED)
    promotion.promote(client, model_name, first, T.CHAMPION, by="setup", reason="first")
    # the alias moves on the server, which dies before answering: nothing after it (history) was written
    killable.proxy.arm(r"POST /api/2\.0/mlflow/registered-models/alias", "after", killable.kill)
    with pytest.raises(MlflowUnreachableError) as err:
        promotion.promote(client, model_name, second, T.CHAMPION, by="pytest", reason="kill test")
    _assert_clear(str(err.value), killable.url)

    killable.restart()
    promotion.promote(client, model_name, second, T.CHAMPION, by="pytest", reason="kill test")  # the retry
    assert promotion.aliases(client, model_name) == {T.CHAMPION: second}
    moves = [(e["action"], e["from"], e["to"]) for e in promotion.history(client, model_name)]
    assert moves == [("promote", None, first), ("promote", first, second)], moves
    assert [m.name for m in client.search_registered_models() if "lock" in m.name] == []
    exps = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(exps, filter_string="attributes.status = 'RUNNING'") == []


# --- the gateway's secrets ---------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def test_multi_worker_gateway_keeps_secrets_out_of_command_lines_environments_and_logs(
    mlflow_server, served_version, tmp_path
):
    import requests

    from airflow_saga.devstack.procs import VENV_BIN, bytecode_env, free_port, spawn, stop, wait_http

    name, _ = served_version
    token, webhook = "tok-" + SECRET, "whk-" + SECRET
    files = {}
    for key, value in (("token", token), ("webhook", webhook)):
        files[key] = tmp_path / key
        files[key].write_text(value + "\n")
        files[key].chmod(0o600)
    port = free_port()
    cmd = [str(VENV_BIN / "saga"), "serve", name, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "2", "--tracking-uri", mlflow_server.url, "--auth-token-file", str(files["token"]),
           "--webhook-secret-file", str(files["webhook"]), "--log-level", "info"]  # fmt: skip
    log = tmp_path / "gateway.log"
    env = {k: v for k, v in {**os.environ, **bytecode_env()}.items() if not k.startswith("SAGA_")}
    proc = spawn(cmd, log, env)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 300, proc, log, ok=(200,))
        pids = [proc.pid, *_children(proc.pid)]
        assert len(pids) >= 3, pids  # the uvicorn supervisor and two workers
        config_path = None
        for pid in pids:
            for what in ("cmdline", "environ"):
                with open(f"/proc/{pid}/{what}", "rb") as fh:
                    raw = fh.read()
                assert token.encode() not in raw and webhook.encode() not in raw, (pid, what)
                if what == "environ":
                    found = [v for v in raw.split(b"\0") if v.startswith(b"SAGA_SERVE_CONFIG_FILE=")]
                    config_path = found[0].split(b"=", 1)[1].decode() if found else config_path
        assert config_path and (os.stat(config_path).st_mode & 0o777) == 0o600
        url = f"http://127.0.0.1:{port}/invocations"
        body = {"instances": [[0.0] * 30]}
        assert requests.post(url, json=body, timeout=60).status_code == 401
        ok = requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert ok.status_code == 200, ok.text
    finally:
        stop(proc)
    assert not os.path.exists(os.path.dirname(config_path))  # removed when the gateway stops
    text = log.read_text(errors="replace")
    assert token not in text and webhook not in text


# --- runs end when their code is interrupted ---------------------------------------------------------
CHILD = """
import sys, time
from airflow_saga.core.mlflow_client import MlflowSettings, build_client
from airflow_saga.core.runs import ended_on_error
client = build_client(MlflowSettings(sys.argv[1]))
run_id = client.create_run("0").info.run_id
with ended_on_error(client, run_id):
    print(run_id, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize(("sig", "status"), [("SIGTERM", "KILLED"), ("SIGINT", "KILLED")])
def test_a_signalled_process_ends_its_run_killed(mlflow_server, mlflow_client, sig, status):
    import signal

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mlflow_server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = child.stdout.readline().strip()
        assert run_id, child.stderr.read()
        assert mlflow_client.get_run(run_id).info.status == "RUNNING"
        child.send_signal(getattr(signal, sig))
        child.wait(timeout=120)
    finally:
        child.kill()
    assert mlflow_client.get_run(run_id).info.status == status


def test_on_kill_ends_the_open_runs_of_the_process(mlflow_client):
    """What the operators' ``on_kill`` calls when Airflow terminates a task (SIGTERM to the task runner)."""
    import threading

    from airflow_saga.core.runs import end_active, ended_on_error

    run_id = mlflow_client.create_run("0").info.run_id
    inside, release = threading.Event(), threading.Event()

    def task() -> None:
        with ended_on_error(mlflow_client, run_id):
            inside.set()
            release.wait(60)

    worker = threading.Thread(target=task)
    worker.start()
    try:
        assert inside.wait(60)
        assert run_id in end_active("KILLED")
        assert mlflow_client.get_run(run_id).info.status == "KILLED"
    finally:
        release.set()
        worker.join(60)
    assert end_active("KILLED") == []  # nothing open any more


def test_a_retry_closes_only_its_own_earlier_tries(mlflow_client, model_name):
    """Sibling mapped instances, other tasks and DAG runs, and finished runs are left alone."""
    from airflow_saga.core.runs import CLOSED_BY, create_run
    from airflow_saga.core.training import get_or_create_experiment

    exp = get_or_create_experiment(mlflow_client, f"saga/{model_name}")
    base = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": "0"}

    def tags(**kw):
        return {f"saga.airflow.{k}": v for k, v in {**base, **kw}.items()}

    def run(finished=False, **kw):
        run_id = mlflow_client.create_run(exp, tags=tags(**kw)).info.run_id
        if finished:
            mlflow_client.set_terminated(run_id)
        return run_id

    orphan = run(try_number="1")
    keep = {
        "sibling map index": run(try_number="1", map_index="1"),
        "other task": run(try_number="1", task_id="t2"),
        "other DAG run": run(try_number="1", run_id="r2"),
        "a later try": run(try_number="3"),
    }
    done = run(try_number="1", finished=True)
    new = create_run(mlflow_client, exp, run_name="retry", tags=tags(try_number="2")).info.run_id
    status = {
        r.info.run_id: (r.info.status, r.data.tags.get(CLOSED_BY)) for r in mlflow_client.search_runs([exp])
    }
    assert status[orphan][0] == "FAILED" and status[orphan][1]
    for why, run_id in keep.items():
        assert status[run_id] == ("RUNNING", None), why
    assert status[done] == ("FINISHED", None)
    assert status[new] == ("RUNNING", None)
