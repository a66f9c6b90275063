"""Approval state machine against a real MLflow server (no mocks)."""

from __future__ import annotations

import json

import pytest

from airflow_saga.core import approval, promotion
from airflow_saga.core import tags as T
from airflow_saga.core.errors import ApprovalError, RegistryError
from tests.support.registry import make_version

pytestmark = pytest.mark.integration  # every test here talks to the session's MLflow server


def _log(client, name, version):
    return json.loads(client.get_model_version(name, version).tags[T.APPROVAL_LOG])


def test_pending_to_approved_records_who_when_why_how(mlflow_client, model_name):
    v = make_version(mlflow_client, model_name)
    mv = approval.set_status(mlflow_client, model_name, v, T.APPROVED, by="alice", comment="lgtm", via="api")
    assert approval.get_status(mv) == T.APPROVED
    assert mv.tags[T.APPROVAL_BY] == "alice"
    assert mv.tags[T.APPROVAL_COMMENT] == "lgtm"
    assert mv.tags[T.APPROVAL_VIA] == "api"
    log = _log(mlflow_client, model_name, v)
    assert [e["status"] for e in log] == [T.PENDING, T.APPROVED]
    assert log[-1]["by"] == "alice" and log[-1]["at"] == mv.tags[T.APPROVAL_AT]
    assert approval.decision(mv) == T.APPROVED


def test_revoke_then_rejected_is_final(mlflow_client, model_name):
    v = make_version(mlflow_client, model_name)
    approval.set_status(mlflow_client, model_name, v, T.APPROVED, by="alice", via="airflow")
    approval.set_status(mlflow_client, model_name, v, T.REJECTED, by="bob", comment="bias found")
    with pytest.raises(ApprovalError, match=r"cannot go from Rejected to Approved.*final"):
        approval.set_status(mlflow_client, model_name, v, T.APPROVED, by="alice")
    assert [e["status"] for e in _log(mlflow_client, model_name, v)] == [T.PENDING, T.APPROVED, T.REJECTED]


def test_same_status_is_idempotent(mlflow_client, model_name):
    v = make_version(mlflow_client, model_name)
    approval.set_status(mlflow_client, model_name, v, T.APPROVED, by="alice")
    approval.set_status(mlflow_client, model_name, v, T.APPROVED, by="alice")
    assert len(_log(mlflow_client, model_name, v)) == 2


def test_bad_inputs_change_nothing(mlflow_client, model_name):
    v = make_version(mlflow_client, model_name)
    with pytest.raises(ApprovalError, match="Unknown approval status 'Maybe'"):
        approval.set_status(mlflow_client, model_name, v, "Maybe", by="a")
    with pytest.raises(ApprovalError, match="via='email'"):
        approval.set_status(mlflow_client, model_name, v, T.APPROVED, by="a", via="email")
    with pytest.raises(RegistryError, match="has no version '99'"):
        approval.set_status(mlflow_client, model_name, "99", T.APPROVED, by="a")
    with pytest.raises(RegistryError, match="Unknown registered model 'nope-"):
        approval.set_status(mlflow_client, f"nope-{model_name}", "1", T.APPROVED, by="a")
    assert len(_log(mlflow_client, model_name, v)) == 1


def test_hand_set_bad_status_names_model_version_value(mlflow_client, model_name):
    v = make_version(mlflow_client, model_name)
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_STATUS, "approved!!")
    mv = mlflow_client.get_model_version(model_name, v)
    with pytest.raises(ApprovalError) as err:
        approval.decision(mv)
    msg = str(err.value)
    assert model_name in msg and f"version {v}" in msg and "'approved!!'" in msg
    with pytest.raises(ApprovalError, match="approved!!"):
        promotion.promote(mlflow_client, model_name, v, by="a", reason="r")


def test_decision_made_in_mlflow_ui_is_recorded_once(mlflow_client, model_name):
    v = make_version(mlflow_client, model_name)
    # What a reviewer does in the MLflow UI: edit the status tag only.
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_STATUS, T.APPROVED)
    mv = approval.observe(mlflow_client, model_name, v)
    log = _log(mlflow_client, model_name, v)
    assert log[-1]["status"] == T.APPROVED and log[-1]["via"] == "mlflow" and log[-1]["by"] == "mlflow-ui"
    assert mv.tags[T.APPROVAL_VIA] == "mlflow"
    approval.observe(mlflow_client, model_name, v)
    assert len(_log(mlflow_client, model_name, v)) == 2


def test_decision_in_mlflow_ui_with_reviewer_name(mlflow_client, model_name):
    v = make_version(mlflow_client, model_name)
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_BY, "carol")
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_COMMENT, "too slow")
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_STATUS, T.REJECTED)
    approval.observe(mlflow_client, model_name, v)
    last = _log(mlflow_client, model_name, v)[-1]
    assert (last["status"], last["by"], last["comment"], last["via"]) == (
        T.REJECTED,
        "carol",
        "too slow",
        "mlflow",
    )


def test_rejecting_champion_is_refused_and_challenger_is_dropped(mlflow_client, model_name):
    v1 = make_version(mlflow_client, model_name, status=T.APPROVED)
    v2 = make_version(mlflow_client, model_name, status=T.APPROVED)
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="first")
    promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="a", reason="try")
    with pytest.raises(ApprovalError, match="current champion"):
        approval.set_status(mlflow_client, model_name, v1, T.REJECTED, by="b")
    assert approval.get_status(mlflow_client.get_model_version(model_name, v1)) == T.APPROVED
    approval.set_status(mlflow_client, model_name, v2, T.REJECTED, by="b", comment="worse")
    assert T.CHALLENGER not in promotion.aliases(mlflow_client, model_name)
    last = promotion.history(mlflow_client, model_name)[-1]
    assert (last["action"], last["alias"], last["from"], last["to"]) == ("demote", T.CHALLENGER, v2, None)
