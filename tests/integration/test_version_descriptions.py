"""Version descriptions in MLflow follow every transition, against a real MLflow server (demo-like story)."""

from __future__ import annotations

import logging
import uuid

import pytest

from airflow_saga.core import alias_history as H
from airflow_saga.core import approval, promotion
from airflow_saga.core import descriptions as D
from airflow_saga.core import tags as T
from tests.support.registry import make_version
from tests.support.story import seed_story

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def story(mlflow_settings, mlflow_client):
    name = f"desc-{uuid.uuid4().hex[:8]}"
    return {"name": name, **seed_story(mlflow_settings, mlflow_client, name)}


def test_each_version_reads_its_story(mlflow_client, story):
    name = story["name"]
    v1, v2, v3 = (story["versions"][k] for k in ("v1", "v2", "v3"))
    for v in (v1, v2, v3):  # what MLflow holds is the rendering of the registry as it is now
        mv = mlflow_client.get_model_version(name, v)
        assert mv.description == D.render(mv, promotions=H.entries_for_version(mlflow_client, name, v))
    d1, d2, d3 = (mlflow_client.get_model_version(name, v).description for v in (v1, v2, v3))
    assert "approval status **Approved** by alice" in d1 and "holds **@champion**" in d1
    assert "rollback @champion" in d1 and "carol: drift alert after the promotion" in d1
    assert "holds no alias" in d2 and "**Rolled back** at" in d2 and "by carol: drift alert" in d2
    assert "Shadow comparison" in d2 and "**promote**" in d2
    assert "**Approved** by bob via api: better f1 on holdout" in d2
    assert "by airflow-saga shadow gate: shadow gate passed" in d2
    assert "approval status **Rejected** by carol" in d3 and "not convincing" in d3
    # v2 and v3 were evaluated against the champion of the day, v1: the table shows both sides
    mv2 = mlflow_client.get_model_version(name, v2)
    acc, champ = mv2.tags[T.metric_tag("accuracy")], mv2.tags[f"{T.EVAL_CHAMPION_METRIC_PREFIX}accuracy"]
    assert mv2.tags[T.EVAL_CHAMPION_VERSION] == v1
    assert f"champion v{v1} at evaluation" in d2
    assert f"| accuracy | {float(acc):.4g} | {float(champ):.4g} | {float(acc) - float(champ):+.4g} |" in d2
    assert "No champion to compare with" in d1  # v1 was the first model
    assert "**passed**" in d1 and "[Airflow run saga\\_training\\_pipeline / manual\\_\\_1](http" in d1


def test_registration_writes_it_and_transitions_rewrite_it(mlflow_client, model_name, caplog):
    v1 = make_version(mlflow_client, model_name)
    first = mlflow_client.get_model_version(model_name, v1)
    assert "approval status **PendingManualApproval**" in first.description
    mlflow_client.update_model_version(model_name, v1, "edited by hand")  # as in the MLflow UI
    evil = "[x](javascript:alert(1)) <script>alert(1)</script>"
    approval.set_status(mlflow_client, model_name, v1, T.APPROVED, by="alice", comment=evil, via="api")
    text = mlflow_client.get_model_version(model_name, v1).description
    assert "edited by hand" not in text and "approval status **Approved** by alice" in text
    assert "<script>" not in text and "[x](javascript" not in text and "&lt;script&gt;" in text

    # Unchanged text: refresh writes nothing (MLflow's last-updated time stays).
    before = mlflow_client.get_model_version(model_name, v1).last_updated_timestamp
    assert D.refresh(mlflow_client, model_name, v1)
    assert mlflow_client.get_model_version(model_name, v1).last_updated_timestamp == before

    # The displaced version is rewritten too.
    v2 = make_version(mlflow_client, model_name, status=T.APPROVED)
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="bob", reason="second")
    d1 = mlflow_client.get_model_version(model_name, v1).description
    assert "holds no alias" in d1 and f"promote @champion {v1} → {v2} by bob: second" in d1


def test_a_failing_description_does_not_fail_the_transition(mlflow_client, model_name, monkeypatch, caplog):
    """The renderer (our code, not MLflow) is made to fail: the promotion commits, a warning is logged."""
    v1 = make_version(mlflow_client, model_name, status=T.APPROVED)

    def broken(*a, **k):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(D, "render", broken)
    with caplog.at_level(logging.WARNING, logger="airflow_saga.core.descriptions"):
        result = promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    assert result.changed and promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v1}
    assert [e["to"] for e in promotion.history(mlflow_client, model_name)] == [v1]
    assert f"Could not update the MLflow description of {model_name!r} version {v1}: renderer broke" in (
        caplog.text
    )


def test_switched_off(mlflow_client, model_name, monkeypatch):
    v1 = make_version(mlflow_client, model_name, status=T.APPROVED)
    registered = mlflow_client.get_model_version(model_name, v1).description
    monkeypatch.setenv("SAGA_VERSION_DESCRIPTIONS", "off")
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    assert mlflow_client.get_model_version(model_name, v1).description == registered


def test_the_description_reads_only_the_newest_history_entries_of_a_version(mlflow_client, story):
    """Promotion cost must not grow with history: the description's read is bounded, newest first."""
    name, v1 = story["name"], story["versions"]["v1"]
    every = H.entries_for_version(mlflow_client, name, v1)
    assert len(every) >= 3  # promoted, displaced, rolled back to
    for limit in (1, 2, len(every), len(every) + 5):
        assert H.entries_for_version(mlflow_client, name, v1, limit=limit) == every[-limit:]
    assert H.entries_for_version(mlflow_client, name, v1, limit=0) == []
    assert max(entries for _, entries, _ in D.LIMITS) < D.PROMOTIONS_READ
