"""Declarative governance policies (issue 11 item 2) against a real MLflow server, and on the Airflow paths
(DAG argument, the ``saga_governance_policy`` Variable, HITL assigned_users, the sensor), the CLI and the
gateway's loader. One test per rule; each refusal names the rule and leaves the registry as it was."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from airflow_saga.core import approval, promotion
from airflow_saga.core import policy as P
from airflow_saga.core import tags as T
from airflow_saga.core.errors import PolicyError, ServingError
from tests.support.registry import make_version, registry_state

pytestmark = pytest.mark.integration

DIRECTORY = P.Directory(
    "test directory",
    {
        "alice": ("alice", frozenset({"op"})),
        "bob": ("bob", frozenset({"admin"})),
        "carol": ("carol", frozenset({"user"})),
    },
    frozenset({"viewer", "user", "op", "admin"}),
)


def _policy(rules, directory=DIRECTORY):
    return P.load_config({"default": rules}, directory=directory)("any-model")


def _refused(rule, fn, client, name, *needles):
    """Run ``fn``; it must raise PolicyError for ``rule``, name it, and change nothing."""
    before = registry_state(client, name)
    with pytest.raises(PolicyError) as err:
        fn()
    msg = str(err.value)
    assert err.value.rule == rule and f"rule {rule!r}" in msg and "nothing was changed" in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert registry_state(client, name) == before
    return msg


# ------------------------------------------------------------------------------------------ approvers
def test_only_approvers_may_approve_or_reject_users_and_roles(mlflow_client, model_name):
    pol = _policy({"approvers": {"users": ["alice"], "roles": ["admin"]}})
    v1, v2, v3 = (make_version(mlflow_client, model_name) for _ in range(3))
    for action in (T.APPROVED, T.REJECTED):
        _refused(
            "approvers",
            lambda a=action: approval.set_status(mlflow_client, model_name, v1, a, by="carol", policy=pol),
            mlflow_client,
            model_name,
            "'carol' (roles: user) may not",
            "users alice and roles admin",
        )
    mv = approval.set_status(mlflow_client, model_name, v1, T.APPROVED, by="alice (airflow:d/r)", policy=pol)
    assert approval.get_status(mv) == T.APPROVED
    mv = approval.set_status(mlflow_client, model_name, v2, T.REJECTED, by="bob", comment="no", policy=pol)
    assert approval.get_status(mv) == T.REJECTED  # bob is admin: admitted by role
    # A DAG run acting without a user is not a person on the list.
    _refused(
        "approvers",
        lambda: approval.set_status(mlflow_client, model_name, v3, T.APPROVED, by="airflow:d/r", policy=pol),
        mlflow_client,
        model_name,
    )


def test_auto_approve_at_registration_is_refused_unless_the_gate_is_an_approver(mlflow_client, model_name):
    from airflow_saga.core.registration import register_candidate

    run = mlflow_client.create_run("0")
    training = {"run_id": run.info.run_id, "model_uri": f"runs:/{run.info.run_id}/model"}
    pol = _policy({"approvers": {"users": ["alice"]}})
    with pytest.raises(PolicyError, match="auto_approve approves as") as err:
        register_candidate(mlflow_client, model_name, training=training, auto_approve=True, policy=pol)
    assert err.value.rule == "approvers"
    assert mlflow_client.search_registered_models(f"name='{model_name}'") == []  # nothing registered
    ok = register_candidate(mlflow_client, model_name, training=training, auto_approve=False, policy=pol)
    assert ok["approval_status"] == T.PENDING


# ------------------------------------------------------------------------------------------ four-eyes
def test_four_eyes_the_trainer_may_not_approve_their_version(mlflow_client, model_name):
    pol = _policy({"four_eyes": True, "approvers": {"roles": ["op", "admin"]}})
    v = make_version(mlflow_client, model_name, tags={T.AIRFLOW_TRIGGERED_BY: "alice"})
    _refused(
        "four-eyes",
        lambda: approval.set_status(
            mlflow_client, model_name, v, T.APPROVED, by="alice (airflow:t/r)", policy=pol
        ),
        mlflow_client,
        model_name,
        "'alice' triggered the training run",
    )
    # The trainer may still reject their own version; another approver may approve it.
    assert (
        approval.get_status(
            approval.set_status(mlflow_client, model_name, v, T.APPROVED, by="bob", policy=pol)
        )
        == T.APPROVED
    )
    scheduled = make_version(mlflow_client, model_name)  # no triggering user: nothing to compare
    assert (
        approval.get_status(
            approval.set_status(mlflow_client, model_name, scheduled, T.APPROVED, by="alice", policy=pol)
        )
        == T.APPROVED
    )


def test_hand_approval_by_the_trainer_is_a_violation_and_does_not_count(mlflow_client, model_name):
    pol = _policy({"four_eyes": True})
    v = make_version(mlflow_client, model_name, tags={T.AIRFLOW_TRIGGERED_BY: "alice"})
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_BY, "alice")
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_STATUS, T.APPROVED)
    mv = approval.observe(mlflow_client, model_name, v, policy=pol)
    assert approval.get_status(mv) == T.PENDING
    last = approval.approval_log(mv)[-1]
    assert last["violation"]["rule"] == "four-eyes" and last["violation"]["attempted"] == T.APPROVED
    assert last["via"] == "mlflow" and last["by"] == "alice"


# ------------------------------------------------------------------------------------ protected aliases
def test_champion_needs_a_passed_shadow_comparison(mlflow_client, model_name):
    pol = _policy({"protected_aliases": {"champion": {"shadow_passed": True}}})
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))

    def promote():
        return promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="r", policy=pol)

    _refused("protected-alias:shadow-passed", promote, mlflow_client, model_name, "no shadow comparison")
    mlflow_client.set_model_version_tag(model_name, v1, T.SHADOW_DECISION, "keep")
    mlflow_client.set_model_version_tag(model_name, v1, T.SHADOW_PASSED, "false")
    _refused(
        "protected-alias:shadow-passed",
        promote,
        mlflow_client,
        model_name,
        "a failed one (shadow decision keep)",
    )
    mlflow_client.set_model_version_tag(model_name, v1, T.SHADOW_PASSED, "true")
    assert promote().changed
    # Challenger is not protected by this policy; a rollback is exempt unless on_rollback.
    promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="a", reason="r", policy=pol)
    mlflow_client.set_model_version_tag(model_name, v2, T.SHADOW_PASSED, "true")
    promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="a", reason="r", policy=pol)
    strict = _policy({"protected_aliases": {"champion": {"shadow_passed": True, "on_rollback": True}}})
    mlflow_client.delete_model_version_tag(model_name, v1, T.SHADOW_PASSED)
    _refused(
        "protected-alias:shadow-passed",
        lambda: promotion.rollback(mlflow_client, model_name, by="a", reason="bad", policy=strict),
        mlflow_client,
        model_name,
    )
    assert promotion.rollback(mlflow_client, model_name, by="a", reason="bad", policy=pol).version == v1


def test_champion_needs_a_minimum_time_as_challenger(mlflow_client, model_name):
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    long = _policy({"protected_aliases": {"champion": {"min_challenger_hours": 24}}})
    _refused(
        "protected-alias:min-challenger-time",
        lambda: promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="r", policy=long),
        mlflow_client,
        model_name,
        "never held @challenger",
    )
    promotion.promote(mlflow_client, model_name, v1, T.CHALLENGER, by="a", reason="shadow it", policy=long)
    _refused(
        "protected-alias:min-challenger-time",
        lambda: promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="r", policy=long),
        mlflow_client,
        model_name,
        "needs at least 24 h as challenger",
        "held @challenger 0.00 h",
    )
    short = _policy({"protected_aliases": {"champion": {"min_challenger_hours": 0.0002}}})  # 0.72 s
    time.sleep(1.5)
    assert promotion.promote(
        mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="r", policy=short
    ).changed
    assert v2  # unused second version keeps the model's history realistic


def test_promoters_can_set_challenger_but_not_champion(mlflow_client, model_name):
    """mlflow#24742: "can set aliases, but not @champion"."""
    pol = _policy({"protected_aliases": {"champion": {"promoters": {"users": ["bob", "airflow:release"]}}}})
    v1 = make_version(mlflow_client, model_name, status=T.APPROVED)
    assert promotion.promote(
        mlflow_client, model_name, v1, T.CHALLENGER, by="carol", reason="r", policy=pol
    ).changed
    _refused(
        "protected-alias:promoters",
        lambda: promotion.promote(
            mlflow_client, model_name, v1, T.CHAMPION, by="carol", reason="r", policy=pol
        ),
        mlflow_client,
        model_name,
        "'carol' may not move @champion",
        "users airflow:release, bob",
    )
    res = promotion.promote(
        mlflow_client, model_name, v1, T.CHAMPION, by="airflow:release/manual__1", reason="r", policy=pol
    )
    assert res.changed and res.previous is None


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_enforces_the_policy_file(
    mlflow_client, mlflow_server, model_name, tmp_path, capsys, monkeypatch
):
    from airflow_saga.cli import main

    monkeypatch.delenv("AIRFLOW_VAR_SAGA_GOVERNANCE_POLICY", raising=False)
    # Airflow is installed, so the policy's users are checked against its auth manager's users.
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "alice:op,bob:admin")
    v = make_version(mlflow_client, model_name, tags={T.AIRFLOW_TRIGGERED_BY: "alice"})
    path = tmp_path / "policy.json"
    path.write_text(
        json.dumps({"models": {model_name: {"four_eyes": True, "approvers": {"users": ["alice", "bob"]}}}})
    )
    uri = ["--tracking-uri", mlflow_server.url, "--policy", str(path)]
    before = registry_state(mlflow_client, model_name)
    for by, needle in (("mallory", "approvers"), ("alice", "four-eyes")):
        code = main(["approve", model_name, v, "--comment", "mine", "--by", by, *uri])
        err = capsys.readouterr().err
        assert code == 1 and f"rule {needle!r}" in err and "nothing was changed" in err, err
    assert registry_state(mlflow_client, model_name) == before
    assert main(["approve", model_name, v, "--comment", "reviewed", "--by", "bob", *uri]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"default": {"four_eyes": "sometimes"}}')
    code = main(
        [
            "promote",
            model_name,
            v,
            "--reason",
            "x",
            "--by",
            "bob",
            "--tracking-uri",
            mlflow_server.url,
            "--policy",
            str(bad),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "--policy.default.four_eyes" in err and "'sometimes'" in err


# -------------------------------------------------------------------------------------------- gateway
def test_gateway_refuses_an_alias_moved_by_hand_when_the_policy_says_so(
    mlflow_client, mlflow_settings, model_name, monkeypatch
):
    from airflow_saga.serving.models import Loader

    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="first")
    mlflow_client.set_registered_model_alias(model_name, T.CHAMPION, v2)  # by hand, as the MLflow UI does
    loader = Loader(mlflow_settings, model_name, fast_path=False)
    try:
        loader.check_recorded(T.CHAMPION, v2)  # default policy: served (the story WP logs it)
        monkeypatch.setenv(
            P.POLICY_ENV, json.dumps({"models": {model_name: {"refuse_unrecorded_serving": True}}})
        )
        with pytest.raises(
            ServingError, match=f"refusing to serve @champion of model '{model_name}': version {v2}"
        ):
            loader.check_recorded(T.CHAMPION, v2)
        res = promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="a", reason="recorded now")
        assert res.changed and (res.previous, res.version) == (v1, v2)  # the hand move, now in the history
        assert promotion.history(mlflow_client, model_name)[-1]["reason"] == "recorded now"
        loader.check_recorded(T.CHAMPION, v2)  # recorded: served
    finally:
        loader.close()


