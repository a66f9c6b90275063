"""The shadow gate as a core use case (``core.shadow.gate``), called as a script or notebook would: the
same decision, report logging and governed actions as the ``ShadowGateOperator`` (real MLflow server)."""

from __future__ import annotations

import pytest

from airflow_saga.core import promotion, shadow
from airflow_saga.core import tags as T
from airflow_saga.core.errors import DataError
from tests.support.registry import make_version

pytestmark = pytest.mark.integration


def _report(model_name: str, champion: str, candidate: str, *, worse_slice: bool) -> dict:
    """A capture report whose overall numbers pass; one slice is much worse when ``worse_slice``."""

    def side(version: str, accuracy: float) -> dict:
        return {"version": version, "metrics": {"error_rate": 0.0, "agreement": 0.97, "accuracy": accuracy}}

    def sliced(name: str, champion_acc: float, candidate_acc: float) -> dict:
        return {
            "name": name,
            "column": "region",
            "rows": 400,
            "eligible": True,
            "champion": {"metrics": {"accuracy": champion_acc, "labeled_rows": 400}},
            "candidate": {"metrics": {"accuracy": candidate_acc, "labeled_rows": 400, "agreement": 0.9}},
        }

    return {
        "schema": "saga.shadow/v1",
        "model_name": model_name,
        "mode": "capture",
        "champion": side(champion, 0.90),
        "candidate": side(candidate, 0.91),
        "comparison": {"agreement": 0.97, "compared_rows": 2000},
        "slices": {
            "min_rows": 30,
            "results": [
                sliced("region=north", 0.9, 0.93),
                sliced("region=south", 0.9, 0.70 if worse_slice else 0.91),
            ],
        },
    }


def test_gate_core_blocks_on_a_slice_then_promotes_and_refuses_bad_actions(mlflow_client, model_name):
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="t", reason="first")
    promotion.promote(mlflow_client, model_name, v2, T.CHALLENGER, by="t", reason="candidate")
    conditions = "error_rate <= 0.01 and agreement >= 0.9 and slice_improves(accuracy, min_absolute=-0.02)"
    # a bad action: refused before anything is logged or moved
    with pytest.raises(
        DataError, match=r"on_pass must be one of \['promote', 'keep', 'remove'\], got 'promot'"
    ):
        shadow.gate(
            mlflow_client, model_name, _report(model_name, v1, v2, worse_slice=True), conditions=conditions,
            on_pass="promot",
        )  # fmt: skip
    assert T.SHADOW_DECISION not in mlflow_client.get_model_version(model_name, v2).tags
    # worse on one segment of live traffic: blocked, the slice named, on_fail keeps it under test
    blocked = shadow.gate(
        mlflow_client, model_name, _report(model_name, v1, v2, worse_slice=True), conditions=conditions,
        on_pass="promote", on_fail="keep", where="a notebook",
    )  # fmt: skip
    assert blocked["action"] == "keep" and not blocked["decision"]["passed"]
    assert "region=south" in " ".join(blocked["decision"]["reasons"]) and blocked["promotion"] is None
    assert promotion.aliases(mlflow_client, model_name) == {T.CHAMPION: v1, T.CHALLENGER: v2}
    assert mlflow_client.get_model_version(model_name, v2).tags[T.SHADOW_DECISION] == "keep"
    # fine on every slice: promoted through governance, the history saying where and why
    passed = shadow.gate(
        mlflow_client, model_name, _report(model_name, v1, v2, worse_slice=False), conditions=conditions,
        on_pass="promote", where="a notebook",
    )  # fmt: skip
    assert passed["action"] == "promote" and passed["promotion"]["previous"] == v1
    assert promotion.aliases(mlflow_client, model_name)[T.CHAMPION] == v2
    last = promotion.history(mlflow_client, model_name)[-1]
    assert last["by"] == "airflow-saga shadow gate"
    assert "shadow comparison passed in a notebook: candidate.error_rate <= 0.01" in last["reason"]
    assert passed["report_uri"].startswith("runs:/")
