"""slice_improves and catalogue-aware hints: what the gate says about slices and missing metrics."""

from __future__ import annotations

import pytest

from airflow_saga.core import conditions as C
from airflow_saga.core.errors import ConditionError


def _slice(name, rows, cand, champ, by=None, cand_unavailable=None):
    return {
        "name": name,
        "by": by or name.split("=")[0],
        "rows": rows,
        "eligible": rows >= 30,
        "candidate": {"metrics": cand, "unavailable": cand_unavailable or {}},
        "champion": None if champ is None else {"metrics": champ, "unavailable": {}},
    }


def sliced_report(slices, champion=True, min_rows=30):
    return {
        "schema": "saga.evaluation/v1",
        "task": "classification",
        "model_name": "churn",
        "candidate": {"run_id": "r", "model_uri": "m", "metrics": {"f1": 0.86, "accuracy": 0.9}},
        "champion": {
            "version": "4",
            "model_uri": "models:/churn/4",
            "metrics": {"f1": 0.85, "accuracy": 0.89},
        }
        if champion
        else None,
        "slices": {"min_rows": min_rows, "definitions": [], "results": slices},
    }


REGIONS = [
    _slice("region=north", 200, {"f1": 0.90, "rmse": 1.0}, {"f1": 0.89, "rmse": 1.1}),
    _slice("region=south", 150, {"f1": 0.70, "rmse": 2.0}, {"f1": 0.85, "rmse": 1.2}),
    _slice("region=east", 120, {"f1": 0.80, "rmse": 1.0}, {"f1": 0.81, "rmse": 1.0}),
    _slice("region=tiny", 3, {"f1": 0.0, "rmse": 9.0}, {"f1": 1.0, "rmse": 0.0}),
    _slice("age=[18, 40)", 300, {"f1": 0.88, "rmse": 1.0}, {"f1": 0.80, "rmse": 1.0}),
]


@pytest.mark.parametrize(
    "text",
    [
        "slice_improves(f1)",
        'slice_improves(f1, min_absolute=-0.02, by="region")',
        'slice_improves(rmse, min_relative=0.01, lower_is_better, by="age band", min_rows=50)',
    ],
)
def test_round_trips_through_both_forms(text):
    cond = C.parse_condition(text)
    assert isinstance(cond, C.SliceImproves)
    assert C.parse_condition(str(cond)) == cond == C.parse_condition(cond.to_dict())
    assert str(cond) == text


def test_bare_name_for_by_and_the_json_form():
    cond = C.parse_condition("slice_improves(f1, min_absolute=-0.02, by=region)")
    assert cond.to_dict() == {
        "slice_improves": {"metric": "f1", "min_absolute": -0.02, "greater_is_better": True, "by": "region"}
    }
    assert C.referenced_metrics("accuracy > 0.5 and slice_improves(recall)") == {"accuracy", "recall"}


def test_a_regression_confined_to_one_slice_blocks_and_the_record_names_it():
    decision = C.evaluate('slice_improves(f1, min_absolute=-0.02, by="region")', sliced_report(REGIONS))
    assert decision["passed"] is False
    check = decision["checks"][0]
    assert check["slice"] == "region=south" and check["slice_rows"] == 150
    assert check["failing_slices"] == ["region=south"]
    assert check["slices_compared"] == 3  # north, south, east; tiny has 3 rows < 30
    assert check["skipped_slices"] == [{"slice": "region=tiny", "rows": 3, "why": "fewer than 30 rows"}]
    assert check["left"] == {"ref": "candidate.f1 [region=south]", "value": 0.7}
    assert check["absolute_improvement"] == -0.15
    (reason,) = decision["reasons"]
    assert reason == (
        'slice_improves(f1, min_absolute=-0.02, by="region"): on slice region=south (150 rows) '
        "candidate.f1 = 0.7 does not improve on champion.f1 = 0.85 (version 4): "
        "absolute improvement -0.15 < min_absolute -0.02"
    )
    text = C.format_decision(decision)
    assert "[FAIL]" in text and "candidate.f1 [region=south] = 0.7" in text
    # the overall metric improved: only the slice condition sees the regression
    assert C.evaluate("improves(f1)", sliced_report(REGIONS))["passed"] is True


def test_small_slices_cannot_block_and_min_rows_can_be_raised_or_lowered():
    ok = [REGIONS[0], REGIONS[3]]  # north improves; tiny regresses on 3 rows
    assert C.evaluate("slice_improves(f1)", sliced_report(ok))["passed"] is True
    assert C.evaluate("slice_improves(f1, min_rows=3)", sliced_report(ok))["passed"] is False
    assert C.evaluate("slice_improves(f1, min_rows=151, by=region)", sliced_report(REGIONS))["passed"]


def test_every_definition_when_by_is_omitted_and_all_failures_listed():
    decision = C.evaluate("slice_improves(f1, min_absolute=0.0)", sliced_report(REGIONS))
    check = decision["checks"][0]
    assert check["failing_slices"] == ["region=south", "region=east"]
    assert check["slices_compared"] == 4 and check["slice"] == "region=south"
    assert decision["reasons"][0].endswith("; also failing: region=east")


