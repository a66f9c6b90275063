"""The Models view's data layer and pages against a real MLflow server holding a demo-like model story."""

from __future__ import annotations

import re
import uuid

import pytest

from airflow_saga.core import approval, model_story, promotion
from airflow_saga.core import tags as T
from airflow_saga.core.errors import RegistryError
from airflow_saga.ui import pages
from tests.support.story import seed_story

pytestmark = pytest.mark.integration

UI = "http://mlflow.example:5000"


@pytest.fixture(scope="module")
def story(mlflow_settings, mlflow_client):
    name = f"story-{uuid.uuid4().hex[:8]}"
    done = seed_story(mlflow_settings, mlflow_client, name)
    return {"name": name, **done}


def test_model_story_matches_the_registry(mlflow_client, story):
    name = story["name"]
    v1, v2, v3 = (story["versions"][k] for k in ("v1", "v2", "v3"))
    s = model_story.model_story(mlflow_client, name, ui_base=UI)
    assert s["model"]["aliases"] == promotion.aliases(mlflow_client, name) == {T.CHAMPION: v1}
    assert [v["version"] for v in s["versions"]] == [v3, v2, v1]
    rows = {v["version"]: v for v in s["versions"]}
    assert {k: r["status"] for k, r in rows.items()} == {v1: T.APPROVED, v2: T.APPROVED, v3: T.REJECTED}
    for v in (v1, v2, v3):
        mv = mlflow_client.get_model_version(name, v)
        assert rows[v]["approvals"] == approval.approval_log(mv)
        assert rows[v]["approval"]["by"] == mv.tags[T.APPROVAL_BY]
        assert rows[v]["approval"]["comment"] == mv.tags[T.APPROVAL_COMMENT]
        assert rows[v]["gate"]["decision"] == mv.tags[T.GATE_DECISION]
        assert rows[v]["metrics"]["accuracy"] == float(mv.tags[T.metric_tag("accuracy")])
        assert rows[v]["links"]["mlflow_version"] == f"{UI}/#/models/{name}/versions/{v}"
        assert rows[v]["links"]["mlflow_run"] == f"{UI}/#/runs/{mv.run_id}"
        assert rows[v]["links"]["airflow_run"] == mv.tags[T.AIRFLOW_RUN_URL]
    assert rows[v1]["aliases"] == [T.CHAMPION] and rows[v1]["approval"]["by"] == "alice"
    assert rows[v2]["rollback"]["reason"] == "drift alert after the promotion"
    assert rows[v2]["shadow"]["decision"] == "promote" and rows[v2]["drift"]["verdict"] == "drift"
    assert rows[v3]["approval"] == {
        "status": T.REJECTED,
        "by": "carol",
        "at": rows[v3]["approval"]["at"],
        "comment": "not convincing",
        "via": "api",
    }
    assert s["counts"] == {
        "versions": 3,
        "history": len(s["history"]),
        T.PENDING: 0,
        T.APPROVED: 2,
        T.REJECTED: 1,
    }
    assert s["history"] == promotion.history(mlflow_client, name)


def test_timeline_follows_the_history(mlflow_client, story):
    name = story["name"]
    v1, v2 = story["versions"]["v1"], story["versions"]["v2"]
    tl = model_story.model_story(mlflow_client, name)["timeline"]
    champion = tl["lanes"][T.CHAMPION]
    assert [(h["version"], h["action"]) for h in champion] == [
        (v1, "promote"),
        (v2, "promote"),
        (v1, "rollback"),
    ]
    assert champion[-1]["to"] is None and champion[-1]["by"] == "carol"
    assert all(h["to"] is not None for h in champion[:-1])
    challenger = tl["lanes"][T.CHALLENGER]
    assert [(h["version"], h["reason"]) for h in challenger] == [(v2, "shadow test the new candidate")]
    assert challenger[0]["to"] is not None  # demoted when promoted to champion
    assert tl["unrecorded"] == []
    assert [e["seq"] for e in tl["events"]] == [h["seq"] for h in promotion.history(mlflow_client, name)]


def test_version_story_has_evaluation_gate_shadow_and_drift(mlflow_client, story):
    name, v1, v2 = story["name"], story["versions"]["v1"], story["versions"]["v2"]
    s = model_story.version_story(mlflow_client, name, v2, ui_base=UI)
    ev = s["evaluation"]
    assert ev["champion_version"] == v1 and set(ev["candidate"]) >= {"accuracy", "f1"}
    assert set(ev["champion"]) >= {"accuracy", "f1"}
    decision = story["decisions"][v2]
    assert s["gate"]["expression"] == decision["expression"]
    assert [c["passed"] for c in s["gate"]["checks"]] == [c["passed"] for c in decision["checks"]]
    assert len(s["shadow"]) == 2
    for got, sent in zip(s["shadow"], story["shadow"], strict=True):
        assert got["agreement"] == sent["report"]["comparison"]["agreement"]
        assert got["champion"]["version"] == v1 and got["candidate"]["version"] == v2
        assert got["decision"]["action"] == sent["decision"]["action"]
    assert [d["run_id"] for d in s["drift"]] == [d["run_id"] for d in story["drift"]]
    assert [d["verdict"] for d in s["drift"]] == ["no_drift", "drift"]
    latest = story["drift"][-1]["result"]
    assert s["drift_latest"]["drifted_features"] == latest["drifted_features"]
    logged = {f: r["score"] for f, r in latest["features"].items() if isinstance(r.get("score"), float)}
    assert s["drift"][-1]["scores"] == pytest.approx(logged)  # keyed by feature name, as logged
    assert {h["action"] for h in s["promotions"]} == {"promote", "demote", "rollback"}


