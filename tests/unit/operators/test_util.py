"""Coercing operator fields: dicts, JSON, and the str() that a default (non-native) Jinja render gives."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_saga.core.errors import SagaError
from airflow_saga.operators import _util as U


def test_rendered_python_repr_of_a_training_summary_parses():
    summary = {
        "run_id": "ab12",
        "cache_hit": False,
        "cache_source_run_id": None,
        "features": ["a", "b"],
        "dataset": {"digest": "d" * 16, "rows": 10},
        "fit_seconds": 0.25,
    }
    assert U.as_dict(str(summary), "training") == summary
    assert U.as_dict(summary, "training") is summary
    assert U.as_dict('{"a": [1, null, true]}', "x") == {"a": [1, None, True]}
    assert U.as_dict(None, "report") == {} and U.as_dict("", "report") == {} and U.as_dict("None", "r") == {}
    assert U.as_list("['a', 'b']", "features") == ["a", "b"] and U.as_list(("a",), "f") == ["a"]
    assert U.as_value("{'sql': 'SELECT 1', 'conn_id': 'wh'}", "data_source") == {
        "sql": "SELECT 1",
        "conn_id": "wh",
    }
    assert U.as_value("/data/x.csv", "data_source") == "/data/x.csv"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested more than 32 levels"),
        ("{'a': " * 40 + "1" + "}" * 40, "nested more than 32 levels"),
        ("-" * 200_000 + "1", "neither JSON nor a Python literal"),
        ("x" * (U.MAX_LITERAL_CHARS + 1), "characters long"),
        ("{'a': 1", "neither JSON nor a Python literal"),
        ("{'a': __import__('os').system('true')}", "neither JSON nor a Python literal"),
        ("[1, 2]", "must be a mapping"),
        ("'just text'", "must be a mapping"),
    ],
    ids=["deep-brackets", "deep-dicts", "unary-chain", "huge", "truncated", "call", "list", "string"],
)
def test_malformed_or_hostile_literals_fail_with_the_field_named(text, match):
    with pytest.raises(U.InvalidParameterError, match=match) as exc:
        U.as_dict(text, "training")
    assert str(exc.value).startswith("training ")
    assert isinstance(exc.value, SagaError) and isinstance(exc.value, AirflowFailException)


def test_brackets_inside_strings_do_not_count_as_nesting():
    value = {"sql": "SELECT " + "(" * 100 + "1" + ")" * 100, "k": ["]", "'", '"']}
    assert U.as_dict(str(value), "data_source") == value


@pytest.mark.parametrize(
    ("fn", "value", "expected"),
    [
        (U.as_float, "0.25", 0.25),
        (U.as_int, "42", 42),
        (U.as_int, 7.0, 7),
        (U.as_bool, "False", False),
        (U.as_bool, "True", True),
    ],
)
def test_scalars(fn, value, expected):
    assert fn(value, "f") == expected


@pytest.mark.parametrize(
    ("fn", "value"), [(U.as_float, "abc"), (U.as_float, "nan"), (U.as_int, "1.5"), (U.as_bool, "maybe")]
)
def test_bad_scalars_name_the_field(fn, value):
    with pytest.raises(U.InvalidParameterError, match=r"^test_size must be"):
        fn(value, "test_size")
