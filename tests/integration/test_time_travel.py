"""Time travel (``saga lineage MODEL --at TIME``, ``lineage_query.aliases_at``) against a real MLflow server.

Every answer is checked against a replay of the recorded history: at each entry's own time the alias is
what that entry set; one millisecond before, what the entries before it set.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from airflow_saga.cli import main
from airflow_saga.core import alias_history as H
from airflow_saga.core import lineage_query as lq
from airflow_saga.core import promotion
from airflow_saga.core import tags as T
from airflow_saga.core.errors import ParameterError, RegistryError
from tests.support.registry import make_version
from tests.support.story import seed_story

pytestmark = pytest.mark.integration


def _replay(entries):
    held: dict[str, str | None] = dict.fromkeys(H.ALIASES)
    by: dict[str, int | None] = dict.fromkeys(H.ALIASES)
    for e in entries:
        held[e["alias"]] = e["to"]
        by[e["alias"]] = e["seq"]
    return held, by


def _check_against_replay(client, name, entries):
    created = client.get_registered_model(name).creation_timestamp
    for i, e in enumerate(entries):
        t = H.parse_time_ms(e["at"])
        for at, upto in ((t, i + 1), (t - 1, i)):
            if at < created:
                continue
            held, by = _replay(entries[:upto])
            answer = lq.aliases_at(client, name, at)
            assert {a: x["version"] for a, x in answer["aliases"].items()} == held, (at, e)
            assert {a: (x["entry"] or {}).get("seq") for a, x in answer["aliases"].items()} == by
            assert all(x["unrecorded"] is None for x in answer["aliases"].values())


@pytest.fixture
def promoted(mlflow_client, model_name):
    """promote v1 champion, v2 challenger, v2 champion (challenger demoted), roll back to v1."""
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="bob", reason="shadow it")
    promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="bob", reason="shadow passed")
    promotion.rollback(mlflow_client, model_name, by="carol", reason="errors up")
    return v1, v2, promotion.history(mlflow_client, model_name)


def test_across_promotions_and_a_rollback(mlflow_client, model_name, promoted):
    v1, v2, entries = promoted
    assert [(e["action"], e["alias"], e["to"]) for e in entries] == [
        ("promote", T.CHAMPION, v1),
        ("promote", T.CHALLENGER, v2),
        ("promote", T.CHAMPION, v2),
        ("demote", T.CHALLENGER, None),
        ("rollback", T.CHAMPION, v1),
    ]
    _check_against_replay(mlflow_client, model_name, entries)
    # Between the promotion of v2 and the rollback, v2 was champion, put there by entry #3.
    mid = H.parse_time_ms(entries[3]["at"])
    answer = lq.aliases_at(mlflow_client, model_name, mid)
    assert answer["aliases"][T.CHAMPION]["version"] == v2
    assert answer["aliases"][T.CHAMPION]["entry"] == entries[2]
    assert answer["aliases"][T.CHAMPION]["next"] == entries[4]
    assert answer["at"] == H.iso_ms(mid) and answer["now"] == {T.CHAMPION: v1}
    # Right after the model was created, before any entry: nothing held anything.
    created = mlflow_client.get_registered_model(model_name).creation_timestamp
    first = lq.aliases_at(mlflow_client, model_name, created)
    assert {a: (x["version"], x["entry"]) for a, x in first["aliases"].items()} == {
        T.CHAMPION: (None, None),
        T.CHALLENGER: (None, None),
    }


def test_the_demo_story(mlflow_settings, mlflow_client):
    """The sequence the demo and the Models view tests use (three versions, shadow gate, a rollback)."""
    name = f"story-at-{uuid.uuid4().hex[:8]}"
    done = seed_story(mlflow_settings, mlflow_client, name)
    entries = promotion.history(mlflow_client, name)
    _check_against_replay(mlflow_client, name, entries)
    v1, v2 = done["versions"]["v1"], done["versions"]["v2"]
    [rollback] = [e for e in entries if e["action"] == "rollback"]
    before = lq.aliases_at(mlflow_client, name, H.parse_time_ms(rollback["at"]) - 1)
    assert before["aliases"][T.CHAMPION]["version"] == v2
    assert before["aliases"][T.CHAMPION]["entry"]["by"] == "airflow-saga shadow gate"
    after = lq.aliases_at(mlflow_client, name, rollback["at"])
    assert after["aliases"][T.CHAMPION]["version"] == v1
    assert after["aliases"][T.CHAMPION]["entry"]["reason"] == "drift alert after the promotion"


def test_time_formats_agree(mlflow_client, model_name, promoted):
    _, _, entries = promoted
    t = H.parse_time_ms(entries[2]["at"])
    moment = datetime.fromtimestamp(t / 1000, UTC)
    forms = [
        t,
        str(t),
        entries[2]["at"],  # 2026-12-02T12:00:00.123Z
        moment.replace(tzinfo=None).isoformat(timespec="milliseconds"),  # naive: UTC
        moment.astimezone(timezone_plus_one()).isoformat(timespec="milliseconds"),
        moment,
    ]
    answers = [lq.aliases_at(mlflow_client, model_name, f) for f in forms]
    assert all(a == answers[0] for a in answers)
    assert answers[0]["aliases"][T.CHAMPION]["entry"]["seq"] == entries[2]["seq"]


def timezone_plus_one():
    from datetime import timezone

    return timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    "bad", ["yesterday", "2026-13-45", "12:00", "", "1e12", "2026-12-01T10:00:00Z junk", "x" * 500, -5]
)
def test_malformed_time_names_the_value(bad):
    with pytest.raises(ParameterError) as exc:
        lq.parse_at(bad, field="--at")
    assert "--at" in str(exc.value) and "ISO-8601" in str(exc.value)
    if bad != "" and bad != -5:
        assert repr(str(bad))[:40] in str(exc.value) or str(bad)[:40] in str(exc.value)


def test_before_the_model_existed_and_in_the_future(mlflow_client, model_name, promoted):
    created = mlflow_client.get_registered_model(model_name).creation_timestamp
    with pytest.raises(RegistryError, match=f"{model_name!r} did not exist at .*: it was created at"):
        lq.aliases_at(mlflow_client, model_name, created - 1)
    with pytest.raises(RegistryError, match="as epoch seconds it would be"):
        lq.aliases_at(mlflow_client, model_name, str(created // 1000))  # seconds given for millis
    with pytest.raises(RegistryError, match="is in the future"):
        lq.aliases_at(mlflow_client, model_name, datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(RegistryError, match="no-such-model-tt"):
        lq.aliases_at(mlflow_client, "no-such-model-tt", "2026-01-01")


def test_hand_moves_are_flagged_in_the_answer(mlflow_client, model_name):
    v1, v2, v3 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(3))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    mlflow_client.set_registered_model_alias(model_name, T.CHAMPION, v2)  # by hand
    now = lq.aliases_at(mlflow_client, model_name, H.now_ms())
    assert now["aliases"][T.CHAMPION]["version"] == v1  # what the history says ...
    assert f"the registry now has @champion on v{v2}" in now["aliases"][T.CHAMPION]["unrecorded"]
    promotion.promote(mlflow_client, model_name, v3, T.CHAMPION, by="bob", reason="v3")
    first = promotion.history(mlflow_client, model_name)[0]
    between = lq.aliases_at(mlflow_client, model_name, first["at"])
    assert between["aliases"][T.CHAMPION]["version"] == v1
    assert f"found @champion on v{v2}, not v{v1}" in between["aliases"][T.CHAMPION]["unrecorded"]


def test_cli(mlflow_client, mlflow_server, model_name, promoted, capsys):
    v1, v2, entries = promoted
    uri = ["--tracking-uri", mlflow_server.url]

    def saga(*argv):
        code = main([*argv, *uri])
        out = capsys.readouterr()
        return code, out.out, out.err

    at = entries[3]["at"]
    code, out, _ = saga("lineage", model_name, "--at", at)
    assert code == 0
    assert f"Model {model_name} at {at}" in out
    assert f"@champion   v{v2}" in out and "since #3" in out and "by bob: shadow passed" in out
    assert "@challenger (no version)" in out and "since #4" in out
    code, out, _ = saga("lineage", model_name, "@champion", "--at", at, "--json")
    data = json.loads(out)
    assert data["aliases"][T.CHAMPION]["version"] == v2 and data["lineage"]["version"]["version"] == v2
    code, out, _ = saga("lineage", model_name, "@champion", "--at", at)
    assert code == 0 and f"Model {model_name} version {v2}" in out
    code, _, err = saga("lineage", model_name, "--at", "last tuesday")
    assert code == 1 and "--at: 'last tuesday' is not a time" in err and "without a zone means UTC" in err
    code, _, err = saga("lineage", model_name, "--at", "2000-01-01")
    assert code == 1 and "did not exist at 2000-01-01T00:00:00.000Z" in err
    with pytest.raises(SystemExit):
        saga("lineage", model_name, v1, "--at", at)
    assert "give @champion or @challenger" in capsys.readouterr().err


def test_the_demo_step(mlflow_server, model_name, promoted):
    """``saga demo`` prints the time-travel answer just before its rollback."""
    from airflow_saga.commands._lifecycle import time_travel

    _, v2, entries = promoted
    text = time_travel(mlflow_server.url, model_name)
    moment = H.iso_ms(H.parse_time_ms(entries[-1]["at"]) - 1)
    assert f"saga lineage {model_name} --at {moment}" in text
    assert f"@champion   v{v2}" in text and "by bob: shadow passed" in text
    assert "could not answer" in time_travel(mlflow_server.url, "no-such-model-demo")
