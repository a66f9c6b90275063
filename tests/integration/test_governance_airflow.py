"""Governance operators, sensor, trigger and the saga_rollback DAG under Airflow's dag.test().

Real MLflow server, real Airflow metadata DB (SQLite, per session). Test-only DAGs are built inline and
synced to the DB with ``sync_bag_to_db`` (dag.test() needs a serialized DAG).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest

from airflow_saga.core import approval, promotion
from airflow_saga.core import tags as T
from tests.support.registry import make_version

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.initdb()


@pytest.fixture
def mlflow_conn(mlflow_server, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps({"conn_type": "mlflow", "host": mlflow_server.url, "extra": {"max_retries": 0}}),
    )


def _sync(dag):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


def _states(dr):
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


def _xcom(dr, task_id, key="return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as s:
        row = (
            s.query(XComModel).filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id=task_id, key=key).first()
        )
        return None if row is None else XComModel.deserialize_value(row)


def _later(delay, fn, *args):
    t = threading.Timer(delay, fn, args=args)
    t.start()
    return t


def _sensor_dag(model_name, version, *, deferrable, timeout=60):
    from airflow.sdk import DAG

    from airflow_saga.sensors.approval import ModelApprovalSensor

    with DAG(f"t_sensor_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
        ModelApprovalSensor(
            task_id="wait",
            model_name=model_name,
            version=version,
            deferrable=deferrable,
            poke_interval=1,
            timeout=timeout,
            retries=0,
        )
    return _sync(dag)


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_sensor_sees_mlflow_ui_approval(airflow_db, mlflow_conn, mlflow_client, model_name, deferrable):
    v = make_version(mlflow_client, model_name)
    dag = _sensor_dag(model_name, v, deferrable=deferrable)
    _later(3, mlflow_client.set_model_version_tag, model_name, v, T.APPROVAL_STATUS, T.APPROVED)
    dr = dag.test()
    assert _states(dr) == {"wait": "success"}
    out = _xcom(dr, "wait")
    assert out["status"] == T.APPROVED and out["via"] == "mlflow" and out["by"] == "mlflow-ui"
    log = approval.approval_log(mlflow_client.get_model_version(model_name, v))
    assert [(e["status"], e["via"]) for e in log] == [(T.PENDING, "api"), (T.APPROVED, "mlflow")]


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_sensor_fails_on_rejection(airflow_db, mlflow_conn, mlflow_client, model_name, deferrable, capfd):
    v = make_version(mlflow_client, model_name)
    dag = _sensor_dag(model_name, v, deferrable=deferrable)

    def reject():
        mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_COMMENT, "drift on segment B")
        mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_STATUS, T.REJECTED)

    _later(3, reject)
    dr = dag.test()
    assert _states(dr) == {"wait": "failed"}
    assert "was rejected by mlflow-ui via mlflow: drift on segment B" in capfd.readouterr().out


def test_sensor_timeout_message(airflow_db, mlflow_conn, mlflow_client, model_name, capfd):
    v = make_version(mlflow_client, model_name)
    dr = _sensor_dag(model_name, v, deferrable=False, timeout=2).test()
    assert _states(dr) == {"wait": "failed"}
    out = capfd.readouterr().out
    assert f"No approval decision for model '{model_name}' version {v} within 0:00:02" in out
    assert approval.get_status(mlflow_client.get_model_version(model_name, v)) == T.PENDING


def test_trigger_polls_without_blocking_and_times_out(mlflow_conn, mlflow_client, model_name):
    from airflow_saga.triggers.approval import ModelApprovalTrigger

    v = make_version(mlflow_client, model_name)
    trig = ModelApprovalTrigger(model_name, v, poll_interval=0.5, timeout_at=time.time() + 2)
    cls, kwargs = trig.serialize()
    assert cls == "airflow_saga.triggers.approval.ModelApprovalTrigger"
    assert ModelApprovalTrigger(**kwargs).serialize() == (cls, kwargs)

    async def first_event_and_ticks():
        ticks = 0

        async def ticker():  # proves the event loop keeps running while MLflow is polled
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        event = await anext(trig.run())
        task.cancel()
        return event, ticks

    event, ticks = asyncio.run(first_event_and_ticks())
    assert event.payload["status"] == "timeout" and ticks >= 20
    approval.set_status(mlflow_client, model_name, v, T.APPROVED, by="ann", comment="ok")
    event, _ = asyncio.run(first_event_and_ticks())
    assert event.payload["status"] == T.APPROVED and event.payload["entry"]["by"] == "ann"


def test_promote_operator_auto_and_refusal(airflow_db, mlflow_conn, mlflow_client, mlflow_server, model_name):
    from airflow.sdk import DAG

    from airflow_saga.operators import PromoteModelOperator

    v1 = make_version(mlflow_client, model_name, status=T.APPROVED)
    v2 = make_version(mlflow_client, model_name, status=T.APPROVED)
    pending = make_version(mlflow_client, model_name)
    with DAG(f"t_promote_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
        PromoteModelOperator(task_id="p1", model_name=model_name, version=v1, alias="auto", reason="first")
        PromoteModelOperator(
            task_id="p2",
            model_name=model_name,
            version="{{ params.v }}",
            alias="auto",
            params={"v": v2},
            reason="next",
        )
        PromoteModelOperator(
            task_id="bad", model_name=model_name, version=pending, alias="champion", retries=3
        )
    dag.get_task("p1") >> dag.get_task("p2") >> dag.get_task("bad")
    dr = _sync(dag).test()
    assert _states(dr) == {"p1": "success", "p2": "success", "bad": "failed"}
    assert promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v1, T.CHALLENGER: v2}
    assert _xcom(dr, "p2")["alias"] == T.CHALLENGER
    # The extra link the API server shows: persisted by the worker under _link_<ClassName>.
    link = _xcom(dr, "p1", key="_link_MlflowModelVersionLink")
    assert link == f"{mlflow_server.url}/#/models/{model_name}/versions/{v1}"
    hist = promotion.history(mlflow_client, model_name)
    assert len(hist) == 2 and f"airflow:{dr.dag_id}/{dr.run_id}" in hist[0]["by"]


def test_rollback_dag_without_logical_date(airflow_db, mlflow_conn, mlflow_client, model_name):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import DAGS_DIR

    bag = DagBag(dag_folder=str(DAGS_DIR / "saga_rollback.py"))
    assert not bag.import_errors
    dag = _sync(bag.dags["saga_rollback"])
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    pending = make_version(mlflow_client, model_name)

    # No history yet: fails clearly, nothing changes.
    dr = dag.test(logical_date=None, run_conf={"model_name": model_name, "reason": "oops"})
    assert _states(dr) == {"rollback": "failed"}
    assert promotion.history(mlflow_client, model_name) == []

    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="t", reason="one")
    promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="t", reason="two")
    dr = dag.test(
        logical_date=None, run_conf={"model_name": model_name, "target_version": pending, "reason": "x"}
    )
    assert _states(dr) == {"rollback": "failed"}
    assert promotion.aliases(mlflow_client, model_name)[T.CHAMPION] == v2

    # dag.test() keeps the previous run's conf in dag.params, so reset target_version explicitly.
    conf = {"model_name": model_name, "target_version": None, "reason": "p99 latency doubled"}
    dr = dag.test(logical_date=None, run_conf=conf)
    assert _states(dr) == {"rollback": "success"}
    assert promotion.aliases(mlflow_client, model_name)[T.CHAMPION] == v1
    last = promotion.history(mlflow_client, model_name)[-1]
    assert (last["action"], last["from"], last["to"]) == ("rollback", v2, v1)
    assert last["reason"].startswith("p99 latency doubled (run ")
    assert mlflow_client.get_model_version(model_name, v2).tags[T.ROLLED_BACK_REASON] == last["reason"]


def test_hitl_answer_is_recorded_and_reject_fails(airflow_db, mlflow_conn, mlflow_client, model_name, capfd):
    """The HITL task and the recorder under dag.test(); the answer is written as Airflow's API would."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.sdk import DAG
    from airflow.triggers.base import TriggerEvent
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_saga.operators.approval import ApproveModelOperator, model_approval_request

    def run(version, option, comment):
        with DAG(f"t_hitl_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
            ask = model_approval_request(model_name=model_name, version=version)
            ask >> ApproveModelOperator(task_id="record", model_name=model_name, version=version)
        _sync(dag)

        def answer():
            deadline = time.time() + 60
            while time.time() < deadline:
                with create_session() as s:
                    ti = s.scalar(
                        select(TaskInstance).where(
                            TaskInstance.dag_id == dag.dag_id, TaskInstance.task_id == "approve_in_airflow"
                        )
                    )
                    hd = ti and s.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
                    if hd is not None:
                        time.sleep(2)  # answering within ~1 s of awaiting_input races in 3.3.2
                        hd.chosen_options = [option]
                        hd.params_input = {"comment": comment}
                        hd.responded_by = {"id": "bob", "name": "bob"}
                        hd.responded_at = timezone.utcnow()
                        handle_event_submit(
                            TriggerEvent(hd.as_resume_event_payload()), task_instance=ti, session=s
                        )
                        return
                time.sleep(0.5)

        threading.Thread(target=answer, daemon=True).start()
        return dag.test()

    v1 = make_version(mlflow_client, model_name, metrics={"accuracy": 0.9})
    dr = run(v1, "Approve", "ship it")
    assert _states(dr) == {"approve_in_airflow": "success", "record": "success"}
    mv = mlflow_client.get_model_version(model_name, v1)
    last = approval.approval_log(mv)[-1]
    assert (last["status"], last["by"], last["via"]) == (T.APPROVED, "bob", "airflow")
    assert last["comment"].startswith("ship it [airflow ")

    v2 = make_version(mlflow_client, model_name)
    dr = run(v2, "Reject", "worse than champion")
    assert _states(dr) == {"approve_in_airflow": "success", "record": "failed"}
    assert approval.get_status(mlflow_client.get_model_version(model_name, v2)) == T.REJECTED
    assert "was rejected by bob: worse than champion" in capfd.readouterr().out


def _gate_dag(model_name, report, **kwargs):
    from airflow.sdk import DAG

    from airflow_saga.operators.shadow import ShadowGateOperator

    with DAG(f"t_gate_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
        ShadowGateOperator(task_id="gate", model_name=model_name, report=report, retries=0, **kwargs)
    return _sync(dag)


def _report(model_name, champion, candidate, passed=True):
    metrics = {"error_rate": 0.0 if passed else 0.5, "agreement": 1.0, "latency_p99_ms": 5.0}
    return {
        "schema": "saga.shadow/v1",
        "model_name": model_name,
        "mode": "replay",
        "champion": {"version": champion, "metrics": dict(metrics, error_rate=0.0)},
        "candidate": {"version": candidate, "metrics": metrics},
    }


def test_shadow_gate_acts_only_on_the_versions_it_judged(airflow_db, mlflow_conn, mlflow_client, model_name):
    """The gate's remove/promote are conditional on the holders inside the lock: a challenger or champion
    that moved since the comparison is left alone."""
    v1, v2, v3 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(3))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="t", reason="one")
    promotion.promote(mlflow_client, model_name, v3, T.CHALLENGER, by="t", reason="newer challenger")
    # The report judged v2 as challenger, but v3 holds the alias now: nothing is removed.
    dr = _gate_dag(model_name, _report(model_name, v1, v2, passed=False), on_fail="remove").test()
    assert _states(dr) == {"gate": "success"}
    assert _xcom(dr, "gate")["promotion"] is None
    assert promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v1, T.CHALLENGER: v3}
    # It judged v3 against champion v2, but champion is v1: promotion refused, nothing changes.
    before = promotion.history(mlflow_client, model_name)
    dr = _gate_dag(model_name, _report(model_name, v2, v3), on_pass="promote").test()
    assert _states(dr) == {"gate": "failed"}
    assert promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v1, T.CHALLENGER: v3}
    assert promotion.history(mlflow_client, model_name) == before
    # The judged versions still hold their aliases: the challenger is removed, inside the lock.
    dr = _gate_dag(model_name, _report(model_name, v1, v3, passed=False), on_fail="remove").test()
    assert _states(dr) == {"gate": "success"}
    assert promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v1}
    assert promotion.history(mlflow_client, model_name)[-1]["by"] == "airflow-saga shadow gate"
