"""Rendering of version descriptions (pure: tags in, Markdown out), hostile text included."""

from __future__ import annotations

import json
from types import SimpleNamespace

from airflow_saga.core import descriptions as D
from airflow_saga.core import tags as T

EVIL = "[click](javascript:alert(1)) <img src=x onerror=alert(1)> | *bold* `code` ![i](http://x/y.png)"


def _mv(tags, version="3", aliases=()):
    return SimpleNamespace(tags=tags, version=version, run_id="r1", aliases=list(aliases))


def _tags(**extra):
    log = [
        {
            "status": T.PENDING,
            "by": "airflow-saga",
            "at": "2026-12-01T10:00:00Z",
            "via": "api",
            "comment": "x",
        },
        {
            "status": T.APPROVED,
            "by": "alice",
            "at": "2026-12-01T11:00:00Z",
            "via": "airflow",
            "comment": EVIL,
        },
    ]
    return {
        T.APPROVAL_STATUS: T.APPROVED,
        T.APPROVAL_BY: "alice",
        T.APPROVAL_AT: "2026-12-01T11:00:00Z",
        T.APPROVAL_LOG: json.dumps(log),
        T.metric_tag("accuracy"): "0.95",
        T.metric_tag("f1"): "0.9",
        T.EVAL_CHAMPION_VERSION: "2",
        f"{T.EVAL_CHAMPION_METRIC_PREFIX}accuracy": "0.93",
        T.GATE_DECISION: "passed",
        T.GATE_SUMMARY: "accuracy >= 0.85 and improves(f1)",
        T.EVAL_REPORT_URI: "mlflow-artifacts:/1/r/artifacts/eval/report.json",
        T.AIRFLOW_DAG_ID: "saga_training_pipeline",
        T.AIRFLOW_RUN_ID: "manual__1",
        T.AIRFLOW_RUN_URL: "http://127.0.0.1:8080/dags/saga_training_pipeline/runs/manual__1",
        **extra,
    }


def test_summary_has_status_metrics_gate_approvals_promotions_and_links():
    promotions = [
        {
            "seq": 4,
            "at": "2026-12-01T12:00:00.000Z",
            "action": "promote",
            "alias": "champion",
            "from": "2",
            "to": "3",
            "by": "bob",
            "reason": "better",
        },
    ]
    text = D.render(_mv(_tags(), aliases=["champion"]), promotions=promotions)
    assert "approval status **Approved** by alice" in text and "holds **@champion**" in text
    assert "| metric | this version | champion v2 at evaluation | difference |" in text
    assert "| accuracy | 0.95 | 0.93 | +0.02 |" in text and "| f1 | 0.9 | - | - |" in text
    assert "**passed**: `accuracy >= 0.85 and improves(f1)`" in text
    assert "`mlflow-artifacts:/1/r/artifacts/eval/report.json`" in text
    assert "**Approved** by alice via airflow" in text
    assert "#4 2026-12-01T12:00:00.000Z promote @champion 2 → 3 by bob: better" in text
    assert "[Airflow run saga\\_training\\_pipeline / manual\\_\\_1](http://127.0.0.1:8080/dags/" in text
    assert text.endswith(D.FOOTER)


def test_hostile_text_cannot_add_links_images_html_or_table_cells():
    text = D.render(_mv(_tags(), aliases=[]), promotions=[{"seq": 1, "reason": EVIL, "by": "<b>x</b>"}])
    assert "[click](javascript" not in text and "<img" not in text and "<b>" not in text
    assert "\\[click\\](javascript:alert(1))" in text and "&lt;img src=x" in text and "&#124;" in text
    assert "\\!\\[i\\]" in text
    # a non-http run URL is shown as code, never as a link
    text = D.render(_mv(_tags(**{T.AIRFLOW_RUN_URL: "javascript:alert(1)"})))
    assert "[Airflow run" not in text and "/ manual\\_\\_1 `javascript:alert(1)`" in text


def test_no_champion_and_bounded_length():
    tags = _tags()
    for key in (T.EVAL_CHAMPION_VERSION, f"{T.EVAL_CHAMPION_METRIC_PREFIX}accuracy"):
        tags.pop(key)
    log = [
        {"status": T.APPROVED, "by": "u" * 400, "at": f"t{i}", "via": "api", "comment": "c" * 2000}
        for i in range(500)
    ]
    tags[T.APPROVAL_LOG] = json.dumps(log)
    many = [
        {
            "seq": i,
            "at": "t",
            "action": "promote",
            "alias": "champion",
            "to": "3",
            "by": "b" * 300,
            "reason": "r" * 1000,
        }
        for i in range(1, 400)
    ]
    text = D.render(_mv(tags), promotions=many)
    assert len(text) <= 5000
    assert "No champion to compare with when it was evaluated." in text
    assert "earlier decisions" in text and "earlier entries in the promotion history" in text


def test_registration_rendering_without_a_version():
    text = D.render(SimpleNamespace(tags={T.APPROVAL_STATUS: T.PENDING}, version="", run_id=None, aliases=[]))
    assert "approval status **PendingManualApproval**" in text and "holds no alias" in text
    assert "No gate decision recorded" in text and "- none" in text


def test_switch(monkeypatch):
    assert D.enabled()
    monkeypatch.setenv("SAGA_VERSION_DESCRIPTIONS", "off")
    assert not D.enabled()