def test_pages_render_the_story(mlflow_client, story):
    name, v2 = story["name"], story["versions"]["v2"]
    html = pages.model_page(model_story.model_story(mlflow_client, name, ui_base=UI), base="/saga")
    assert html.count('<tr data-version="') == 3
    assert html.count('class="holding"') == 4 and 'data-action="rollback"' in html
    assert "drift alert after the promotion" in html
    vhtml = pages.version_page(model_story.version_story(mlflow_client, name, v2, ui_base=UI), base="/saga")
    for chart in ("Agreement with the champion", "Latency per request", "Drift score per feature"):
        assert chart in vhtml
    assert 'id="gate-checks"' in vhtml and "<script src" not in vhtml and "http://cdn" not in vhtml


def test_unknown_or_hostile_input_is_a_registry_error(mlflow_client, story):
    with pytest.raises(RegistryError, match="Unknown registered model"):
        model_story.model_story(mlflow_client, f"nope-{uuid.uuid4().hex[:6]}")
    with pytest.raises(RegistryError, match="has no version"):
        model_story.version_story(mlflow_client, story["name"], "999")
    for bad in ("x' OR name LIKE '%", "a/b", "", "x" * 300, "bad\nname"):
        with pytest.raises(RegistryError):
            model_story.model_story(mlflow_client, bad)
    for bad in ("abc", "-1", "0", "1.5", "1 OR 1=1"):
        with pytest.raises(RegistryError, match="Invalid model version"):
            model_story.version_story(mlflow_client, story["name"], bad)


def test_markup_in_registry_values_is_escaped(mlflow_client, model_name):
    from tests.support.registry import make_version

    v = make_version(mlflow_client, model_name, status=T.PENDING)
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    approval.set_status(mlflow_client, model_name, v, T.APPROVED, by=evil, comment=evil)
    promotion.promote(mlflow_client, model_name, v, T.CHAMPION, by=evil, reason=evil)
    mlflow_client.update_registered_model(model_name, description=evil)
    html = pages.model_page(model_story.model_story(mlflow_client, model_name), base="/saga")
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_alias_moved_outside_saga_is_flagged(mlflow_client, model_name):
    from tests.support.registry import make_version

    v1 = make_version(mlflow_client, model_name, status=T.APPROVED)
    v2 = make_version(mlflow_client, model_name, status=T.APPROVED)
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    mlflow_client.set_registered_model_alias(model_name, T.CHAMPION, v2)  # by hand, as in the MLflow UI
    s = model_story.model_story(mlflow_client, model_name)
    assert s["timeline"]["unrecorded"] == [{"alias": T.CHAMPION, "registry": v2, "history": v1, "seq": 1}]
    html = pages.model_page(s, base="/saga")
    assert re.search(r"registry has <b>@champion</b> on <b>v2</b>", html)


def test_history_is_read_a_page_at_a_time(mlflow_client, model_name):
    from tests.support.registry import make_version

    vs = [make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(4)]
    promotion.promote(mlflow_client, model_name, vs[0], T.CHAMPION, by="a", reason="first")
    for v in vs[1:]:  # challenger moves three times; champion is never mentioned again
        promotion.promote(mlflow_client, model_name, v, T.CHALLENGER, by="b", reason=f"try v{v}")
    full = promotion.history(mlflow_client, model_name)
    assert [h["seq"] for h in full] == [1, 2, 3, 4]
    s = model_story.model_story(mlflow_client, model_name, history_limit=2)
    assert [h["seq"] for h in s["history"]] == [3, 4] and s["history_page"]["older"] == 3
    assert s["counts"]["history"] == 4
    tl = s["timeline"]
    assert tl["complete"] is False and tl["unrecorded"] == []  # champion's last change is on an older page
    lane = tl["lanes"][T.CHALLENGER]
    assert [h["version"] for h in lane] == [vs[1], vs[2], vs[3]]  # starts with the holder entry 3 replaced
    older = model_story.model_story(mlflow_client, model_name, history_limit=2, before=3)
    assert [h["seq"] for h in older["history"]] == [1, 2] and older["history_page"]["older"] is None
    html = pages.model_page(s, base="/saga")
    assert 'href="?before=3#timeline"' in html