# -------------------------------------------------------------------------------------------- Airflow
@pytest.fixture
def airflow_conn(airflow_db, mlflow_server, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps({"conn_type": "mlflow", "host": mlflow_server.url, "extra": {"max_retries": 0}}),
    )
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "alice:op,bob:admin,carol:user,dave:op")
    monkeypatch.delenv("AIRFLOW_VAR_SAGA_GOVERNANCE_POLICY", raising=False)


def _sync(dag):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


def test_variable_is_validated_against_airflow_users_and_roles(airflow_conn, monkeypatch):
    from airflow_saga import policies

    monkeypatch.setenv(
        "AIRFLOW_VAR_SAGA_GOVERNANCE_POLICY", json.dumps({"default": {"approvers": {"roles": ["op"]}}})
    )
    pol = policies.policy_for("churn")
    assert pol.name == "Variable saga_governance_policy:default" and pol.approvers() == ["alice", "dave"]
    monkeypatch.setenv(
        "AIRFLOW_VAR_SAGA_GOVERNANCE_POLICY", json.dumps({"default": {"approvers": {"users": ["zed"]}}})
    )
    with pytest.raises(
        PolicyError, match=r"Variable saga_governance_policy\.default\.approvers\.users: unknown user 'zed'"
    ):
        policies.policy_for("churn")
    with pytest.raises(PolicyError, match="unknown role 'superuser'"):
        policies.policy_for("churn", {"default": {"approvers": {"roles": ["superuser"]}}})
    # The DAG's argument wins over the Variable.
    assert policies.policy_for("churn", {"default": {"four_eyes": True}}).rules.four_eyes


