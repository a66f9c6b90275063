"""Promotion, rollback and history against a real MLflow server (no mocks)."""

from __future__ import annotations

import json

import pytest

from airflow_saga.core import approval, promotion
from airflow_saga.core import tags as T
from airflow_saga.core.errors import GovernanceBusyError, PromotionError, RegistryError
from airflow_saga.core.locking import ModelLock, lock_name
from tests.support.registry import make_version, registry_state

pytestmark = pytest.mark.integration  # every test here talks to the session's MLflow server


_state = registry_state


def test_champion_requires_approved(mlflow_client, model_name):
    pending = make_version(mlflow_client, model_name)
    rejected = make_version(mlflow_client, model_name)
    approval.set_status(mlflow_client, model_name, rejected, T.REJECTED, by="b")
    before = _state(mlflow_client, model_name)
    with pytest.raises(
        PromotionError, match=rf"version {pending} champion: its approval status is PendingManualApproval"
    ):
        promotion.promote(mlflow_client, model_name, pending, T.CHAMPION, by="a", reason="r")
    with pytest.raises(
        PromotionError, match=rf"version {rejected} champion: its approval status is Rejected"
    ):
        promotion.promote(mlflow_client, model_name, rejected, T.CHAMPION, by="a", reason="r")
    with pytest.raises(
        PromotionError, match=rf"version {rejected} challenger: its approval status is Rejected"
    ):
        promotion.promote(mlflow_client, model_name, rejected, T.CHALLENGER, by="a", reason="r")
    with pytest.raises(RegistryError, match="has no version '42'"):
        promotion.promote(mlflow_client, model_name, "42", T.CHAMPION, by="a", reason="r")
    with pytest.raises(RegistryError, match="Unknown registered model"):
        promotion.promote(mlflow_client, model_name + "-missing", "1", T.CHAMPION, by="a", reason="r")
    assert _state(mlflow_client, model_name) == before
    # A Pending version may be shadow-tested as challenger.
    res = promotion.promote(mlflow_client, model_name, pending, T.CHALLENGER, by="a", reason="shadow")
    assert res.changed and promotion.aliases(mlflow_client, model_name) == {T.CHALLENGER: pending}


def test_history_is_complete_and_ordered(mlflow_client, model_name):
    v1, v2, v3 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(3))
    promotion.promote(
        mlflow_client, model_name, v1, "auto", by="ci", reason="first"
    )  # no champion -> champion
    res = promotion.promote(mlflow_client, model_name, v2, "auto", by="ci", reason="second")  # -> challenger
    assert res.alias == T.CHALLENGER
    same = promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="ci", reason="retry")
    assert not same.changed and same.entries == []
    promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="alice", reason="won shadow test")
    promotion.promote(mlflow_client, model_name, v3, T.CHALLENGER, by="ci", reason="third")
    promotion.remove_alias(mlflow_client, model_name, T.CHALLENGER, by="bob", reason="shadow failed")
    hist = promotion.history(mlflow_client, model_name)
    assert [h["seq"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert [(h["action"], h["alias"], h["from"], h["to"]) for h in hist] == [
        ("promote", T.CHAMPION, None, v1),
        ("promote", T.CHALLENGER, None, v2),
        ("promote", T.CHAMPION, v1, v2),
        ("demote", T.CHALLENGER, v2, None),
        ("promote", T.CHALLENGER, None, v3),
        ("demote", T.CHALLENGER, v3, None),
    ]
    assert hist[2]["by"] == "alice" and hist[2]["reason"] == "won shadow test"
    assert all(h["at"].endswith("Z") for h in hist)
    # Stored as one run per entry in the model's history experiment; the model itself carries one tag.
    tags = mlflow_client.get_registered_model(model_name).tags
    assert [k for k in tags if k.startswith("saga.history")] == [T.HISTORY_HEAD]
    head = json.loads(tags[T.HISTORY_HEAD])
    assert head["seq"] == 6 and head["aliases"] == {T.CHAMPION: v2}
    exp = mlflow_client.get_experiment_by_name(f"saga-history/{model_name}")
    assert exp.experiment_id == head["experiment_id"]
    runs = mlflow_client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.run_name for r in runs] == [
        f"#000001 promote champion - -> {v1}",
        f"#000002 promote challenger - -> {v2}",
        f"#000003 promote champion {v1} -> {v2}",
        f"#000004 demote challenger {v2} -> -",
        f"#000005 promote challenger - -> {v3}",
        f"#000006 demote challenger {v3} -> -",
    ]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert [r.info.start_time for r in runs] == sorted({r.info.start_time for r in runs})  # strictly
    assert runs[2].data.tags[T.HISTORY_BY] == "alice"
    assert promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v2}


