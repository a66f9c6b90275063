"""Alias changes made outside saga (by hand in the MLflow UI) are detected, against a real MLflow server."""

from __future__ import annotations

import json

import pytest

from airflow_saga.cli import main
from airflow_saga.core import alias_history as H
from airflow_saga.core import promotion
from airflow_saga.core import tags as T
from airflow_saga.core.errors import RegistryError
from tests.support.registry import make_version

pytestmark = pytest.mark.integration


def _history_cli(capsys, settings, name, *extra):
    rc = main(["history", name, "--tracking-uri", settings.tracking_uri, *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def test_clean_history_has_nothing_unrecorded(mlflow_client, mlflow_settings, model_name, capsys):
    v1 = make_version(mlflow_client, model_name, status=T.APPROVED)
    v2 = make_version(mlflow_client, model_name, status=T.APPROVED)
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="bob", reason="try")
    promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="bob", reason="better")
    promotion.rollback(mlflow_client, model_name, by="carol", reason="drift")
    assert H.unrecorded_aliases(mlflow_client, model_name) == []
    assert H.history_gaps(promotion.history(mlflow_client, model_name)) == []
    out = _history_cli(capsys, mlflow_settings, model_name)
    assert "UNRECORDED" not in out


def test_alias_moved_by_hand_is_unrecorded_until_saga_moves_it(
    mlflow_client, mlflow_settings, model_name, capsys
):
    v1, v2, v3 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(3))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    mlflow_client.set_registered_model_alias(model_name, T.CHAMPION, v2)  # as the MLflow UI does
    [u] = H.unrecorded_aliases(mlflow_client, model_name)
    assert (u.model, u.alias, u.registry, u.recorded, u.seq) == (model_name, T.CHAMPION, v2, v1, 1)
    assert f"@champion of model {model_name!r} is on v{v2}" in u.message() and f"says v{v1}" in u.message()

    out = _history_cli(capsys, mlflow_settings, model_name)
    assert f"UNRECORDED CHANGE: @champion of model {model_name!r} is on v{v2} in the registry" in out
    data = json.loads(_history_cli(capsys, mlflow_settings, model_name, "--json"))
    assert data["unrecorded"] == [u.as_dict()] and data["gaps"] == []

    # An unrelated saga change snapshots the registry's aliases in the head; the change stays detected.
    promotion.promote(mlflow_client, model_name, v3, T.CHALLENGER, by="bob", reason="try v3")
    assert [(x.alias, x.registry, x.recorded) for x in H.unrecorded_aliases(mlflow_client, model_name)] == [
        (T.CHAMPION, v2, v1)
    ]

    # Once saga moves champion, the hand move is no longer current, but the history shows the gap.
    promotion.promote(mlflow_client, model_name, v3, T.CHAMPION, by="bob", reason="v3 wins")
    assert H.unrecorded_aliases(mlflow_client, model_name) == []
    entries = promotion.history(mlflow_client, model_name)
    [gap] = H.history_gaps(entries)
    assert {k: gap[k] for k in ("alias", "after_seq", "recorded", "found")} == {
        "alias": T.CHAMPION,
        "after_seq": 1,
        "recorded": v1,
        "found": v2,
    }
    assert gap["before_seq"] == next(e["seq"] for e in entries if e["alias"] == T.CHAMPION and e["seq"] > 1)
    out = _history_cli(capsys, mlflow_settings, model_name)
    assert f"UNRECORDED CHANGE: @champion went from v{v1} to v{v2} outside saga, between #1" in out


def test_alias_removed_or_set_by_hand_without_history(mlflow_client, model_name):
    v1 = make_version(mlflow_client, model_name, status=T.APPROVED)
    mlflow_client.set_registered_model_alias(model_name, T.CHALLENGER, v1)  # saga never touched it
    [u] = H.unrecorded_aliases(mlflow_client, model_name)
    assert (u.alias, u.registry, u.recorded, u.seq) == (T.CHALLENGER, v1, None, None)
    assert "(no history entry)" in u.message()
    mlflow_client.delete_registered_model_alias(model_name, T.CHALLENGER)
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    mlflow_client.delete_registered_model_alias(model_name, T.CHAMPION)  # removed by hand
    [u] = H.unrecorded_aliases(mlflow_client, model_name)
    assert (u.alias, u.registry, u.recorded) == (T.CHAMPION, None, v1)


def test_saga_change_in_flight_is_not_unrecorded(mlflow_client, model_name):
    """Between a promotion's alias move and its commit (or after a crash there) nothing is reported."""
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    state = H.read_state(mlflow_client, model_name)
    writer = H.HistoryWriter(mlflow_client, state, lambda: None)
    writer.intend([{"action": "promote", "alias": T.CHAMPION, "from": v1, "to": v2, "by": "bob"}])
    H.set_alias(mlflow_client, model_name, T.CHAMPION, v2)  # the writer stops here, before its commit
    assert H.unrecorded_aliases(mlflow_client, model_name) == []
    # A different version by hand is still a hand move, intent or not.
    v3 = make_version(mlflow_client, model_name, status=T.APPROVED)
    mlflow_client.set_registered_model_alias(model_name, T.CHAMPION, v3)
    assert [(u.registry, u.recorded) for u in H.unrecorded_aliases(mlflow_client, model_name)] == [(v3, v1)]


def test_unknown_model_is_a_registry_error(mlflow_client):
    with pytest.raises(RegistryError, match="no-such-model-x"):
        H.unrecorded_aliases(mlflow_client, "no-such-model-x")


def test_history_gaps_of_a_page_skip_first_entries():
    entries = [
        {"seq": 7, "alias": T.CHAMPION, "from": "3", "to": "4", "at": "a"},
        {"seq": 8, "alias": T.CHAMPION, "from": "5", "to": "6", "at": "b"},
    ]
    assert H.history_gaps(entries, complete=False) == [
        {
            "alias": T.CHAMPION,
            "after_seq": 7,
            "before_seq": 8,
            "recorded": "4",
            "found": "5",
            "since": "a",
            "until": "b",
        }
    ]
    assert [g["before_seq"] for g in H.history_gaps(entries)] == [7, 8]