def test_sensor_records_a_hand_approval_that_breaks_the_dag_policy_and_keeps_waiting(
    airflow_conn, mlflow_client, model_name, capfd
):
    from airflow.sdk import DAG

    from airflow_saga.sensors.approval import ModelApprovalSensor

    v = make_version(mlflow_client, model_name, tags={T.AIRFLOW_TRIGGERED_BY: "alice"})
    policy = {"default": {"four_eyes": True, "approvers": {"roles": ["op"]}}}
    with DAG(
        f"t_pol_sensor_{uuid.uuid4().hex[:8]}", schedule=None, default_args={"governance_policy": policy}
    ) as dag:
        ModelApprovalSensor(
            task_id="wait", model_name=model_name, version=v, poke_interval=1, timeout=4, retries=0
        )
    _sync(dag)
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_BY, "alice")  # the trainer, by hand
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_STATUS, T.APPROVED)
    dr = dag.test()
    assert {ti.task_id: ti.state for ti in dr.get_task_instances()} == {"wait": "failed"}
    assert "No approval decision" in capfd.readouterr().out  # the violation did not count
    mv = mlflow_client.get_model_version(model_name, v)
    assert approval.get_status(mv) == T.PENDING
    assert approval.approval_log(mv)[-1]["violation"]["rule"] == "four-eyes"
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_BY, "dave")  # another op, by hand
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_STATUS, T.APPROVED)
    dr = dag.test()
    assert {ti.task_id: ti.state for ti in dr.get_task_instances()} == {"wait": "success"}
    last = approval.approval_log(mlflow_client.get_model_version(model_name, v))[-1]
    assert (last["status"], last["by"], last["via"]) == (
        T.APPROVED,
        "dave",
        "mlflow",
    ) and "violation" not in last


