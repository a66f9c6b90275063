"""Data-source specs: parsing, loading, digests and the errors each bad spec gets (no Airflow, no MLflow)."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_saga.core import sources
from airflow_saga.core.errors import DataError

PREFIXES = ("tests.support.",)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("/data/train.csv", "file"),
        ("s3://bucket/key/train.parquet", "file"),
        ("sklearn:iris", "sklearn"),
        ("my_pkg.data:load_train", "callable"),
        ({"callable": "my_pkg.data:load_train", "kwargs": {"day": "2025-01-01"}}, "callable"),
        ("sql:warehouse:SELECT 1 AS a", "sql"),
        ({"sql": "SELECT 1", "conn_id": "warehouse"}, "sql"),
        ({"path": "/data/x.csv"}, "file"),
    ],
)
def test_spec_kinds(spec, kind):
    assert sources.parse_source(spec).kind == kind


def test_frame_spec_and_digest_covers_content_not_origin():
    frame = pd.DataFrame({"a": [1.0, 2.0], "target": [0, 1]})
    data = sources.load_source(frame)
    assert data.kind == "frame" and data.rows == 2 and data.source == "<in-memory DataFrame>"
    assert data.digest == sources.content_digest(frame)
    via_callable = sources.load_source(
        {"callable": "tests.support.data_sources:small_frame", "kwargs": {"rows": 10}},
        allowed_prefixes=PREFIXES,
    )
    assert via_callable.digest == sources.content_digest(via_callable.frame)
    assert via_callable.describe()["callable"] == "tests.support.data_sources:small_frame"
    assert via_callable.source == "tests.support.data_sources:small_frame(rows=10)"
    changed = sources.load_source(
        {"callable": "tests.support.data_sources:small_frame", "kwargs": {"rows": 10, "shift": 1.0}},
        allowed_prefixes=PREFIXES,
    )
    assert changed.digest != via_callable.digest


def test_sql_goes_through_the_injected_loader_and_records_conn_and_query():
    calls = []

    def loader(conn_id, query):
        calls.append((conn_id, query))
        return pd.DataFrame({"a": [1.0, 2.0], "target": [0, 1]})

    data = sources.load_source("sql:wh:SELECT a, target\n  FROM t", sql_loader=loader)
    assert calls == [("wh", "SELECT a, target\n  FROM t")]
    assert data.source == "sql:wh:SELECT a, target FROM t"
    d = data.describe()
    assert d["kind"] == "sql" and d["conn_id"] == "wh" and d["query"] == "SELECT a, target FROM t"
    assert len(d["query_sha256"]) == 16 and d["rows"] == 2


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "data_source is empty"),
        (42, "got int: 42"),
        ("sklearn:nope", "'sklearn:nope' is not a bundled"),
        ("sql:SELECT 1", "must look like 'sql:<conn_id>:<query>'"),
        ({"sql": "SELECT 1"}, "needs a conn_id"),
        ({"sql": "  ", "conn_id": "wh"}, "connection 'wh' has an empty query"),
        ({"sql": "x", "conn_id": "wh", "password": "p"}, r"unknown key\(s\) \['password'\]"),
        ({"table": "t"}, "has none of the keys"),
        ({"callable": "not an import path"}, "is not a 'module:function'"),
    ],
)
def test_malformed_specs_name_field_and_value(spec, match):
    with pytest.raises(DataError, match=match):
        sources.load_source(spec)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("tests.support.data_sources:not_a_frame", r"returned list \(\[\{'a': 1.0"),
        ("tests.support.data_sources:nothing", "returned NoneType"),
        ("tests.support.data_sources:explodes", "raised RuntimeError: warehouse is down"),
        ("tests.support.data_sources:NOT_CALLABLE", "is a int, not a callable"),
        ("tests.support.data_sources:missing", "cannot be imported"),
        ("os:getcwd", "outside the allowed prefixes"),
    ],
)
def test_callable_that_gives_no_dataframe_is_named(spec, match):
    with pytest.raises(DataError, match=match) as exc:
        sources.load_source(spec, allowed_prefixes=PREFIXES)
    assert spec in str(exc.value)


def test_callables_need_an_explicit_allow_list():
    with pytest.raises(DataError, match=r"outside the allowed prefixes \[\]"):
        sources.load_source("tests.support.data_sources:small_frame")


def test_sql_policy_and_loader_errors():
    frame = pd.DataFrame({"a": [1.0]})
    with pytest.raises(DataError, match="need a SQL loader"):
        sources.load_source("sql:wh:SELECT 1")
    with pytest.raises(DataError, match=r"'wh' is not allowed here \(allowed: none\)"):
        sources.load_source("sql:wh:SELECT 1", sql_loader=lambda c, q: frame, allowed_conn_ids=())
    with pytest.raises(DataError, match="failed: ZeroDivisionError"):
        sources.load_source("sql:wh:SELECT 1", sql_loader=lambda c, q: 1 / 0)
    with pytest.raises(DataError, match="returned list, not a DataFrame"):
        sources.load_source("sql:wh:SELECT 1", sql_loader=lambda c, q: [])


def test_recorded_uri_has_no_credentials():
    assert sources.redact_uri("https://bob:s3cret@host/d.csv?sig=abc") == "https://***@host/d.csv?***"
    assert sources.redact_uri("/local/d.csv") == "/local/d.csv"
    spec = "https://bob:s3cret@127.0.0.1:1/nope.csv"
    with pytest.raises(DataError) as exc:
        sources.load_source(spec)
    assert "s3cret" not in str(exc.value) and "https://***@127.0.0.1:1/nope.csv" in str(exc.value)


def test_unhashable_cells_are_named():
    frame = pd.DataFrame({"ok": [1, 2], "tags": [["x"], ["y"]]})
    with pytest.raises(DataError, match=r"column\(s\) \['tags'\] hold values that are not scalars"):
        sources.load_source(frame)
