"""Declarative governance policies: validation at load time (bad input names field and value) and the
pure parts of the rules (identities, principals). The rules against a real registry are in
tests/integration/test_governance_policies.py."""

from __future__ import annotations

import pytest

from airflow_saga.core import policy as P
from airflow_saga.core.errors import PolicyError

DIRECTORY = P.Directory(
    "test directory",
    {"alice": ("alice", frozenset({"op"})), "bob": ("bob", frozenset({"admin"})), "carl": ("7", frozenset())},
    frozenset({"viewer", "user", "op", "admin"}),
)


@pytest.mark.parametrize(
    ("config", "needles"),
    [
        ("{not json", ["is not valid JSON"]),
        ([1], ["must be an object"]),
        ({"defaults": {}}, ["unknown key 'defaults'"]),
        (
            {"default": {"approvers": {"users": ["zed"]}}},
            ["policy.default.approvers.users", "unknown user 'zed'"],
        ),
        ({"default": {"approvers": {"roles": ["ops"]}}}, ["unknown role 'ops'", "admin, op, user, viewer"]),
        ({"default": {"approvers": {}}}, ["names no users and no roles"]),
        (
            {"default": {"approvers": {"users": "alice"}}},
            ["approvers.users", "list of non-empty strings", "'alice'"],
        ),
        ({"default": {"approvers": {"user": ["alice"]}}}, ["unknown key 'user'"]),
        ({"default": {"four_eyes": "yes"}}, ["policy.default.four_eyes", "true or false", "'yes'"]),
        ({"default": {"protected_aliases": {"prod": {}}}}, ["unknown alias 'prod'"]),
        (
            {"default": {"protected_aliases": {"champion": {"min_challenger_hours": -1}}}},
            ["champion.min_challenger_hours", "number >= 0", "-1"],
        ),
        (
            {"default": {"protected_aliases": {"champion": {"min_challenger_hours": True}}}},
            ["min_challenger_hours", "True"],
        ),
        (
            {"default": {"protected_aliases": {"challenger": {"min_challenger_hours": 2}}}},
            ["applies to champion only"],
        ),
        ({"default": {"protected_aliases": {"champion": {"shadow": True}}}}, ["unknown key 'shadow'"]),
        ({"models": {"churn": {"approvers": {"roles": ["nobody"]}}}}, ["policy.models.churn", "'nobody'"]),
        ({"models": {"churn": "strict"}}, ["policy.models.churn", "must be an object"]),
        ({"default": {"refuse_unrecorded_serving": 1}}, ["refuse_unrecorded_serving", "true or false"]),
    ],
)
def test_bad_policy_is_refused_at_load_naming_field_and_value(config, needles):
    with pytest.raises(PolicyError) as err:
        P.load_config(config, directory=DIRECTORY)
    assert err.value.rule == "configuration"
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_roles_need_a_user_directory_and_users_are_not_checked_without_one():
    with pytest.raises(PolicyError, match="roles op cannot be resolved here"):
        P.load_config({"default": {"approvers": {"roles": ["op"]}}})
    resolver = P.load_config({"default": {"approvers": {"users": ["anyone-at-all"]}}})
    assert isinstance(resolver("m"), P.RulesPolicy)


def test_model_entry_overrides_the_default_keys_it_names():
    resolver = P.load_config(
        {
            "default": {"four_eyes": True, "approvers": {"users": ["alice"]}},
            "models": {"churn": {"approvers": {"roles": ["admin"]}}},
        },
        directory=DIRECTORY,
    )
    churn, other = resolver.rules_for("churn"), resolver.rules_for("other")
    assert churn.four_eyes and churn.approvers.roles == {"admin"} and not churn.approvers.users
    assert other.four_eyes and other.approvers.users == {"alice"}
    assert resolver("churn").approvers() == ["bob"]  # role members, through the directory
    assert P.load_config({"models": {"churn": {}}})("other") is P.DEFAULT_POLICY


def test_identities_and_principals():
    assert P.identity("alice (airflow:train/manual__1)") == "alice"
    assert P.identity(" bob ") == "bob"
    assert P.identity("airflow:train/manual__1") == "airflow:train/manual__1"
    who = P.Principals(frozenset({"alice", "airflow:train"}), frozenset({"admin"}))
    assert who.admits("alice (airflow:x/y)", None)
    assert who.admits("airflow:train/scheduled__2026", None)  # a run of that DAG
    assert not who.admits("airflow:train_other/run", None)
    assert who.admits("bob", DIRECTORY) and not who.admits("bob", None)  # role only via the directory
    assert not who.admits("carl", DIRECTORY)
    assert who.expand(DIRECTORY) == ["alice", "bob"]


def test_policy_from_the_environment_as_json_or_file(tmp_path, monkeypatch):
    monkeypatch.setenv(P.POLICY_ENV, '{"default": {"four_eyes": true}}')
    assert P.policy_for("m").rules.four_eyes
    path = tmp_path / "policy.json"
    path.write_text('{"models": {"m": {"refuse_unrecorded_serving": true}}}')
    monkeypatch.setenv(P.POLICY_ENV, f"@{path}")
    assert P.policy_for("m").refuse_unrecorded_serving and P.policy_for("n") is P.DEFAULT_POLICY
    monkeypatch.setenv(P.POLICY_ENV, f"@{tmp_path / 'missing.json'}")
    with pytest.raises(PolicyError, match="cannot be read"):
        P.policy_for("m")
    monkeypatch.setenv(P.POLICY_ENV, '{"default": {"four_eyes": 2}}')
    with pytest.raises(PolicyError, match=r"SAGA_GOVERNANCE_POLICY\.default\.four_eyes"):
        P.policy_for("m")