def test_hitl_is_assigned_to_the_policy_approvers_minus_the_trainer(
    airflow_conn, mlflow_client, model_name, monkeypatch
):
    import threading

    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.sdk import DAG
    from airflow.triggers.base import TriggerEvent
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_saga.operators.approval import ApproveModelOperator, model_approval_request

    monkeypatch.setenv(
        "AIRFLOW_VAR_SAGA_GOVERNANCE_POLICY",
        json.dumps(
            {"models": {model_name: {"four_eyes": True, "approvers": {"users": ["bob"], "roles": ["op"]}}}}
        ),
    )
    v = make_version(mlflow_client, model_name, tags={T.AIRFLOW_TRIGGERED_BY: "alice"})
    seen = {}

    def run(responder):
        with DAG(f"t_pol_hitl_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
            ask = model_approval_request(model_name=model_name, version=v)
            ask >> ApproveModelOperator(task_id="record", model_name=model_name, version=v)
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
                        seen["assigned"] = hd.assigned_users
                        time.sleep(2)  # answering within ~1 s of awaiting_input races in 3.3.2
                        hd.chosen_options = ["Approve"]
                        hd.params_input = {"comment": "reviewed"}
                        hd.responded_by = {"id": responder, "name": responder}
                        hd.responded_at = timezone.utcnow()
                        handle_event_submit(
                            TriggerEvent(hd.as_resume_event_payload()), task_instance=ti, session=s
                        )
                        return
                time.sleep(0.5)

        threading.Thread(target=answer, daemon=True).start()
        return dag.test()

    # Airflow's API refuses a non-assignee (403); the recorder refuses one too if an answer got through.
    dr = run("carol")
    assert {u["name"] for u in seen["assigned"]} == {"bob", "dave"}  # alice trained it: left out
    assert {ti.task_id: ti.state for ti in dr.get_task_instances()}["record"] == "failed"
    assert approval.get_status(mlflow_client.get_model_version(model_name, v)) == T.PENDING
    dr = run("dave")
    assert {ti.task_id: ti.state for ti in dr.get_task_instances()}["record"] == "success"
    last = approval.approval_log(mlflow_client.get_model_version(model_name, v))[-1]
    assert (last["status"], last["by"], last["via"]) == (T.APPROVED, "dave", "airflow")


def test_airflow_facts_record_the_triggering_user(airflow_conn):
    from airflow.sdk import DAG, task

    from airflow_saga.operators.base import airflow_facts

    with DAG(f"t_pol_facts_{uuid.uuid4().hex[:8]}", schedule=None) as dag:

        @task
        def facts(**context):
            return airflow_facts(context)

        facts()
    _sync(dag)
    dr = dag.test()
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as s:
        row = s.query(XComModel).filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id="facts").first()
        out = XComModel.deserialize_value(row)
    assert out["triggered_by"] == "dag_test"  # what dag.test() records as the triggering user