def test_rollback_to_previous_then_no_more_history(mlflow_client, model_name):
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="one")
    promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="a", reason="two")
    res = promotion.rollback(mlflow_client, model_name, by="oncall", reason="latency spike")
    assert (res.previous, res.version) == (v2, v1)
    assert promotion.aliases(mlflow_client, model_name)[T.CHAMPION] == v1
    tags = mlflow_client.get_model_version(model_name, v2).tags
    assert tags[T.ROLLED_BACK_REASON] == "latency spike" and tags[T.ROLLED_BACK_BY] == "oncall"
    last = promotion.history(mlflow_client, model_name)[-1]
    assert (last["action"], last["from"], last["to"], last["reason"]) == ("rollback", v2, v1, "latency spike")
    # v2 was rolled back, v1 is current: there is nothing earlier to go back to.
    before = _state(mlflow_client, model_name)
    with pytest.raises(PromotionError, match="no previous Approved champion"):
        promotion.rollback(mlflow_client, model_name, by="oncall", reason="again")
    assert _state(mlflow_client, model_name) == before


def test_rollback_to_target_and_refusals(mlflow_client, model_name):
    v1, v2, v3 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(3))
    pending = make_version(mlflow_client, model_name)
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="one")
    promotion.promote(mlflow_client, model_name, v3, T.CHAMPION, by="a", reason="three")
    before = _state(mlflow_client, model_name)
    with pytest.raises(
        PromotionError, match=rf"version {pending}: its approval status is PendingManualApproval"
    ):
        promotion.rollback(mlflow_client, model_name, pending, by="a", reason="r")
    with pytest.raises(PromotionError, match="already champion"):
        promotion.rollback(mlflow_client, model_name, v3, by="a", reason="r")
    with pytest.raises(RegistryError, match="has no version '77'"):
        promotion.rollback(mlflow_client, model_name, "77", by="a", reason="r")
    assert _state(mlflow_client, model_name) == before
    res = promotion.rollback(mlflow_client, model_name, v2, by="a", reason="known good")
    assert (res.previous, res.version) == (v3, v2)
    assert promotion.aliases(mlflow_client, model_name)[T.CHAMPION] == v2


def test_rollback_without_history_changes_nothing(mlflow_client, model_name):
    make_version(mlflow_client, model_name, status=T.APPROVED)
    before = _state(mlflow_client, model_name)
    with pytest.raises(PromotionError, match=r"no previous Approved champion.*current champion: none"):
        promotion.rollback(mlflow_client, model_name, by="a", reason="r")
    assert _state(mlflow_client, model_name) == before
    with pytest.raises(RegistryError, match="Unknown registered model"):
        promotion.rollback(mlflow_client, model_name + "-missing", by="a", reason="r")


def test_rollback_skips_versions_revoked_since(mlflow_client, model_name):
    v1, v2, v3 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(3))
    for v in (v1, v2, v3):
        promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by="a", reason=f"v{v}")
    approval.set_status(mlflow_client, model_name, v2, T.REJECTED, by="sec", comment="CVE in dependency")
    res = promotion.rollback(mlflow_client, model_name, by="a", reason="bad")
    assert res.version == v1


def test_stale_lock_is_broken_and_live_lock_times_out(mlflow_client, model_name):
    v1 = make_version(mlflow_client, model_name, status=T.APPROVED)
    # A crashed holder: lock created with a lease that has already expired.
    mlflow_client.create_registered_model(
        lock_name(model_name), tags={"saga.lock.owner": "dead", "saga.lock.expires_at": "1.0"}
    )
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="after crash")
    assert promotion.aliases(mlflow_client, model_name)[T.CHAMPION] == v1
    held = ModelLock(mlflow_client, model_name, ttl=60).acquire()
    try:
        before = _state(mlflow_client, model_name)
        with pytest.raises(GovernanceBusyError, match="Could not lock registered model"):
            promotion.remove_alias(
                mlflow_client, model_name, T.CHAMPION, by="a", reason="r", lock_timeout=1.5
            )
        assert _state(mlflow_client, model_name) == before
    finally:
        held.release()
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        mlflow_client.get_registered_model(lock_name(model_name))
