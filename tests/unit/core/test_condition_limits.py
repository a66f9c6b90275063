"""The condition parser's documented limits: beyond each, ConditionError naming the limit, never a foreign
exception (RecursionError, OverflowError, ValueError from int())."""

from __future__ import annotations

import json

import pytest

from airflow_saga.core import conditions as C
from airflow_saga.core.errors import ConditionError

REPORT = {"task": "classification", "candidate": {"metrics": {"a": 1.0}}, "champion": None}


def _message(spec) -> str:
    with pytest.raises(ConditionError) as info:
        C.evaluate(spec, REPORT)
    return str(info.value)


def _deep_dict(levels: int) -> dict:
    root: dict = {}
    node = root
    for _ in range(levels):
        node["not"] = {}
        node = node["not"]
    node["ge"] = ["a", 0]
    return root


def test_limits_are_what_the_docstring_says():
    assert (C.MAX_LENGTH, C.MAX_DEPTH, C.MAX_NODES, C.MAX_NUMBER_DIGITS) == (10_000, 64, 2_000, 40)
    for name in ("MAX_LENGTH", "MAX_DEPTH", "MAX_NODES", "MAX_NUMBER_DIGITS"):
        assert name in C.__doc__


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (
            "(" * 250 + "a > 0" + ")" * 250,
            "nests more than 64 levels deep, beyond the limit of 64 levels (MAX_DEPTH)",
        ),
        ("not " * 100 + "a > 0", "(MAX_DEPTH)"),
        ("[" * 100_000, "beyond the limit of 10000 characters (MAX_LENGTH)"),
        ("[" * 9_000, "(MAX_DEPTH)"),
        ('{"and": [' * 40 + '"a > 0", "a > 0"' + "]}" * 40, "(MAX_DEPTH)"),
        (_deep_dict(200), "(MAX_DEPTH)"),
        ("a > " + "9" * 400, "has more than 40 digits, beyond the limit of 40 digits (MAX_NUMBER_DIGITS)"),
        ("a > 1" + "0" * 41 + ".5", "(MAX_NUMBER_DIGITS)"),
        ("a > 1e1234567", "(MAX_NUMBER_DIGITS)"),
        ('{"ge": ["a", ' + "9" * 5000 + "]}", "(MAX_NUMBER_DIGITS)"),
        ('{"ge": ["a", 1e999]}', "is out of range (a number must fit a 64-bit float)"),
        ('{"ge": ["a", NaN]}', "NaN is not a number a condition can use"),
        ('{"ge": ["a", -Infinity]}', "-Infinity is not a number"),
        ({"ge": ["a", 10**400]}, "(MAX_NUMBER_DIGITS)"),
        ({"improves": {"metric": "a", "min_absolute": 10**400}}, "(MAX_NUMBER_DIGITS)"),
        ("a" * 10_001, "(MAX_LENGTH)"),
        ({"ge": ["a" * 20_000, 1]}, "a string in the condition is 20000 characters long"),
        ({"in": ["a", ["x"] * 3_000]}, "more than 2000 items, beyond the limit of 2000 items (MAX_NODES)"),
        ('a == "\\ud800"', "unpaired UTF-16 surrogate"),
        ({"eq": ["a", "\ud800"]}, "unpaired UTF-16 surrogate"),
    ],
)
def test_beyond_a_limit_is_a_condition_error_naming_it(spec, fragment):
    assert fragment in _message(spec)


def test_self_containing_and_deep_python_structures():
    cycle: list = []
    cycle.append(cycle)
    assert "(MAX_DEPTH)" in _message(cycle)
    deep = C.Ge("a", 0)
    for _ in range(5_000):  # built in Python, where nothing parses it: evaluate still refuses it
        deep = C.Not(deep)
    assert "(MAX_DEPTH)" in _message(deep)


def test_at_the_limits_conditions_still_work():
    nested = "(" * (C.MAX_DEPTH - 1) + "a > 0" + ")" * (C.MAX_DEPTH - 1)
    assert C.evaluate(nested, REPORT)["passed"]
    assert C.evaluate("a < " + "9" * C.MAX_NUMBER_DIGITS, REPORT)["passed"]
    long = " and ".join(["a > 0"] * 1_000)
    assert len(long) <= C.MAX_LENGTH and C.evaluate(long, REPORT)["passed"]
    assert C.evaluate(json.dumps(_deep_dict(C.MAX_DEPTH // 2 * 2 - 2)), REPORT)["passed"]


def test_errors_on_long_lines_show_a_window_around_the_caret():
    text = "a > 0 and " * 600 + "a >> 1"
    message = _message(text)
    snippet, caret = message.splitlines()[-2:]
    assert len(snippet) < 140 and snippet.startswith("    ...")
    assert snippet[len(caret) - 1] == ">"  # the caret points at the second '>'


def test_huge_metric_values_in_a_report_do_not_overflow():
    report = {"candidate": {"metrics": {"a": 10**400, "b": 10**50}}, "champion": None}
    with pytest.raises(ConditionError, match="too large to compare"):
        C.evaluate("a > 1", report)
    assert C.evaluate("b > 1", report)["passed"]