def test_cli_reads_the_variable_from_airflow_metadata_db(
    airflow_conn, mlflow_client, mlflow_server, model_name, capsys
):
    from airflow.models import Variable

    from airflow_saga.cli import main

    v = make_version(mlflow_client, model_name, status=T.APPROVED)
    Variable.set(
        "saga_governance_policy",
        json.dumps(
            {"models": {model_name: {"protected_aliases": {"champion": {"promoters": {"users": ["bob"]}}}}}}
        ),
    )
    try:
        argv = ["promote", model_name, v, "--reason", "ship", "--tracking-uri", mlflow_server.url]
        assert main([*argv, "--by", "carol"]) == 1
        err = capsys.readouterr().err
        assert "rule 'protected-alias:promoters'" in err and "Variable saga_governance_policy" in err, err
        assert main([*argv, "--by", "bob"]) == 0
    finally:
        Variable.delete("saga_governance_policy")


def test_shadow_gate_promotes_under_shadow_passed_and_is_refused_when_not_a_promoter(
    mlflow_client, model_name
):
    from airflow_saga.core import shadow

    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="one")
    promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="a", reason="two")
    metrics = {"error_rate": 0.0, "agreement": 1.0, "latency_p99_ms": 5.0}
    report = {
        "schema": "saga.shadow/v1",
        "model_name": model_name,
        "mode": "replay",
        "champion": {"version": v1, "metrics": metrics},
        "candidate": {"version": v2, "metrics": metrics},
    }
    gate = {"conditions": "candidate.error_rate <= 0.01", "on_pass": "promote"}
    only_bob = _policy({"protected_aliases": {"champion": {"promoters": {"users": ["bob"]}}}})
    with pytest.raises(PolicyError, match="'airflow-saga shadow gate' may not move @champion"):
        shadow.gate(mlflow_client, model_name, report, policy=only_bob, **gate)
    assert promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v1, T.CHALLENGER: v2}
    # The gate records the passed comparison before it promotes, so shadow_passed lets it through.
    passed = _policy({"protected_aliases": {"champion": {"shadow_passed": True}}})
    out = shadow.gate(mlflow_client, model_name, report, policy=passed, **gate)
    assert out["promotion"]["version"] == v2 and promotion.aliases(mlflow_client, model_name) == {
        T.CHAMPION: v2
    }
    assert mlflow_client.get_model_version(model_name, v2).tags[T.SHADOW_PASSED] == "true"
