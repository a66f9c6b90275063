"""The governance unit of work against a real MLflow server: lock lease and fencing, crash recovery of the
history, migration of pre-0.2 histories, paged reads, expected holders, idempotent retries, policy hooks.

Crash states are produced with the library's own primitives (an intent written and the writer gone; an
alias moved and the writer gone), which is exactly what a process killed at that point leaves behind.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from airflow_saga.core import alias_history as H
from airflow_saga.core import approval, governance, promotion
from airflow_saga.core import policy as P
from airflow_saga.core import tags as T
from airflow_saga.core.errors import (
    AliasMovedError,
    ApprovalError,
    GovernanceBusyError,
    PolicyError,
    PromotionError,
)
from airflow_saga.core.locking import EXPIRES_TAG, OWNER_TAG, LockLost, ModelLock, lock_name
from tests.support.registry import make_version, registry_state

pytestmark = pytest.mark.integration


def _seqs(client, name):
    return [h["seq"] for h in promotion.history(client, name)]


# ------------------------------------------------------------------------------------------------ lock
def test_lease_is_renewed_while_held_and_check_fences(mlflow_client, model_name):
    make_version(mlflow_client, model_name)
    lock = ModelLock(mlflow_client, model_name, ttl=2.0, timeout=1.0).acquire()
    try:
        first = float(mlflow_client.get_registered_model(lock_name(model_name)).tags[EXPIRES_TAG])
        time.sleep(3.0)  # longer than the lease: only the heartbeat keeps it
        renewed = float(mlflow_client.get_registered_model(lock_name(model_name)).tags[EXPIRES_TAG])
        assert renewed > first
        with pytest.raises(GovernanceBusyError, match="Could not lock"):
            ModelLock(mlflow_client, model_name, timeout=1.0).acquire()
        lock.check()  # still ours
        # Someone else's token in the registry (a breaker that thought we were dead): check() refuses.
        mlflow_client.set_registered_model_tag(lock_name(model_name), OWNER_TAG, "someone-else")
        with pytest.raises(LockLost, match="held by another writer"):
            lock.check()
    finally:
        lock.release()
    # We lost it, so release left the other owner's lock alone.
    assert mlflow_client.get_registered_model(lock_name(model_name)).tags[OWNER_TAG] == "someone-else"
    mlflow_client.delete_registered_model(lock_name(model_name))


def test_stale_lock_of_a_dead_holder_is_broken_within_the_lease(mlflow_client, model_name):
    v = make_version(mlflow_client, model_name, status=T.APPROVED)
    dead = ModelLock(mlflow_client, model_name, ttl=2.0).acquire()
    dead._stop.set()  # the holder "dies": no more renewals, no release
    t0 = time.monotonic()
    promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by="a", reason="after crash")
    assert time.monotonic() - t0 < 30  # generous: a 2 s lease plus backoff on a loaded machine
    assert promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v}
    assert not mlflow_client.search_registered_models(f"name = '{lock_name(model_name)}'")


# ------------------------------------------------------------------------------------------ recovery
def _writer(client, name):
    """A unit of work's history writer with the lock held, as a writer that is about to crash has it."""
    lock = ModelLock(client, name).acquire()
    state = H.read_state(client, name)
    return lock, H.HistoryWriter(client, state, lock.check)


def test_writer_killed_before_moving_the_alias_leaves_no_entry(mlflow_client, model_name):
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="one")
    lock, writer = _writer(mlflow_client, model_name)
    writer.intend(
        [{"by": "dead", "action": "promote", "alias": T.CHAMPION, "from": v1, "to": v2, "reason": "x"}]
    )
    lock._stop.set()  # killed here: intent written, alias not moved, lock never released
    assert _seqs(mlflow_client, model_name) == [1]  # an intent is not an entry
    promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="b", reason="next")
    hist = promotion.history(mlflow_client, model_name)
    assert [(h["seq"], h["by"], h["alias"]) for h in hist] == [(1, "a", T.CHAMPION), (2, "b", T.CHALLENGER)]
    exp = mlflow_client.get_experiment_by_name(H.experiment_name(model_name))
    assert mlflow_client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'") == []


