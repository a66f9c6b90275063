"""Data sources: one entry point that turns a data-source spec into a DataFrame, a description and a digest.

Training and evaluation both need "the data the user pointed at", and lineage needs to say what that was
without leaking how it was reached. ``load_source`` is that one place. A spec is one of:

- ``"/data/train.csv"``, ``"s3://bucket/x.parquet"``: a CSV (``.csv``, ``.csv.gz``, ``.txt``) or Parquet
  (``.parquet``, ``.pq``) path or URI, read by pandas;
- ``"sklearn:iris"``: a bundled scikit-learn dataset (``BUNDLED``; no download);
- ``"my_pkg.data:load_train"``: a callable ``module:function`` returning a ``pandas.DataFrame``, only from
  modules under ``allowed_prefixes`` (spec strings may come from a UI trigger form, i.e. from anyone allowed
  to trigger a DAG); ``{"callable": "my_pkg.data:load_train", "kwargs": {...}}`` passes keyword arguments;
- ``"sql:<conn_id>:<query>"``, e.g. ``"sql:warehouse:SELECT * FROM churn WHERE day < '2025-01-01'"``, or
  ``{"sql": "...", "conn_id": "warehouse"}``: a SQL query through an Airflow connection;
- a ``pandas.DataFrame``: itself (notebooks, and training functions that load their own data).

Core does not import Airflow, so SQL goes through an injected ``sql_loader(conn_id, query) -> DataFrame``;
the operators pass ``airflow_saga.hooks.sql.read_sql`` (the connection's DB-API hook). Which connections a
spec may name is the caller's policy (``allowed_conn_ids``), because the query is arbitrary SQL.

What is recorded (``SourceData.source`` / ``describe()``) names the connection id and the query, or the
callable, or the path with any password and query string removed: never credentials. The digest covers the
**content** (column names, dtypes and every cell), not the path or the query, so the cache and lineage see
changed data behind the same spec as different data. Every failure is a ``DataError`` naming the field and
the value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_saga.core.errors import DataError
from airflow_saga.core.redaction import redact

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BUNDLED",
    "ParsedSource",
    "SourceData",
    "SqlLoader",
    "content_digest",
    "load_source",
    "parse_source",
    "read_file",
]

#: ``sql_loader(conn_id, query)`` returns the query's result as a DataFrame; raise ``DataError`` for a bad
#: connection or query (anything else it raises is wrapped into one).
SqlLoader = Callable[[str, str], "pd.DataFrame"]

SKLEARN_PREFIX = "sklearn:"
SQL_PREFIX = "sql:"
# Bundled scikit-learn datasets that need no download (fetch_* datasets do, and the network is not ours).
BUNDLED = ("breast_cancer", "iris", "wine", "diabetes", "digits")
_CALLABLE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_CONN_ID_RE = re.compile(r"^[A-Za-z0-9_][\w.\-]{0,249}$")
_RECORDED_QUERY_CHARS = 2000
_FILE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", ".txt")


@dataclasses.dataclass(frozen=True)
class ParsedSource:
    """A validated spec, before any I/O. ``kind`` is file | sklearn | callable | sql | frame."""

    kind: str
    value: Any  # path, dataset name, callable path, query, or the DataFrame itself
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    conn_id: str | None = None

    @property
    def description(self) -> str:
        """What lineage records: safe to put in tags, params and logs (no credentials)."""
        if self.kind == "sql":
            return f"{SQL_PREFIX}{self.conn_id}:{_clip(self.value)}"
        if self.kind == "callable":
            return self.value if not self.kwargs else f"{self.value}({_kwargs_text(self.kwargs)})"
        if self.kind == "sklearn":
            return f"{SKLEARN_PREFIX}{self.value}"
        if self.kind == "frame":
            return "<in-memory DataFrame>"
        return redact_uri(self.value)

    def details(self) -> dict[str, str]:
        out = {"kind": self.kind}
        if self.kind == "sql":
            out |= {"conn_id": str(self.conn_id), "query": _clip(self.value)}
            out["query_sha256"] = hashlib.sha256(self.value.encode()).hexdigest()[:16]
        elif self.kind == "callable":
            out["callable"] = self.value
        return out


@dataclasses.dataclass(frozen=True)
class SourceData:
    """What a spec resolved to: the frame, a safe description, and the content digest."""

    frame: pd.DataFrame
    parsed: ParsedSource
    digest: str

    @property
    def source(self) -> str:
        return self.parsed.description

    @property
    def kind(self) -> str:
        return self.parsed.kind

    @property
    def rows(self) -> int:
        return len(self.frame)

    def describe(self) -> dict[str, Any]:
        """``{digest, source, rows, kind, ...}``: the dataset block of a training summary or report."""
        return {"digest": self.digest, "source": self.source, "rows": self.rows, **self.parsed.details()}


# ------------------------------------------------------------------------------------------------ parsing
def parse_source(spec: Any, *, field: str = "data_source") -> ParsedSource:
    """Validate ``spec`` (see the module docstring) without reading anything."""
    import sys

    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(spec, pd.DataFrame):
        return ParsedSource("frame", spec)
    if isinstance(spec, Mapping):
        return _parse_mapping(spec, field)
    if not isinstance(spec, str):
        raise DataError(
            f"{field} must be a path/URI, 'sklearn:<name>', 'module:function', 'sql:<conn_id>:<query>', "
            f"a mapping or a DataFrame; got {type(spec).__name__}: {_short(spec)}"
        )
    text = spec.strip()
    if not text:
        raise DataError(
            f"{field} is empty; give a CSV/Parquet path or URI, sklearn:<name>, module:function or "
            "sql:<conn_id>:<query>"
        )
    if text.startswith(SKLEARN_PREFIX):
        name = text[len(SKLEARN_PREFIX) :]
        if name not in BUNDLED:
            raise DataError(
                f"{field} {text!r} is not a bundled scikit-learn dataset; choose one of {', '.join(BUNDLED)}"
            )
        return ParsedSource("sklearn", name)
    if text.startswith(SQL_PREFIX):
        conn_id, sep, query = text[len(SQL_PREFIX) :].partition(":")
        if not sep:
            raise DataError(f"{field} {_short(text)!r} must look like 'sql:<conn_id>:<query>'")
        return _parse_sql(query, conn_id.strip(), field)
    if _CALLABLE_RE.match(text) and not text.lower().endswith(_FILE_SUFFIXES):
        return ParsedSource("callable", text)
    return ParsedSource("file", text)


def _parse_mapping(spec: Mapping[str, Any], field: str) -> ParsedSource:
    keys = set(spec)
    if "sql" in keys:
        unknown = keys - {"sql", "conn_id"}
        if unknown:
            raise DataError(f"{field}: unknown key(s) {sorted(unknown)} in a SQL source; use sql and conn_id")
        return _parse_sql(spec.get("sql"), spec.get("conn_id"), field)
    if "callable" in keys:
        unknown = keys - {"callable", "kwargs"}
        if unknown:
            raise DataError(
                f"{field}: unknown key(s) {sorted(unknown)} in a callable source; use callable, kwargs"
            )
        path, kwargs = spec.get("callable"), spec.get("kwargs") or {}
        if not isinstance(path, str) or not _CALLABLE_RE.match(path.strip()):
            raise DataError(f"{field}.callable {_short(path)!r} is not a 'module:function' import path")
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise DataError(f"{field}.kwargs must be a mapping of names to values, got {_short(kwargs)}")
        return ParsedSource("callable", path.strip(), dict(kwargs))
    if "path" in keys or "uri" in keys:
        return parse_source(spec.get("path") or spec.get("uri"), field=field)
    raise DataError(
        f"{field} mapping {_short(dict(spec))} has none of the keys 'sql' (+ 'conn_id'), 'callable' "
        "(+ 'kwargs') or 'path'"
    )


def _parse_sql(query: Any, conn_id: Any, field: str) -> ParsedSource:
    if not isinstance(conn_id, str) or not _CONN_ID_RE.match(conn_id):
        raise DataError(
            f"{field}: SQL source needs a conn_id (an Airflow connection id), got {_short(conn_id)!r}"
        )
    if not isinstance(query, str) or not query.strip():
        raise DataError(f"{field}: SQL source on connection {conn_id!r} has an empty query")
    return ParsedSource("sql", query.strip(), conn_id=conn_id)


# ------------------------------------------------------------------------------------------------ loading
def load_source(
    spec: Any,
    *,
    sql_loader: SqlLoader | None = None,
    allowed_prefixes: Sequence[str] = (),
    allowed_conn_ids: Sequence[str] | None = None,
    field: str = "data_source",
) -> SourceData:
    """Resolve ``spec`` into a DataFrame, its safe description and its content digest.

    :param sql_loader: runs a query on a connection; needed for SQL specs (the operators pass one).
    :param allowed_prefixes: module prefixes a callable spec may import (e.g. ``("my_team.data.",)``); an
        empty sequence allows no callable at all, since spec strings may come from untrusted trigger forms.
    :param allowed_conn_ids: connections a SQL spec may name; ``None`` allows any (trusted callers such as
        notebooks), an empty sequence allows none.
    :param field: the parameter name used in error messages.
    """
    parsed = parse_source(spec, field=field)
    if parsed.kind == "frame":
        frame = parsed.value
    elif parsed.kind == "sklearn":
        frame = _load_sklearn(parsed.value)
    elif parsed.kind == "file":
        frame = read_file(parsed.value, field=field)
    elif parsed.kind == "callable":
        frame = _call(parsed, allowed_prefixes, field)
    else:
        frame = _query(parsed, sql_loader, allowed_conn_ids, field)
    return SourceData(frame=frame, parsed=parsed, digest=_digest(frame, parsed, field))


def _load_sklearn(name: str) -> pd.DataFrame:
    import sklearn.datasets as skd

    bunch = getattr(skd, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


def read_file(source: str, *, field: str = "data_source") -> pd.DataFrame:
    """Read a CSV or Parquet path/URI; errors name the (redacted) source."""
    import pandas as pd

    shown = redact_uri(source)
    lower = source.lower().split("?")[0]
    try:
        if lower.endswith((".parquet", ".pq")):
            return pd.read_parquet(source)
        if lower.endswith((".csv", ".csv.gz", ".txt")):
            return pd.read_csv(source)
    except FileNotFoundError as exc:
        raise DataError(f"{field} {shown!r} does not exist") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{field} {shown!r} is empty (no columns, no rows)") from exc
    except (ValueError, OSError, ImportError) as exc:
        raise DataError(f"{field} {shown!r} could not be read: {_scrub(str(exc), source)}") from exc
    raise DataError(
        f"{field} {shown!r}: unsupported format; use .csv or .parquet, sklearn:<name>, module:function "
        "or sql:<conn_id>:<query>"
    )


def _call(parsed: ParsedSource, allowed_prefixes: Sequence[str], field: str) -> pd.DataFrame:
    import pandas as pd

    path = parsed.value
    if not allowed_prefixes or not any(path.startswith(p) for p in allowed_prefixes):
        raise DataError(
            f"{field} callable {path!r} is outside the allowed prefixes {list(allowed_prefixes)}; add its "
            "package to allowed_source_prefixes in the DAG"
        )
    module_name, attr = path.split(":", 1)
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DataError(f"{field} callable {path!r} cannot be imported: {exc}") from exc
    if not callable(fn):
        raise DataError(f"{field} {path!r} is a {type(fn).__name__}, not a callable")
    try:
        out = fn(**parsed.kwargs)
    except Exception as exc:
        raise DataError(
            f"{field} callable {parsed.description!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(out, pd.DataFrame):
        raise DataError(
            f"{field} callable {parsed.description!r} returned {type(out).__name__} "
            f"({_short(out)}), not a pandas DataFrame"
        )
    return out


def _query(
    parsed: ParsedSource, sql_loader: SqlLoader | None, allowed: Sequence[str] | None, field: str
) -> pd.DataFrame:
    import pandas as pd

    conn_id = str(parsed.conn_id)
    if allowed is not None and conn_id not in allowed:
        raise DataError(
            f"{field}: SQL on connection {conn_id!r} is not allowed here "
            f"(allowed: {list(allowed) or 'none'}); add the connection id to allowed_sql_conn_ids in the DAG"
        )
    if sql_loader is None:
        raise DataError(f"{field}: SQL sources need a SQL loader; none was given for connection {conn_id!r}")
    try:
        out = sql_loader(conn_id, parsed.value)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"{field}: SQL query on connection {conn_id!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(out, pd.DataFrame):
        raise DataError(f"{field}: SQL loader for {conn_id!r} returned {type(out).__name__}, not a DataFrame")
    return out


def _digest(frame: pd.DataFrame, parsed: ParsedSource, field: str) -> str:
    try:
        return content_digest(frame)
    except TypeError as exc:  # e.g. a column of lists or dicts, which pandas cannot hash
        bad = [str(c) for c in frame.columns if frame[c].map(_unhashable).any()]
        raise DataError(
            f"{field} {parsed.description!r}: column(s) {bad or '?'} hold values that are not scalars "
            f"(lists, dicts, ...): {exc}"
        ) from exc


def _unhashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return True
    return False


def content_digest(frame: pd.DataFrame) -> str:
    """A 16-hex digest of column names, dtypes and every value, independent of row index labels."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ safety
def redact_uri(uri: str) -> str:
    """``scheme://user:secret@host/p?sig=...`` -> ``scheme://***@host/p?***``: safe to record.

    Credentials go through the package's one redaction function; a URI's query string is masked too,
    since presigned URLs carry their signature there.
    """
    out = redact(uri)
    if "://" in out and "?" in out:
        out = out.split("?", 1)[0] + "?***"
    return out


def _scrub(message: str, source: str) -> str:
    """Remove a URI's secrets from a library's error message that may quote the URI."""
    return redact(message.replace(source, redact_uri(source)))


def _clip(text: str, limit: int = _RECORDED_QUERY_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kwargs_text(kwargs: Mapping[str, Any]) -> str:
    return _clip(", ".join(f"{k}={v!r}" for k, v in sorted(kwargs.items())), 500)
