"""Slice definitions and assignment: one API over pandas, numpy and Arrow columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from airflow_saga.core import slices as S
from airflow_saga.core.errors import DataError


def _by_name(cut):
    return {s.name: s.index.tolist() for s in cut}


def test_value_slices_most_frequent_first_missing_last():
    frame = pd.DataFrame({"region": ["n", "s", "n", None, "e", "n", "s"]})
    resolved, cut = S.make_slices(S.parse_slices("region"), frame)
    assert [s.name for s in cut] == ["region=n", "region=s", "region=e", "region=(missing)"]
    assert _by_name(cut)["region=n"] == [0, 2, 5] and cut[-1].rows == 1
    assert resolved[0].to_dict() == {"column": "region", "kind": "values", "max_values": 50}


def test_max_values_folds_the_rest_into_other():
    col = np.array(["a"] * 5 + ["b"] * 3 + ["c", "d"])
    _, cut = S.make_slices(S.parse_slices({"column": "x", "max_values": 2}), {"x": col})
    assert [(s.value, s.rows) for s in cut] == [("a", 5), ("b", 3), ("(other)", 2)]


def test_bins_from_edges_are_left_closed_with_open_ends():
    ages = pd.Series([5, 18, 39.9, 40, 64, 65, 90, np.nan])
    _, cut = S.make_slices(S.parse_slices({"column": "age", "edges": [40, 18, 65]}), {"age": ages})
    assert _by_name(cut) == {
        "age=(-inf, 18)": [0],
        "age=[18, 40)": [1, 2],
        "age=[40, 65)": [3, 4],
        "age=[65, +inf)": [5, 6],
        "age=(missing)": [7],
    }


def test_quantile_bins_are_equal_frequency_and_recorded():
    x = np.arange(100.0)
    resolved, cut = S.make_slices(S.parse_slices('[{"column": "x", "quantiles": 4}]'), {"x": x})
    assert [s.rows for s in cut] == [25, 25, 25, 25]
    edges = resolved[0].to_dict()["resolved_edges"]
    assert edges == pytest.approx([24.75, 49.5, 74.25])
    # the fixed edges cut other data (e.g. captured traffic) into the same bins
    again = S.make_slices([resolved[0].to_spec()], {"x": np.array([0.0, 30.0, 99.0])})[1]
    assert [s.value for s in again] == [cut[0].value, cut[1].value, cut[3].value]


def test_edges_and_quantiles_combine():
    spec = S.SliceSpec.from_data({"column": "x", "edges": [10], "quantiles": [0.5], "name": "band"})
    resolved, cut = S.make_slices([spec], {"x": np.arange(100)})
    assert resolved[0].edges == (10.0, 49.5)
    assert [s.name for s in cut] == ["band=(-inf, 10)", "band=[10, 49.5)", "band=[49.5, +inf)"]
    assert cut[0].by == "band" and cut[0].column == "x"


@pytest.mark.parametrize("kind", ["pandas", "numpy", "arrow", "arrow-table", "nullable"])
def test_same_slices_from_every_column_type(kind):
    values = [1.0, 2.0, None, 7.0, 7.5]
    cols = {
        "pandas": pd.DataFrame({"v": values}),
        "numpy": {"v": np.array(values, dtype=float)},
        "arrow": {"v": pa.chunked_array([pa.array(values[:2]), pa.array(values[2:])])},
        "arrow-table": pa.table({"v": values}),
        "nullable": pd.DataFrame({"v": pd.array([1, 2, None, 7, 7], dtype="Int64")}),
    }[kind]
    _, cut = S.make_slices(S.parse_slices({"column": "v", "edges": [5]}), cols)
    assert _by_name(cut) == {"v=(-inf, 5)": [0, 1], "v=[5, +inf)": [3, 4], "v=(missing)": [2]}


def test_arrow_strings_slice_by_value():
    table = pa.table({"device": ["ios", "web", None, "ios"]})
    _, cut = S.make_slices(S.parse_slices(["device"]), table)
    assert _by_name(cut) == {"device=ios": [0, 3], "device=web": [1], "device=(missing)": [2]}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"column": ""}, "needs a column name"),
        ({"colum": "x"}, "unknown key(s) colum (did you mean 'column'?)"),
        ({"edges": [1]}, "needs 'column'"),
        ({"column": "x", "edges": "1,2"}, "must be a list of numbers"),
        ({"column": "x", "edges": [1, "2"]}, "must be numbers"),
        ({"column": "x", "edges": [float("inf")]}, "finite"),
        ({"column": "x", "quantiles": 1}, "between 2 and 100 bins"),
        ({"column": "x", "quantiles": [0.5, 1.0]}, "strictly between 0 and 1"),
        ({"column": "x", "max_values": 0}, "between 1 and 1000"),
        (["x", "x"], "two definitions are named 'x'"),
        ("[not json", "not valid JSON"),
        (3, "expected a column name or an object"),
        ({"column": "x", "edges": list(range(101))}, "at most 100"),
    ],
)
def test_bad_definitions_name_the_problem(spec, fragment):
    with pytest.raises(DataError) as info:
        S.parse_slices(spec)
    assert fragment in str(info.value)


def test_data_problems_name_the_column():
    with pytest.raises(DataError, match=r"column 'regon' is not in the data \(did you mean 'region'\?\)"):
        S.make_slices(S.parse_slices("regon"), pd.DataFrame({"region": ["a"]}))
    with pytest.raises(DataError, match="cuts column 'region' into bins, but it is not numeric"):
        S.make_slices(S.parse_slices({"column": "region", "edges": [1]}), pd.DataFrame({"region": ["a"]}))


def test_round_trip_of_definitions():
    specs = S.parse_slices(
        ["r", {"column": "a", "edges": [1, 2], "name": "ab"}, {"column": "q", "quantiles": 3}]
    )
    again = S.parse_slices([s.to_dict() for s in specs])
    assert again == specs