def test_writer_killed_after_moving_the_alias_is_completed_with_its_who_and_why(mlflow_client, model_name):
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="one")
    promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="a", reason="shadow")
    lock, writer = _writer(mlflow_client, model_name)
    writer.intend(
        [
            {"by": "carol", "action": "promote", "alias": T.CHAMPION, "from": v1, "to": v2, "reason": "won"},
            {
                "by": "carol",
                "action": "demote",
                "alias": T.CHALLENGER,
                "from": v2,
                "to": None,
                "reason": "won",
            },
        ]
    )
    H.set_alias(mlflow_client, model_name, T.CHAMPION, v2)
    lock._stop.set()  # killed after the first alias move: challenger still on v2, head not advanced
    res = promotion.remove_alias(mlflow_client, model_name, T.CHALLENGER, by="b", reason="tidy")
    assert not res.changed  # recovery already finished carol's demotion
    hist = promotion.history(mlflow_client, model_name)
    assert [(h["seq"], h["by"], h["action"], h["to"]) for h in hist] == [
        (1, "a", "promote", v1),
        (2, "a", "promote", v2),
        (3, "carol", "promote", v2),
        (4, "carol", "demote", None),
    ]
    assert promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v2}


# ------------------------------------------------------------------------------------------ migration
def _legacy(client, name, entries):
    for i, (action, alias, frm, to) in enumerate(entries, start=1):
        entry = {"seq": i, "at": f"2025-01-0{i}T10:00:00.000Z", "by": "old", "action": action, "alias": alias}
        entry |= {"from": frm, "to": to, "reason": f"legacy {i}"}
        client.set_registered_model_tag(name, H.legacy_key(i), json.dumps(entry))


def test_legacy_history_is_read_then_migrated_once_under_the_lock(mlflow_client, model_name):
    v1, v2, v3 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(3))
    mlflow_client.set_registered_model_alias(model_name, T.CHAMPION, v2)
    _legacy(mlflow_client, model_name, [("promote", T.CHAMPION, None, v1), ("promote", T.CHAMPION, v1, v2)])
    before = promotion.history(mlflow_client, model_name)
    assert [(h["seq"], h["to"], h["at"]) for h in before] == [
        (1, v1, "2025-01-01T10:00:00.000Z"),
        (2, v2, "2025-01-02T10:00:00.000Z"),
    ]
    # Interrupted migration: entry 1 already copied, head not advanced, tags still there.
    lock, writer = _writer(mlflow_client, model_name)
    eid = writer.experiment_id()
    mlflow_client.create_run(
        eid,
        start_time=H.parse_time_ms(before[0]["at"]),
        tags={**H.entry_tags(model_name, before[0], "old-txn"), T.HISTORY_MIGRATED: "true"},
    )  # and killed before ending it: still RUNNING
    lock.release()
    assert promotion.history(mlflow_client, model_name) == before  # readers see it whole meanwhile

    promotion.promote(mlflow_client, model_name, v3, T.CHAMPION, by="new", reason="after migration")
    after = promotion.history(mlflow_client, model_name)
    assert after[:2] == before and (after[2]["seq"], after[2]["from"], after[2]["to"]) == (3, v2, v3)
    tags = mlflow_client.get_registered_model(model_name).tags
    assert [k for k in tags if k.startswith("saga.history")] == [T.HISTORY_HEAD]
    runs = mlflow_client.search_runs([eid], max_results=100)
    assert sorted(int(r.data.tags[T.HISTORY_SEQ]) for r in runs) == [1, 2, 3]  # no duplicate of entry 1


