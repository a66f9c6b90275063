"""Quality-gate condition language: operators, both input forms, round trips, evaluation records, errors.

The gate decides whether a model reaches the registry, so every operator gets a truth table, every error
path asserts the message a user will read in the task log, and the parser is checked never to run Python.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest

from airflow_saga.core.conditions import (
    NO_CHAMPION_NOTE,
    And,
    Condition,
    Eq,
    Ge,
    Gt,
    Improves,
    In,
    Le,
    Lt,
    Metric,
    Not,
    Or,
    Value,
    evaluate,
    format_decision,
    parse_condition,
    referenced_metrics,
    validate_refs,
)
from airflow_saga.core.errors import ConditionError

# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def report(candidate: dict[str, Any], champion: dict[str, Any] | None = None, version: str = "3") -> dict:
    """An evaluation report in the exact saga.evaluation/v1 shape the evaluate step produces."""
    return {
        "schema": "saga.evaluation/v1",
        "task": "classification",
        "model_name": "iris",
        "candidate": {"run_id": "run-1", "model_uri": "runs:/run-1/model", "metrics": candidate},
        "champion": None
        if champion is None
        else {"version": version, "model_uri": "models:/iris/3", "metrics": champion},
        "dataset": {"digest": "abc123", "source": "iris.csv", "rows": 114},
    }


CAND = {"accuracy": 0.95, "f1": 0.94, "rmse": 2.0, "label": "a", "n": 3, "flag": True}
CHAMP = {"accuracy": 0.9, "f1": 0.93, "rmse": 2.6, "label": "b", "n": 3, "flag": False}
WITH_CHAMPION = report(CAND, CHAMP)
NO_CHAMPION = report(CAND)


def passed(spec: Any, rep: dict | None = None) -> bool:
    return evaluate(spec, WITH_CHAMPION if rep is None else rep)["passed"]


def error_of(spec: Any) -> str:
    with pytest.raises(ConditionError) as info:
        parse_condition(spec)
    return str(info.value)


def eval_error(spec: Any, rep: dict) -> str:
    with pytest.raises(ConditionError) as info:
        evaluate(spec, rep)
    return str(info.value)


T = "candidate.n == 3"  # true on every report here
F = "candidate.n == 4"  # false on every report here
U = "candidate.n > champion.n"  # unknown when there is no champion

# ----------------------------------------------------------------------------------------------------------
# truth tables
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        (">=", 0.94, True),
        (">=", 0.95, True),
        (">=", 0.96, False),
        (">", 0.94, True),
        (">", 0.95, False),
        (">", 0.96, False),
        ("<=", 0.94, False),
        ("<=", 0.95, True),
        ("<=", 0.96, True),
        ("<", 0.94, False),
        ("<", 0.95, False),
        ("<", 0.96, True),
        ("==", 0.95, True),
        ("==", 0.96, False),
        ("!=", 0.95, False),
        ("!=", 0.96, True),
    ],
)
def test_numeric_comparison_truth_table(op: str, value: float, expected: bool) -> None:
    assert passed(f"accuracy {op} {value}") is expected
    # The literal may sit on the left; the operator then reads the other way round.
    mirrored = {">=": "<=", ">": "<", "<=": ">=", "<": ">", "==": "==", "!=": "!="}[op]
    assert passed(f"{value} {mirrored} candidate.accuracy") is expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("n == 3", True),
        ("n == 3.0", True),  # numbers compare by value, int or float
        ("n >= 2.5", True),
        ("n < 3", False),
        ('label == "a"', True),
        ("label == 'b'", False),
        ('label != "b"', True),
        ("flag == true", True),
        ("flag == false", False),
        ("flag != false", True),
        ("champion.flag == false", True),
        ("candidate.f1 > champion.f1", True),
        ("candidate.rmse < champion.rmse", True),
        ("champion.accuracy >= candidate.accuracy", False),
        ("champion.exists", True),
        ("not champion.exists", False),
        ("champion.exists == true", True),
        ("champion.exists != true", False),
    ],
)
def test_typed_comparisons_with_champion(spec: str, expected: bool) -> None:
    assert passed(spec) is expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ('label in ["a", "b"]', True),
        ("label in ['x', 'y']", False),
        ("label in []", False),
        ('label not in ["x"]', True),
        ('label not in ["a"]', False),
        ("n in [1, 2, 3]", True),
        ("n in [3.0]", True),
        ("n in [4, 5]", False),
        ("flag in [true]", True),
        ("champion.label in ['b']", True),
        ("champion.exists in [false]", False),
    ],
)
def test_in_truth_table(spec: str, expected: bool) -> None:
    assert passed(spec) is expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (f"{T} and {T}", True),
        (f"{T} and {F}", False),
        (f"{F} and {T}", False),
        (f"{F} and {F}", False),
        (f"{T} or {T}", True),
        (f"{T} or {F}", True),
        (f"{F} or {T}", True),
        (f"{F} or {F}", False),
        (f"not {T}", False),
        (f"not {F}", True),
        (f"not not {T}", True),
        (f"{T} and {T} and {F}", False),
        (f"{F} or {F} or {T}", True),
        # precedence: not > and > or
        (f"{T} or {F} and {F}", True),  # T or (F and F)
        (f"({T} or {F}) and {F}", False),
        (f"not {F} and {F}", False),  # (not F) and F
        (f"not ({F} and {F})", True),
        (f"{F} and {F} or {T}", True),  # (F and F) or T
        (f"{F} and ({F} or {T})", False),
        (f"not ({T} or {F}) or not {F}", True),
    ],
)
def test_boolean_truth_table_and_precedence(spec: str, expected: bool) -> None:
    assert passed(spec) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a > 1 or b > 1 and c > 1", Or(Gt("a", 1), And(Gt("b", 1), Gt("c", 1)))),
        ("a > 1 and b > 1 or c > 1", Or(And(Gt("a", 1), Gt("b", 1)), Gt("c", 1))),
        ("not a > 1 and b > 1", And(Not(Gt("a", 1)), Gt("b", 1))),
        ("not (a > 1 and b > 1)", Not(And(Gt("a", 1), Gt("b", 1)))),
        ("(a > 1 or b > 1) and c > 1", And(Or(Gt("a", 1), Gt("b", 1)), Gt("c", 1))),
        ("((a > 1))", Gt("a", 1)),
        ("a > 1 and (b > 1 and c > 1)", And(Gt("a", 1), Gt("b", 1), Gt("c", 1))),  # flattened
        ("a != 1", Not(Eq("a", 1))),
        ("a not in [1]", Not(In("a", [1]))),
        ("not champion.exists", Not(Eq("champion.exists", True))),
        ("A > 1 AND b > 1 Or NOT c > 1", Or(And(Gt("A", 1), Gt("b", 1)), Not(Gt("c", 1)))),
    ],
)
def test_grammar_builds_expected_tree(text: str, expected: Condition) -> None:
    assert parse_condition(text) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (U, None),
        (f"{U} or {T}", True),  # true or unknown = true
        (f"{U} or {F}", None),
        (f"{U} and {F}", False),  # false and unknown = false
        (f"{U} and {T}", None),
        (f"not ({U})", None),  # not cannot turn a missing champion into a pass
        (f"{U} or not champion.exists", True),
        (f"not ({U} and {F})", True),
    ],
)
def test_champion_reference_without_champion_is_unknown(spec: str, expected: bool | None) -> None:
    decision = evaluate(spec, NO_CHAMPION)
    assert decision["passed"] is (expected is True)
    unknown = [c for c in decision["checks"] if c.get("unknown")]
    assert len(unknown) == 1
    assert unknown[0]["note"] == NO_CHAMPION_NOTE
    assert unknown[0]["right"] == {"ref": "champion.n", "value": None}
    if expected is None:
        assert f"{parse_condition(U)} cannot be evaluated: {NO_CHAMPION_NOTE}" in decision["reasons"]


# ----------------------------------------------------------------------------------------------------------
# Improves (MLflow MetricThreshold semantics)
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cand", "champ", "kwargs", "expected", "absolute", "relative"),
    [
        # greater is better
        (0.95, 0.90, {}, True, 0.05, 0.0555555555556),
        (0.90, 0.90, {}, True, 0.0, 0.0),  # ties pass the default (>= 0)
        (0.89, 0.90, {}, False, -0.01, -0.0111111111111),
        (0.95, 0.90, {"min_absolute": 0.05}, True, 0.05, 0.0555555555556),
        (0.95, 0.90, {"min_absolute": 0.06}, False, 0.05, 0.0555555555556),
        (0.95, 0.90, {"min_relative": 0.05}, True, 0.05, 0.0555555555556),
        (0.95, 0.90, {"min_relative": 0.06}, False, 0.05, 0.0555555555556),
        (0.95, 0.90, {"min_absolute": 0.01, "min_relative": 0.06}, False, 0.05, 0.0555555555556),
        (0.3, 0.2, {"min_absolute": 0.1}, True, 0.1, 0.5),  # 0.3 - 0.2 == 0.09999999999999998
        # "no worse than": a negative threshold alone tolerates a regression (an omitted one is not checked)
        (0.89, 0.90, {"min_absolute": -0.02}, True, -0.01, -0.0111111111111),
        (0.89, 0.90, {"min_absolute": -0.005}, False, -0.01, -0.0111111111111),
        (0.89, 0.90, {"min_relative": -0.02}, True, -0.01, -0.0111111111111),
        (0.89, 0.90, {"min_absolute": -0.02, "min_relative": -0.01}, False, -0.01, -0.0111111111111),
        (0.89, 0.90, {"min_absolute": -0.02, "min_relative": 0.0}, False, -0.01, -0.0111111111111),
        (0.89, 0.90, {"min_absolute": 0.0, "min_relative": -0.02}, False, -0.01, -0.0111111111111),
        (-1.0, -2.0, {"min_relative": 0.5}, True, 1.0, 0.5),  # |champ| for negative metrics
        # lower is better (rmse): improvement = champ - cand
        (2.0, 2.6, {"greater_is_better": False}, True, 0.6, 0.230769230769),
        (2.0, 2.6, {"greater_is_better": False, "min_absolute": 0.5}, True, 0.6, 0.230769230769),
        (2.0, 2.6, {"greater_is_better": False, "min_absolute": 0.7}, False, 0.6, 0.230769230769),
        (2.0, 2.6, {"greater_is_better": False, "min_relative": 0.3}, False, 0.6, 0.230769230769),
        (3.0, 2.6, {"greater_is_better": False}, False, -0.4, -0.153846153846),
        # zero champion: the relative threshold cannot apply, so "at least as good" (or min_absolute) decides
        (0.1, 0.0, {"min_relative": 0.5}, True, 0.1, None),
        (-0.1, 0.0, {"min_relative": -0.5}, False, -0.1, None),
        (0.1, 0.0, {"min_absolute": 0.2, "min_relative": 0.5}, False, 0.1, None),
        (-0.1, 0.0, {"min_absolute": -0.2, "min_relative": 0.5}, True, -0.1, None),
        (0.0, 0.0, {}, True, 0.0, None),
        (0.0, 0.0, {"greater_is_better": False, "min_relative": 1.0}, True, 0.0, None),
    ],
)
def test_improves_against_champion(
    cand: float, champ: float, kwargs: dict, expected: bool, absolute: float, relative: float | None
) -> None:
    condition = Improves("m", **kwargs)
    decision = evaluate(condition, report({"m": cand}, {"m": champ}))
    assert decision["passed"] is expected
    (check,) = decision["checks"]
    assert check["operator"] == "improves"
    assert check["left"] == {"ref": "candidate.m", "value": cand}
    assert check["right"] == {"ref": "champion.m", "value": champ}
    assert check["absolute_improvement"] == pytest.approx(absolute)
    assert check["relative_improvement"] == (None if relative is None else pytest.approx(relative))
    assert check["greater_is_better"] is kwargs.get("greater_is_better", True)
    assert check["min_absolute"] == kwargs.get("min_absolute")
    assert check["min_relative"] == kwargs.get("min_relative")
    if relative is None and "min_relative" in kwargs:
        assert check["note"] == f"champion.m is {champ!r}, so min_relative does not apply"
    if expected:
        assert decision["reasons"] == []
    else:
        (reason,) = decision["reasons"]
        assert reason.startswith(
            f"candidate.m = {cand!r} does not improve on champion.m = {champ!r} (version 3)"
        )


@pytest.mark.parametrize(
    "spec", ["improves(f1, min_relative=0.5)", "improves(rmse, min_absolute=9, lower_is_better)"]
)
def test_improves_passes_without_champion(spec: str) -> None:
    decision = evaluate(spec, NO_CHAMPION)
    assert decision["passed"] is True
    (check,) = decision["checks"]
    assert check["passed"] is True
    assert check["note"] == NO_CHAMPION_NOTE
    assert check["right"]["value"] is None
    assert check["absolute_improvement"] is None and check["relative_improvement"] is None


def test_negated_improves_without_champion_explains_itself() -> None:
    decision = evaluate("not improves(f1)", NO_CHAMPION)
    assert decision["passed"] is False
    assert decision["reasons"] == [
        f"improves(f1) passes because there is {NO_CHAMPION_NOTE}, but the condition negates it"
    ]


def test_improves_failure_reason_names_both_shortfalls() -> None:
    decision = evaluate("improves(f1, min_absolute=0.1, min_relative=0.5)", WITH_CHAMPION)
    assert decision["reasons"] == [
        "candidate.f1 = 0.94 does not improve on champion.f1 = 0.93 (version 3): "
        "absolute improvement 0.01 < min_absolute 0.1; relative improvement 0.010752688172 < min_relative 0.5"
    ]
    lower = evaluate("improves(rmse, lower_is_better, min_absolute=1)", WITH_CHAMPION)
    assert "(lower is better): absolute improvement 0.6 < min_absolute 1.0" in lower["reasons"][0]
    worse = evaluate("improves(accuracy)", report({"accuracy": 0.8}, {"accuracy": 0.9}, version="7"))
    assert worse["reasons"] == [
        "candidate.accuracy = 0.8 does not improve on champion.accuracy = 0.9 (version 7): "
        "absolute improvement -0.1 < 0 (worse than the champion)"
    ]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"metric": "candidate.f1"}, Improves("f1")),
        ({"metric": "f1", "min_absolute": 1}, Improves("f1", min_absolute=1.0)),
        ({"metric": "f1", "min_absolute": None, "min_relative": None}, Improves("f1")),
        ({"metric": "f1", "greater_is_better": False}, Improves("f1", greater_is_better=False)),
    ],
)
def test_improves_normalises_its_fields(kwargs: dict, expected: Improves) -> None:
    assert Improves(**kwargs) == expected
    assert Improves(**kwargs).min_absolute is None or isinstance(Improves(**kwargs).min_absolute, float)
    assert Improves("rmse", greater_is_better=False).lower_is_better is True


# ----------------------------------------------------------------------------------------------------------
# input forms and round trips
# ----------------------------------------------------------------------------------------------------------

ROUND_TRIP_CORPUS = [
    "accuracy >= 0.9",
    "accuracy >= 0.9 and (f1 > champion.f1 or not champion.exists)",
    "improves(f1, min_relative=0.01)",
    "improves(rmse, min_absolute=0.5, lower_is_better)",
    "improves(rmse, greater_is_better=false)",
    "improves(f1, min_absolute=-0.01, min_relative=-0.5)",
    "improves(f1, min_absolute=0, min_relative=0.0)",  # explicit zeros are kept, not dropped as defaults
    'improves("val loss", min_absolute=1e-05)',
    'candidate.label in ["a", "b"]',
    'candidate.label not in [\'a\', "it\'s \\"quoted\\"\\n"]',
    "n in [1, 2.5, -3, 1e+20, 1E-7]",
    "flag in [true, false]",
    "not (accuracy >= 0.5 and f1 >= 0.5)",
    "not not accuracy > 0",
    "not improves(f1)",
    "label != 'champion.f1'",
    "label == 'candidate.x' or 'a' == label",
    "0.9 <= accuracy",
    "-1 < -0.5",
    'candidate["val loss"] >= 1 or champion["val/acc"] < 2e-5',
    "candidate.in >= 1 and candidate.and < 2",  # keywords are fine after a prefix
    "candidate.val.loss < 0.3",
    "champion.exists == false or champion.exists != true",
    "a > 1 or b > 1 and (c > 1 or d > 1)",
    "x == 'ünïcödé ☃'",
    "x == '\\u0001\\t'",
]


@pytest.mark.parametrize("text", ROUND_TRIP_CORPUS)
def test_round_trips(text: str) -> None:
    condition = parse_condition(text)
    assert parse_condition(str(condition)) == condition
    assert parse_condition(condition.to_dict()) == condition
    # The JSON form really is JSON: it survives serialisation, and a JSON string parses too.
    encoded = json.dumps(condition.to_dict(), allow_nan=False)
    assert parse_condition(json.loads(encoded)) == condition
    assert parse_condition(encoded) == condition
    assert hash(parse_condition(str(condition))) == hash(condition)
    # str() is canonical: rendering again changes nothing.
    assert str(parse_condition(str(condition))) == str(condition)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"ge": ["candidate.accuracy", 0.9]}, Ge(Metric("accuracy"), Value(0.9))),
        ({"ge": ["accuracy", 0.9]}, Ge(Metric("candidate.accuracy"), 0.9)),
        ({"gt": ["f1", "champion.f1"]}, Gt("f1", Metric("champion.f1"))),
        ({"le": ["rmse", 3]}, Le("rmse", 3)),
        ({"lt": ["rmse", {"metric": "champion.rmse"}]}, Lt("rmse", Metric("rmse", source="champion"))),
        ({"eq": ["label", "accuracy"]}, Eq(Metric("label"), Value("accuracy"))),  # right string = literal
        ({"eq": ["label", {"metric": "accuracy"}]}, Eq(Metric("label"), Metric("accuracy"))),
        ({"eq": [{"value": "a"}, "a"]}, Eq(Value("a"), Value("a"))),
        ({"eq": ["label", {"value": "candidate.x"}]}, Eq(Metric("label"), Value("candidate.x"))),
        ({"ne": ["label", "a"]}, Not(Eq("label", "a"))),
        ({"in": ["candidate.label", ["a", "b"]]}, In("label", ["a", "b"])),
        ({"in": ["label", ["candidate.x"]]}, In("label", ["candidate.x"])),  # list items are literals
        ({"not": {"ge": ["a", 1]}}, Not(Ge("a", 1))),
        ({"not": [{"ge": ["a", 1]}]}, Not(Ge("a", 1))),
        ({"and": [{"ge": ["a", 1]}, {"le": ["b", 2]}]}, And(Ge("a", 1), Le("b", 2))),
        ({"or": [{"ge": ["a", 1]}, "b <= 2"]}, Or(Ge("a", 1), Le("b", 2))),  # strings are grammar
        ({"improves": {"metric": "f1", "min_relative": 0.01}}, Improves("f1", min_relative=0.01)),
        (
            {"improves": {"metric": "rmse", "min_absolute": 0.5, "greater_is_better": False}},
            Improves("rmse", min_absolute=0.5, greater_is_better=False),
        ),
        (
            {"improves": {"metric": "rmse", "lower_is_better": True}},
            Improves("rmse", greater_is_better=False),
        ),
        ({"improves": "f1"}, Improves("f1")),
        ([{"ge": ["a", 1]}], Ge("a", 1)),  # a one-item list is that item
        ([{"ge": ["a", 1]}, "b <= 2", Improves("f1")], And(Ge("a", 1), Le("b", 2), Improves("f1"))),
        ('[{"ge": ["a", 1]}, "b <= 2"]', And(Ge("a", 1), Le("b", 2))),  # JSON text
        (Improves("f1"), Improves("f1")),
    ],
)
def test_json_form(data: Any, expected: Condition) -> None:
    assert parse_condition(data) == expected


def test_python_api_builds_the_same_objects_as_both_forms() -> None:
    built = Ge("accuracy", 0.9) & (Gt("f1", "champion.f1") | ~Eq("champion.exists", True))
    assert built == parse_condition("accuracy >= 0.9 and (f1 > champion.f1 or not champion.exists)")
    assert built == parse_condition(
        {
            "and": [
                {"ge": ["candidate.accuracy", 0.9]},
                {"or": [{"gt": ["candidate.f1", "champion.f1"]}, {"not": {"eq": ["champion.exists", True]}}]},
            ]
        }
    )
    assert And(And(Ge("a", 1), Ge("b", 1)), Ge("c", 1)) == And(Ge("a", 1), Ge("b", 1), Ge("c", 1))
    assert Ge("a", 1) != Gt("a", 1)
    assert Eq("flag", True) != Eq("flag", 1)  # a boolean literal is not the number 1
    assert Eq("n", 1) == Eq("n", 1.0)
    assert len({parse_condition("a >= 1"), Ge("candidate.a", 1)}) == 1


def test_to_dict_uses_explicit_operand_objects_only_where_needed() -> None:
    assert Eq(Value("a"), "label").to_dict() == {"eq": [{"value": "a"}, "label"]}  # right string: literal
    assert Eq(Value("a"), Metric("label")).to_dict() == {"eq": [{"value": "a"}, "candidate.label"]}
    assert Eq("label", "champion.x").to_dict() == {"eq": ["candidate.label", "champion.x"]}
    assert Eq("label", Value("champion.x")).to_dict() == {"eq": ["candidate.label", {"value": "champion.x"}]}
    assert parse_condition("improves(f1)").to_dict() == {
        "improves": {"metric": "f1", "greater_is_better": True}
    }
    assert parse_condition("improves(f1, min_relative=0.01, lower_is_better)").to_dict() == {
        "improves": {"metric": "f1", "min_relative": 0.01, "greater_is_better": False}
    }


@pytest.mark.parametrize(
    ("condition", "text"),
    [
        (Ge("accuracy", 0.9), "candidate.accuracy >= 0.9"),
        (Not(Eq("champion.exists", True)), "not champion.exists"),
        (Not(Eq("label", "a")), 'candidate.label != "a"'),
        (Not(Ge("a", 1)), "not (candidate.a >= 1)"),
        (
            And(Or(Ge("a", 1), Ge("b", 1)), Ge("c", 1)),
            "(candidate.a >= 1 or candidate.b >= 1) and candidate.c >= 1",
        ),
        (Improves("rmse", 0.5, None, False), "improves(rmse, min_absolute=0.5, lower_is_better)"),
        (Improves("f1", 0, 0), "improves(f1, min_absolute=0.0, min_relative=0.0)"),
        (Improves("in"), 'improves("in")'),
        (Improves("val loss"), 'improves("val loss")'),
        (Ge(Metric("a b"), 1), 'candidate["a b"] >= 1'),
    ],
)
def test_grammar_rendering(condition: Condition, text: str) -> None:
    assert str(condition) == text


# ----------------------------------------------------------------------------------------------------------
# decision records
# ----------------------------------------------------------------------------------------------------------


def test_decision_record_shape_and_reasons() -> None:
    rep = report({"accuracy": 0.8412, "f1": 0.94}, {"accuracy": 0.9, "f1": 0.93})
    decision = evaluate("accuracy >= 0.9 and (f1 > champion.f1 or not champion.exists)", rep)
    assert decision == {
        "passed": False,
        "expression": "candidate.accuracy >= 0.9 and (candidate.f1 > champion.f1 or not champion.exists)",
        "checks": [
            {
                "expression": "candidate.accuracy >= 0.9",
                "operator": "ge",
                "left": {"ref": "candidate.accuracy", "value": 0.8412},
                "right": {"value": 0.9},
                "passed": False,
            },
            {
                "expression": "candidate.f1 > champion.f1",
                "operator": "gt",
                "left": {"ref": "candidate.f1", "value": 0.94},
                "right": {"ref": "champion.f1", "value": 0.93},
                "passed": True,
            },
            {
                "expression": "champion.exists",
                "operator": "eq",
                "left": {"ref": "champion.exists", "value": True},
                "right": {"value": True},
                "passed": True,
                "negated": True,
            },
        ],
        "reasons": ["candidate.accuracy = 0.8412 is not >= 0.9"],
    }
    json.dumps(decision, allow_nan=False)


def test_every_leaf_is_evaluated_without_short_circuit() -> None:
    decision = evaluate(f"{F} and {T} and ({T} or {F}) and improves(f1)", WITH_CHAMPION)
    assert [c["passed"] for c in decision["checks"]] == [False, True, True, False, True]
    assert decision["reasons"] == ["candidate.n = 3 is not == 4"]


@pytest.mark.parametrize(
    ("spec", "reasons"),
    [
        ('label in ["x", "y"]', ['candidate.label = "a" is not in ["x", "y"]']),
        ('label not in ["a"]', ['candidate.label = "a" is in ["a"], but the condition negates it']),
        ("label != 'a'", ['candidate.label = "a" == "a" holds, but the condition negates it']),
        (
            "not champion.exists",
            ["there is a champion (version 3), but the condition requires that there be none"],
        ),
        ("0.99 <= accuracy", ["0.99 is not <= candidate.accuracy = 0.95"]),
        (f"{F} or {F}", ["candidate.n = 3 is not == 4"]),  # duplicates collapse
        (
            "not (accuracy > 0.5 or f1 > 0.99)",
            ["candidate.accuracy = 0.95 > 0.5 holds, but the condition negates it"],
        ),
        (
            "not (accuracy > 0.5 and f1 > 0.5)",
            [
                "candidate.accuracy = 0.95 > 0.5 holds, but the condition negates it",
                "candidate.f1 = 0.94 > 0.5 holds, but the condition negates it",
            ],
        ),
        (
            "not improves(f1)",
            [
                "candidate.f1 = 0.94 improves on champion.f1 = 0.93 (version 3) (absolute improvement 0.01, "
                "relative improvement 0.010752688172), but the condition negates it"
            ],
        ),
        (f"{T} or {F}", []),
    ],
)
def test_reasons_explain_only_what_blocked_the_gate(spec: str, reasons: list[str]) -> None:
    assert evaluate(spec, WITH_CHAMPION)["reasons"] == reasons


def test_no_champion_reason_for_exists_check() -> None:
    assert evaluate("champion.exists", NO_CHAMPION)["reasons"] == [
        "there is no champion (champion.exists is false)"
    ]


def test_format_decision_is_a_readable_log_summary() -> None:
    decision = evaluate(
        f"accuracy >= 0.99 and label != 'b' and ({U} or not champion.exists) and improves(f1)", NO_CHAMPION
    )
    text = format_decision(decision)
    lines = text.splitlines()
    assert lines[0].startswith("Quality gate BLOCKED: candidate.accuracy >= 0.99 and ")
    assert "  [FAIL] candidate.accuracy >= 0.99  (candidate.accuracy = 0.95)" in lines
    assert '  [pass] not (candidate.label == "b")  (candidate.label = "a")' in lines
    assert (
        "  [n/a ] candidate.n > champion.n  "
        "(candidate.n = 3; champion.n = none; no champion to compare against)" in lines
    )
    assert "  [pass] not (champion.exists)  (champion.exists = false)" in lines
    assert (
        "  [pass] improves(f1)  (candidate.f1 = 0.94; champion.f1 = none; no champion to compare against)"
        in lines
    )
    assert lines[-2:] == ["Reasons:", "  - candidate.accuracy = 0.95 is not >= 0.99"]

    ok = format_decision(evaluate("improves(rmse, lower_is_better)", WITH_CHAMPION))
    assert ok.splitlines() == [
        "Quality gate PASSED: improves(rmse, lower_is_better)",
        "  [pass] improves(rmse, lower_is_better)  (candidate.rmse = 2.0; champion.rmse = 2.6; "
        "absolute improvement 0.6; relative improvement 0.230769230769)",
    ]


def test_referenced_metrics() -> None:
    spec = "accuracy >= 0.9 and (f1 > champion.f1 or not champion.exists) and improves(rmse)"
    assert referenced_metrics(spec) == {"accuracy", "f1", "rmse"}


def test_validate_refs_accepts_a_gate_over_available_metrics() -> None:
    validate_refs("accuracy >= 0.9 and improves(f1) and not champion.exists", {"accuracy", "f1"})


# ----------------------------------------------------------------------------------------------------------
# errors: grammar
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["empty condition", "column 1"]),
        ("accuracy >= 0.9)", ["unbalanced ')'", "column 16", "accuracy >= 0.9)\n" + " " * 19 + "^"]),
        ("(accuracy >= 0.9", ["unbalanced '(' opened at column 1", "got end of input", "column 17"]),
        ("(a > 1 or (b > 1)", ["unbalanced '(' opened at column 1"]),
        ("()", ["empty parentheses", "column 2"]),
        ("accuracy >= 0.9 f1 > 1", ["unexpected name 'f1' after a complete condition", "column 17"]),
        ("accuracy >= 0.9 and", ["unexpected end of input: expected a condition", "column 20"]),
        ("and a > 1", ["unexpected keyword 'and'", "column 1"]),
        ("a > 1 or or b > 1", ["unexpected keyword 'or'", "column 10"]),
        ("accuracy >=", ["expected a metric name or a value, got end of input"]),
        ("accuracy >= >= 1", ["expected a metric name or a value, got operator '>='", "column 13"]),
        ("a >= b >= c", ["chained comparisons are not supported", "column 8"]),
        ("accuracy = 0.9", ["did you mean '=='?", "column 10"]),
        ("accuracy 0.9", ["expected a comparison operator", "after candidate.accuracy", "number 0.9"]),
        ("accuracy", ["expected a comparison operator", "only champion.exists can stand alone"]),
        ("a @ 1", ["unexpected character '@'", "column 3"]),
        ("a > 1 &&  b > 1", ["unexpected character '&'", "column 7"]),
        ("label == 'abc", ["unterminated string starting with '", "column 10"]),
        ('label == "a\\q"', ["invalid escape '\\\\q' in string", "column 12"]),
        ("1.2.3 > a", ["malformed number '1.2.'", "column 1"]),
        ("a > 1x", ["malformed number '1x'", "column 5"]),
        ("a > 1e999", ["number 1e999 is out of range"]),
        ("a > " + "9" * 5000, ["has more than 40 digits, beyond the limit of 40 digits (MAX_NUMBER_DIGITS)"]),
        ("a in b", ["expected a list like", "after 'in'", "name 'b'"]),
        ("a in [1, 2", ["expected ',' or ']' in the list opened at column 6", "end of input"]),
        ("a in [1 2]", ["expected ',' or ']'", "number 2"]),
        ("a in [b]", ["expected a literal value in the list", "not metric references"]),
        ("a > [1]", ["a list is only allowed after 'in'"]),
        ("candidate > 1", ["needs a metric name after 'candidate'"]),
        ("candidate[1] > 1", ["expected a quoted metric name in candidate[...]"]),
        ('champion["x" > 1', ["expected ']'"]),
        ("foo(x)", ["unknown function 'foo'", "the functions are improves(", "column 1"]),
        ("os.system('x')", ["unknown function 'os.system'"]),
        ("improves()", ["improves() needs a metric name first"]),
        ("improves(f1", ["expected ',' or ')' in improves(...)", "end of input"]),
        ("improves(f1, 0.01)", ["expected a keyword argument", "number 0.01"]),
        ("improves(f1, min_rel=0.1)", ["unknown keyword argument 'min_rel'", "did you mean 'min_relative'"]),
        ("improves(f1, min_absolute)", ["min_absolute needs a value"]),
        ("improves(f1, min_absolute='x')", ["min_absolute must be a number", "string 'x'"]),
        ("improves(f1, lower_is_better=1)", ["lower_is_better must be true or false"]),
        ("improves(f1, min_relative=0.1, min_relative=0.2)", ["'min_relative' given twice"]),
        ("improves(f1, lower_is_better, greater_is_better)", ["not both"]),
        ("improves(champion.f1)", ["give the metric name, not 'champion.f1'"]),
        ("label >= 'a'", ["'>=' compares numbers", '"a" is a string literal', "candidate.a", "column 7"]),
        ("champion.exists >= 1", ["champion.exists is a boolean"]),
        ("label == 1 and 'a' == 1", ["'==' cannot compare \"a\" (a string) with 1 (a number)"]),
        ("champion.exists == 'yes'", ["cannot compare champion.exists (a boolean)"]),
        ("label in ['a', 1]", ["mixes number and string values"]),
        ("1 in ['a']", ["'in' cannot look for 1 (a number) in a list of string values"]),
        ("a > 1 and\n  b >", ["line 2, column 6", "\n      b >\n         ^"]),
    ],
)
def test_grammar_errors_name_text_and_position(text: str, fragments: list[str]) -> None:
    message = error_of(text)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('x')",
        "accuracy >= __import__('os').system('x')",
        "exec('import os')",
        "eval('1')",
        "open('/etc/passwd')",
        "lambda: 1",
        "().__class__.__bases__[0]",
        "[x for x in ()]",
        "accuracy >= 0.9; import os",
        "accuracy >= 0.9 and os.system('x') == 0",
        "globals()['os']",
    ],
)
def test_parser_never_evaluates_python(payload: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the condition parser executed Python")

    monkeypatch.setattr(os, "system", refuse)
    with pytest.raises(ConditionError):
        parse_condition(payload)


def test_python_payload_is_rejected_as_unknown_function() -> None:
    assert "unknown function '__import__'" in error_of("__import__('os').system('x')")


# ----------------------------------------------------------------------------------------------------------
# errors: JSON form and constructors
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (
            {"gte": ["a", 1]},
            ['$: unknown operator "gte"', "did you mean 'ge'", "expected one of and, eq, ge"],
        ),
        ({"greater": ["a", 1]}, ['unknown operator "greater"']),
        ({"and": [{"ge": ["a", 1]}, {"lte": ["b", 1]}]}, ['$.and[1]: unknown operator "lte"', "'le'"]),
        ({"ge": ["a", 1], "le": ["b", 2]}, ["exactly one operator key, got ['ge', 'le']"]),
        ({}, ["exactly one operator key, got []"]),
        ({"ge": ["a"]}, ["$.ge: 'ge' takes exactly 2 operands [left, right], got 1"]),
        ({"eq": ["a", 1, 2]}, ["'eq' takes exactly 2 operands", "got 3"]),
        ({"lt": "a"}, ["'lt' takes exactly 2 operands", 'got "a"']),
        ({"in": ["a", "b"]}, ["$.in[1]: 'in' needs a list of literal values, got \"b\""]),
        ({"in": ["a"]}, ["'in' takes exactly 2 operands"]),
        ({"and": [{"ge": ["a", 1]}]}, ["$.and: 'and' takes a list of at least 2 conditions, got 1"]),
        ({"or": {"ge": ["a", 1]}}, ["'or' takes a list of at least 2 conditions"]),
        ({"not": [{"ge": ["a", 1]}, {"ge": ["b", 1]}]}, ["$.not: 'not' takes exactly 1 condition, got 2"]),
        ({"not": {"ge": ["a"]}}, ["$.not.ge: 'ge' takes exactly 2 operands"]),
        ([], ["an empty list of conditions is not a gate"]),
        ([{"ge": ["a", 1]}, 5], ["$[1]: expected a condition (object, list or string), got 5"]),
        (None, ["expected a condition", "got null"]),
        ({"and": ["a >= 1", "b >"]}, ["$.and[1]: expected a metric name or a value"]),
        ({"ge": [0.9, "accuracy"]}, ["$.ge: '>=' compares numbers", '{"metric": "accuracy"}']),
        ({"ge": ["a", None]}, ["$.ge[1]: null is not a valid operand"]),
        ({"ge": ["a", [1]]}, ["$.ge[1]: a list ([1]) is only valid as the right operand of 'in'"]),
        ({"ge": ["a", {"metrc": "b"}]}, ["$.ge[1]: an operand object must be", '{"metrc": "b"}']),
        ({"ge": [{"metric": 1}, 1]}, ["$.ge[0]", '{"metric": ...} needs a metric name string']),
        ({"ge": ["a", float("nan")]}, ["numeric literal must be finite, got nan"]),
        ({"ge": ["a", float("inf")]}, ["numeric literal must be finite, got inf"]),
        ({"ge": ["", 1]}, ["empty metric name"]),
        ({"ge": ["champion.", 1]}, ["needs a metric name after 'champion'"]),
        ({"eq": ["a", {"value": {"x": 1}}]}, ["a literal must be a number, string or boolean"]),
        ({"in": ["a", ["x", 1]]}, ["$.in: the list of 'in' mixes number and string values"]),
        ({"improves": {"min_relative": 0.1}}, ["$.improves: improves needs a 'metric'"]),
        ({"improves": {"metric": "f1", "min_rel": 0.1}}, ["unknown argument(s) min_rel", "'min_relative'"]),
        ({"improves": {"metric": "f1", "min_absolute": "0.1"}}, ['min_absolute must be a number, got "0.1"']),
        ({"improves": {"metric": "f1", "min_absolute": True}}, ["min_absolute must be a number, got true"]),
        (
            {"improves": {"metric": "f1", "greater_is_better": "no"}},
            ["greater_is_better must be true or false"],
        ),
        ({"improves": {"metric": "f1", "lower_is_better": 1}}, ["lower_is_better must be true or false"]),
        (
            {"improves": {"metric": "f1", "lower_is_better": True, "greater_is_better": False}},
            ["greater_is_better or lower_is_better, not both"],
        ),
        ({"improves": {"metric": ""}}, ["improves() needs a metric name"]),
        ({"improves": 3}, ['$.improves: expected {"metric": "<name>", ...}, got 3']),
        ('{"ge": ["a", 1]', ["looks like JSON but is not valid JSON", "line 1, column 16"]),
    ],
)
def test_json_form_errors_name_the_field(data: Any, fragments: list[str]) -> None:
    message = error_of(data)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: And(Ge("a", 1)), "'and' needs at least 2 conditions, got 1"),
        (lambda: Or(), "'or' needs at least 2 conditions, got 0"),
        (lambda: And(Ge("a", 1), "b > 1"), "'and' item 1 is not a condition"),
        (lambda: Not("a > 1"), "'not' needs a condition"),
        (lambda: In("a", "abc"), "'in' needs a list of literal values"),
        (lambda: Metric("x", source="baseline"), "metric source must be 'candidate' or 'champion'"),
        (lambda: Metric(3), "a metric reference must be a string"),  # type: ignore[arg-type]
        (lambda: Gt("a", True), "'>' compares numbers, but true is a boolean literal"),
        (lambda: Improves("f1", min_relative=math.inf), "min_relative must be a finite number"),
        (lambda: Improves("candidate."), "improves() needs a metric name"),
        (lambda: Improves("exists"), "champion.exists is reserved"),
    ],
)
def test_constructors_reject_invalid_conditions(build: Any, fragment: str) -> None:
    with pytest.raises(ConditionError, match=None) as info:
        build()
    assert fragment in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# errors: evaluation against a report
# ----------------------------------------------------------------------------------------------------------


def test_missing_candidate_metric_names_it_and_lists_available() -> None:
    message = eval_error("acuracy >= 0.5", WITH_CHAMPION)
    assert message == (
        "condition refers to candidate.acuracy (did you mean 'accuracy'?), "
        "which the evaluation report lacks; "
        "'acuracy' is neither in the metric catalogue nor a user metric of this evaluation; "
        "available candidate metrics: accuracy, f1, flag, label, n, rmse"
    )


def test_missing_metrics_are_reported_together_for_both_sides() -> None:
    rep = report({"accuracy": 0.9, "f1": 0.9}, {"accuracy": 0.8})
    message = eval_error("accuracy > 0.5 and precision > 0.5 and improves(f1)", rep)
    assert "candidate.precision, champion.f1, which the evaluation report lacks" in message
    assert "available candidate metrics: accuracy, f1" in message
    assert "available champion metrics (version 3): accuracy" in message


def test_missing_champion_metric_mentions_why_the_champion_was_not_scored() -> None:
    rep = report({"f1": 0.9}, {})
    rep["champion"]["error"] = "ValueError: X has 3 features, but the model expects 4"
    message = eval_error("improves(f1)", rep)
    assert "condition refers to champion.f1, which the evaluation report lacks" in message
    assert "available champion metrics (version 3): (none)" in message
    assert "the champion (version 3) could not be evaluated: ValueError: X has 3 features" in message


def test_champion_metrics_are_not_required_without_champion() -> None:
    assert evaluate("improves(f1) and (champion.zzz < 1 or not champion.exists)", NO_CHAMPION)["passed"]


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("label >= 1", ["cannot evaluate candidate.label >= 1", 'candidate.label = "a" is a string', "'>='"]),
        ("1 < champion.label", ['champion.label = "b" is a string']),
        ("flag > 0", ["candidate.flag = true is a boolean"]),
        ("label == 1", ['compares candidate.label = "a" (a string) with 1 (a number)']),
        ("flag == 1", ["(a boolean) with 1 (a number)"]),
        ("label == champion.n", ["(a string) with champion.n = 3 (a number)"]),
        ("n in ['3']", ["candidate.n = 3 is a number, but the list holds string values"]),
        ("improves(label)", ['candidate.label = "a" is a string, but improves() compares numbers']),
    ],
)
def test_incompatible_types_at_evaluation(spec: str, fragments: list[str]) -> None:
    message = eval_error(spec, WITH_CHAMPION)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("side", ["candidate", "champion"])
def test_nan_metric_refuses_to_decide(side: str) -> None:
    rep = report({"f1": 0.9}, {"f1": 0.8})
    rep[side]["metrics"]["f1"] = float("nan")
    for spec in ("improves(f1)", f"{side}.f1 >= 0 or {side}.f1 < 0", f"not ({side}.f1 > 1)"):
        message = eval_error(spec, rep)
        assert f"{side}.f1" in message and "is NaN in the evaluation report" in message
        assert "neither pass nor fail" in message
    if side == "champion":
        assert "champion.f1 (version 3) is NaN" in eval_error("improves(f1)", rep)


def test_null_and_unsupported_metric_values() -> None:
    assert "candidate.f1 is null in the evaluation report" in eval_error("f1 > 0", report({"f1": None}))
    message = eval_error("f1 > 0", report({"f1": [0.9]}))
    assert "candidate.f1 in the evaluation report is [0.9], not a number, string or boolean" in message


def test_infinite_metrics_compare_and_infinite_improvement_is_refused() -> None:
    assert evaluate("rmse < 10", report({"rmse": math.inf}))["passed"] is False
    diverged = evaluate(
        "improves(rmse, lower_is_better, min_relative=0.1)", report({"rmse": 1.0}, {"rmse": math.inf})
    )
    assert diverged["passed"] is True
    assert diverged["checks"][0]["note"] == "champion.rmse is inf, so min_relative does not apply"
    assert "both infinite" in eval_error("improves(x)", report({"x": math.inf}, {"x": math.inf}))


def test_numeric_metric_types_from_numpy_like_sources_are_normalised() -> None:
    class Real(float):
        """Stands in for numpy.float64, a float subclass."""

    decision = evaluate("f1 >= 0.5", report({"f1": Real(0.75)}))
    assert decision["checks"][0]["left"] == {"ref": "candidate.f1", "value": 0.75}
    assert type(decision["checks"][0]["left"]["value"]) is float


@pytest.mark.parametrize(
    ("bad_report", "fragment"),
    [
        ([], "the evaluation report must be a mapping"),
        ({"candidate": {}}, "no candidate.metrics mapping"),
        (
            {"candidate": {"metrics": {"f1": 1}}, "champion": {"version": "1"}},
            "champion has no metrics mapping",
        ),
        ({"candidate": {"metrics": {"f1": 1}}, "champion": "v3"}, "champion has no metrics mapping"),
    ],
)
def test_malformed_report(bad_report: Any, fragment: str) -> None:
    assert fragment in eval_error("f1 > 0", bad_report)


def test_validate_refs_rejects_a_gate_before_running_it() -> None:
    with pytest.raises(ConditionError) as info:
        validate_refs("accuraccy >= 0.9 and improves(f2)", {"accuracy", "f1"})
    message = str(info.value)
    assert "refers to metric(s) accuraccy, f2 that the evaluation does not produce" in message
    assert "did you mean 'accuracy'?" in message
    assert "available metrics: accuracy, f1" in message