def test_lower_is_better_and_negation():
    rep = sliced_report(REGIONS)
    blocked = C.evaluate("slice_improves(rmse, lower_is_better, by=region)", rep)
    assert blocked["passed"] is False and blocked["checks"][0]["slice"] == "region=south"
    assert "(lower is better)" in blocked["reasons"][0]
    negated = C.evaluate("not slice_improves(f1, by=age)", rep)
    assert negated["passed"] is False
    assert "holds on all 1 slices compared by 'age' (worst: age=[18, 40)" in negated["reasons"][0]


def test_no_champion_passes_and_no_comparable_slice_is_unknown():
    no_champ = C.evaluate("slice_improves(f1)", sliced_report(REGIONS, champion=False))
    assert no_champ["passed"] is True and no_champ["checks"][0]["note"] == C.NO_CHAMPION_NOTE
    small = C.evaluate("slice_improves(f1)", sliced_report([REGIONS[3]]))
    assert small["passed"] is False and small["checks"][0]["unknown"] is True
    assert (
        "no slice has at least 30 rows with f1 for both models (largest slice: 3 rows)" in small["reasons"][0]
    )
    # unknown is not rescued by `not`, and an `or` with a true side passes
    assert C.evaluate("not slice_improves(f1)", sliced_report([REGIONS[3]]))["passed"] is False
    assert C.evaluate("slice_improves(f1) or accuracy > 0.5", sliced_report([REGIONS[3]]))["passed"]


def test_slices_missing_a_metric_on_one_side_are_skipped_with_the_reason():
    rows = [
        REGIONS[0],
        _slice("region=west", 90, {"f1": 0.9}, {}, cand_unavailable={}),
        _slice("region=x", 90, {}, {"f1": 0.9}, cand_unavailable={"f1": "undefined on these rows"}),
    ]
    check = C.evaluate("slice_improves(f1)", sliced_report(rows))["checks"][0]
    assert check["passed"] is True and check["slices_compared"] == 1
    assert [s["why"] for s in check["skipped_slices"]] == [
        "champion: missing",
        "candidate: undefined on these rows",
    ]


@pytest.mark.parametrize(
    ("spec", "report", "fragment"),
    [
        (
            "slice_improves(f1)",
            {"task": "classification", "candidate": {"metrics": {"f1": 1}}, "champion": None},
            "needs a sliced evaluation, but the evaluation report has no slices",
        ),
        (
            "slice_improves(f1, by=regoin)",
            sliced_report(REGIONS),
            "no slices by 'regoin' (did you mean 'region'?)",
        ),
        ("slice_improves(f1_marco)", sliced_report(REGIONS), "metric 'f1_marco' (did you mean 'f1_macro'?)"),
        (
            "slice_improves(f1_marco)",
            sliced_report(REGIONS),
            "neither in the metric catalogue nor a user metric",
        ),
        (
            "slice_improves(f1)",
            {**sliced_report(REGIONS), "slices": {"results": [3]}},
            "malformed slice entry",
        ),
    ],
)
def test_slice_condition_errors(spec, report, fragment):
    with pytest.raises(ConditionError) as info:
        C.evaluate(spec, report)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("slice_improves(f1, min_rows=0)", "min_rows must be a positive integer"),
        ("slice_improves(f1, min_rows=1.5)", "min_rows must be a whole number"),
        ("slice_improves(f1, by=3)", "by must be a slice name"),
        ("slice_improves(f1, by)", "by needs a value"),
        ("improves(f1, by=region)", "unknown keyword argument 'by' to improves()"),
        ("slice_improve(f1)", "unknown function 'slice_improve' (did you mean 'slice_improves'?)"),
        ({"slice_improves": {"metric": "f1", "bye": "x"}}, "unknown argument(s) bye (did you mean 'by'?)"),
        ({"slice_improves": {"metric": "f1", "min_rows": True}}, "min_rows must be a positive integer"),
    ],
)
def test_bad_slice_conditions(text, fragment):
    with pytest.raises(ConditionError) as info:
        C.parse_condition(text)
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------------------ metric hints


def _report(task="classification", metrics=None, unavailable=None, user=None):
    return {
        "task": task,
        "candidate": {"metrics": metrics or {"accuracy": 0.9}, "unavailable": unavailable or {}},
        "champion": None,
        "user_metrics": user or {},
    }


def _error(spec, report):
    with pytest.raises(ConditionError) as info:
        C.evaluate(spec, report)
    return str(info.value)


def test_a_metric_the_model_cannot_have_says_why():
    why = "roc_auc needs class probabilities: model models:/m-1 (python_function flavour) offers none"
    message = _error("roc_auc >= 0.8", _report(unavailable={"roc_auc": why}))
    assert f"candidate.roc_auc is unavailable: {why}" in message


def test_metric_of_the_other_task_and_unknown_names_get_hints():
    assert "rmse is a regression metric, but this is a classification evaluation" in _error(
        "rmse < 1", _report()
    )
    message = _error("f1_marco > 0.5", _report(user={"cost": {"function": "x:y"}}))
    assert "candidate.f1_marco (did you mean 'f1_macro'?)" in message
    assert (
        "neither in the metric catalogue nor a user metric of this evaluation (user metrics: cost)" in message
    )
    assert "(did you mean 'cost'?)" in _error("cots < 1", _report(metrics={"cost": 1.0}, user={"cost": {}}))