# ------------------------------------------------------------------------------------------- readers
def test_history_page_reads_newest_first_pages_consecutively(mlflow_client, model_name):
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    for i in range(7):
        promotion.promote(mlflow_client, model_name, (v1, v2)[i % 2], T.CHAMPION, by="a", reason=f"p{i}")
    page = promotion.history_page(mlflow_client, model_name, limit=3)
    assert [e["seq"] for e in page.entries] == [5, 6, 7] and page.head == 7 and page.older == 5
    older = promotion.history_page(mlflow_client, model_name, limit=3, before=page.older)
    assert [e["seq"] for e in older.entries] == [2, 3, 4]
    last = promotion.history_page(mlflow_client, model_name, limit=3, before=older.older)
    assert [e["seq"] for e in last.entries] == [1] and last.older is None
    assert older.entries + page.entries == promotion.history(mlflow_client, model_name)[1:]
    for bad in ({"limit": 0}, {"limit": 10_001}, {"before": 0}):
        with pytest.raises(Exception, match="history page"):
            promotion.history_page(mlflow_client, model_name, **bad)
    assert [e["seq"] for e in promotion.entries_for_version(mlflow_client, model_name, v1)] == list(
        range(1, 8)
    )


# --------------------------------------------------------------------------------- expected holders
def test_changes_conditional_on_the_holder_refuse_and_change_nothing(mlflow_client, model_name):
    v1, v2, v3 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(3))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="one")
    promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="a", reason="two")
    before = registry_state(mlflow_client, model_name)
    with pytest.raises(AliasMovedError, match=rf"@challenger is held by version {v2}, not {v3} as expected"):
        promotion.remove_alias(mlflow_client, model_name, T.CHALLENGER, by="g", reason="r", expect_holder=v3)
    with pytest.raises(AliasMovedError, match=rf"@champion is held by version {v1}, not {v2}"):
        promotion.promote(mlflow_client, model_name, v3, T.CHAMPION, by="g", reason="r", expect_holder=v2)
    assert registry_state(mlflow_client, model_name) == before
    res = promotion.remove_alias(
        mlflow_client, model_name, T.CHALLENGER, by="g", reason="r", expect_holder=v2
    )
    assert res.changed and promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v1}


# --------------------------------------------------------------------------------------- idempotence
def test_retried_rollback_with_a_request_id_rolls_back_once(mlflow_client, model_name):
    v1, v2, v3 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(3))
    for v in (v1, v2, v3):
        promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by="a", reason=f"v{v}")
    first = promotion.rollback(
        mlflow_client, model_name, by="oncall", reason="bad", request_id="dag/run/t/-1"
    )
    again = promotion.rollback(
        mlflow_client, model_name, by="oncall", reason="bad", request_id="dag/run/t/-1"
    )
    assert (first.changed, first.version) == (True, v2)
    assert (again.changed, again.version, again.entries) == (False, v2, first.entries)
    assert promotion.aliases(mlflow_client, model_name)[T.CHAMPION] == v2
    assert _seqs(mlflow_client, model_name) == [1, 2, 3, 4]
    # Promotions and approvals are idempotent by nature: a retry writes nothing.
    assert not promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="a", reason="retry").changed
    approval.set_status(mlflow_client, model_name, v1, T.APPROVED, by="a")
    assert _seqs(mlflow_client, model_name) == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------- policy hooks
class _Recorder:
    """A test policy: records what it is asked, refuses what ``refuse`` says (rule names are made up)."""

    name = "test-policy"

    def __init__(self, refuse=lambda change, view: None, rule="test-rule"):
        self.seen: list[P.Change] = []
        self.refuse = refuse
        self.rule = rule

    def check(self, change, view):
        assert isinstance(view, P.GovernanceView)
        self.seen.append(change)
        why = self.refuse(change, view)
        if why:
            raise PolicyError(why, rule=self.rule)


def test_policy_sees_every_change_inside_the_lock_and_its_refusal_changes_nothing(mlflow_client, model_name):
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    pending = make_version(mlflow_client, model_name)
    rec = _Recorder()
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="a", reason="one", policy=rec)
    promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="a", reason="two", policy=rec)
    promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="a", reason="won", policy=rec)
    assert [(c.action, c.alias, c.previous, c.version, c.cause) for c in rec.seen] == [
        ("promote", T.CHAMPION, None, v1, None),
        ("promote", T.CHALLENGER, None, v2, None),
        ("promote", T.CHAMPION, v1, v2, None),
        ("demote", T.CHALLENGER, v2, None, "promote"),
    ]
    no_mallory = _Recorder(lambda c, view: "mallory may not approve" if c.by == "mallory" else None)
    before = registry_state(mlflow_client, model_name)
    with pytest.raises(PolicyError) as err:
        approval.set_status(mlflow_client, model_name, pending, T.APPROVED, by="mallory", policy=no_mallory)
    msg = str(err.value)
    for needle in ("test-policy", "test-rule", model_name, f"version {pending}", "PendingManualApproval"):
        assert needle in msg, (needle, msg)
    assert err.value.rule == "test-rule" and "nothing was changed" in msg
    assert registry_state(mlflow_client, model_name) == before  # no approval log entry, no alias, no history


def test_hand_made_decision_that_breaks_the_policy_is_a_violation_and_does_not_count(
    mlflow_client, model_name
):
    v = make_version(mlflow_client, model_name)
    four_eyes_like = _Recorder(lambda c, view: "the trainer approved by hand" if c.observed else None)
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_BY, "trainer")
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_STATUS, T.APPROVED)
    mv = approval.observe(mlflow_client, model_name, v, policy=four_eyes_like)
    assert approval.get_status(mv) == T.PENDING  # put back: it does not count as approval
    last = approval.approval_log(mv)[-1]
    assert last["violation"]["rule"] == "test-rule" and last["violation"]["attempted"] == T.APPROVED
    assert last["by"] == "trainer" and last["comment"].startswith("VIOLATION (test-rule)")
    with pytest.raises(PromotionError, match="PendingManualApproval"):
        promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by="x", reason="r")


def test_hand_rejection_of_the_champion_is_recorded_as_a_violation(mlflow_client, model_name):
    v = make_version(mlflow_client, model_name, status=T.APPROVED)
    promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by="a", reason="one")
    mlflow_client.set_model_version_tag(model_name, v, T.APPROVAL_STATUS, T.REJECTED)
    mv = approval.observe(mlflow_client, model_name, v)
    assert approval.get_status(mv) == T.APPROVED  # champion is never left on a Rejected version
    assert approval.approval_log(mv)[-1]["violation"]["rule"] == "champion-not-rejected"


def test_policy_from_the_environment_and_bad_configuration(mlflow_client, model_name, monkeypatch):
    v = make_version(mlflow_client, model_name, status=T.APPROVED)
    monkeypatch.setenv(P.POLICY_ENV, "tests.integration.test_governance_unit_of_work:ENV_POLICY")
    before = registry_state(mlflow_client, model_name)
    with pytest.raises(PolicyError, match="rule 'env-rule'"):
        promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by="x", reason="r")
    monkeypatch.setenv(P.POLICY_ENV, "no_such_module_xyz:thing")
    with pytest.raises(PolicyError, match="cannot be loaded"):
        promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by="x", reason="r")
    monkeypatch.setenv(P.POLICY_ENV, "missing-colon")
    with pytest.raises(PolicyError, match=r"must look like 'package\.module:name'"):
        promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by="x", reason="r")
    assert registry_state(mlflow_client, model_name) == before
    monkeypatch.delenv(P.POLICY_ENV)
    P.set_policy_resolver(lambda name: _Recorder())
    try:
        assert promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by="x", reason="r").changed
    finally:
        P.set_policy_resolver(None)


# Loaded by name through SAGA_GOVERNANCE_POLICY in the test above.
ENV_POLICY = _Recorder(
    lambda c, view: "no champions today" if c.alias == T.CHAMPION else None, rule="env-rule"
)


# ------------------------------------------------------------------------------------------ refusals
def test_every_refusal_names_rule_model_version_status_and_changes_nothing(mlflow_client, model_name):
    champ, chall = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    pending = make_version(mlflow_client, model_name)
    rejected = make_version(mlflow_client, model_name)
    approval.set_status(mlflow_client, model_name, rejected, T.REJECTED, by="r")
    promotion.promote(mlflow_client, model_name, champ, T.CHAMPION, by="a", reason="c")
    promotion.promote(mlflow_client, model_name, chall, T.CHALLENGER, by="a", reason="s")
    before = registry_state(mlflow_client, model_name)
    cases = [
        (
            lambda: promotion.promote(mlflow_client, model_name, pending, T.CHAMPION, by="x", reason="r"),
            PromotionError,
            [f"version {pending}", "PendingManualApproval", "only Approved versions can become champion"],
        ),
        (
            lambda: promotion.promote(mlflow_client, model_name, rejected, T.CHALLENGER, by="x", reason="r"),
            PromotionError,
            [f"version {rejected}", "Rejected", "cannot be shadow-tested"],
        ),
        (
            lambda: promotion.promote(mlflow_client, model_name, champ, T.CHALLENGER, by="x", reason="r"),
            PromotionError,
            [f"version {champ}", "current champion", "Approved"],
        ),
        (
            lambda: approval.set_status(mlflow_client, model_name, champ, T.REJECTED, by="x"),
            ApprovalError,
            [f"version {champ}", "(Approved)", "current champion and cannot be rejected"],
        ),
        (
            lambda: approval.set_status(mlflow_client, model_name, rejected, T.APPROVED, by="x"),
            ApprovalError,
            [f"version {rejected}", "cannot go from Rejected to Approved"],
        ),
        (
            lambda: promotion.rollback(mlflow_client, model_name, pending, by="x", reason="r"),
            PromotionError,
            [f"version {pending}", "PendingManualApproval", "only Approved versions"],
        ),
        (
            lambda: promotion.promote(mlflow_client, model_name, champ, "prod", by="x", reason="r"),
            PromotionError,
            ["Unknown alias 'prod'", model_name],
        ),
        (
            lambda: promotion.promote(mlflow_client, model_name, chall, T.CHAMPION, by="  ", reason="r"),
            PromotionError,
            ["non-empty by", model_name],
        ),
        (
            lambda: promotion.rollback(mlflow_client, model_name, by="x", reason=" "),
            PromotionError,
            ["needs a reason", model_name],
        ),
    ]
    for call, exc_type, needles in cases:
        with pytest.raises(exc_type) as err:
            call()
        for needle in [model_name, *needles]:
            assert needle in str(err.value), (needle, str(err.value))
    assert registry_state(mlflow_client, model_name) == before


def test_transaction_groups_changes_under_one_lock(mlflow_client, model_name):
    v = make_version(mlflow_client, model_name)
    with governance.Transaction(mlflow_client, model_name, purpose="approve and promote") as tx:
        tx.set_status(v, T.APPROVED, by="alice", comment="reviewed")
        res = tx.promote(v, T.CHAMPION, by="alice", reason="reviewed")
        assert tx.lock.held and not tx.lock.lost_reason
    assert res.changed and promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v}
    assert not mlflow_client.search_registered_models(f"name = '{lock_name(model_name)}'")


def test_concurrent_threads_serialise_on_one_model(mlflow_client, model_name):
    """Threads of one process (a triggerer, a scheduler) contend like processes: nothing lost."""
    vs = [make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(4)]
    errors: list[Exception] = []

    def go(v):
        try:
            promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by=f"t{v}", reason="thread")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(v,)) for v in vs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert _seqs(mlflow_client, model_name) == [1, 2, 3, 4]
