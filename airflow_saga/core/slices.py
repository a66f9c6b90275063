"""Slices: named groups of rows, so a regression in the long tail is seen instead of averaged away.

A model can gain a point of F1 overall while losing ten on one region, one device type or the oldest
customers. Slicing computes the same metrics per group of rows, for the candidate and the champion on the
same rows, and the gate can then refuse a candidate that is worse on any one group (``slice_improves`` in
``core.conditions``). The shadow comparison uses these same definitions on captured traffic, so a slice
means the same rows offline and online.

Definitions (JSON-friendly; ``parse_slices`` accepts each form, a list of them, or JSON text)::

    "region"                                         # one slice per value of a column
    {"column": "region", "max_values": 10}           # the 10 most frequent values, the rest as "(other)"
    {"column": "age", "edges": [18, 40, 65]}         # bins (-inf, 18) [18, 40) [40, 65) [65, +inf)
    {"column": "income", "quantiles": 4}             # 4 equal-frequency bins (edges at the quartiles)
    {"column": "income", "quantiles": [0.1, 0.9]}    # edges at the 10th and 90th percentiles
    {"column": "age", "edges": [18], "quantiles": 2, "name": "age_band"}   # both: the union of the edges

Bins are closed on the left and open on the right, with open-ended first and last bins, so every
non-missing value falls in exactly one. Quantile edges are computed on the rows being sliced (the held-out
data) and recorded as ``resolved_edges``; ``ResolvedSlicing.to_spec()`` gives the definition with those
edges fixed, so another dataset (e.g. a window of captured traffic) can be cut into the same bins.
Missing values (None, NaN) form their own slice, ``(missing)``. A slice is named ``<name>=<value>``, e.g.
``region=north`` or ``age=[18, 40)``; ``name`` defaults to the column.

Minimum rows. A metric on three rows is noise, and noise must not block a release: slices with fewer than
``min_rows`` rows (default ``DEFAULT_MIN_ROWS`` = 30) are reported, with their row counts and metrics, but
marked ``eligible: false``, and slice conditions ignore them. Choose ``min_rows`` for the smallest group
whose metric you would act on.

Plain Python over numpy: columns may be pandas Series, numpy arrays, or pyarrow Arrays/ChunkedArrays, and
``make_slices`` takes a DataFrame, a pyarrow Table or a mapping of column name to values. Only the standard
library is imported at module level.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from airflow_saga.core.errors import DataError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_MAX_VALUES",
    "DEFAULT_MIN_ROWS",
    "MISSING",
    "OTHER",
    "ResolvedSlicing",
    "Slice",
    "SliceSpec",
    "assign",
    "make_slices",
    "parse_slices",
    "resolve",
]

DEFAULT_MIN_ROWS: Final = 30
DEFAULT_MAX_VALUES: Final = 50
MAX_EDGES: Final = 100
MAX_DEFINITIONS: Final = 20
MISSING: Final = "(missing)"
OTHER: Final = "(other)"
_KEYS: Final = ("column", "edges", "quantiles", "name", "max_values")


def _err(message: str) -> DataError:
    return DataError(f"slices: {message}")


@dataclasses.dataclass(frozen=True)
class SliceSpec:
    """One way of cutting rows into slices: by the values of ``column``, or into bins of it."""

    column: str
    edges: tuple[float, ...] = ()
    quantiles: tuple[float, ...] = ()
    name: str | None = None
    max_values: int = DEFAULT_MAX_VALUES

    def __post_init__(self) -> None:
        if not isinstance(self.column, str) or not self.column.strip() or len(self.column) > 200:
            raise _err(f"a slice needs a column name (at most 200 characters), got {self.column!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise _err(f"slice name must be a non-empty string, got {self.name!r}")
        edges = _numbers(self.edges, "edges", self.column)
        quantiles = _quantile_points(self.quantiles, self.column)
        if isinstance(self.max_values, bool) or not isinstance(self.max_values, int):
            raise _err(f"max_values of {self.column!r} must be an integer, got {self.max_values!r}")
        if not 1 <= self.max_values <= 1000:
            raise _err(f"max_values of {self.column!r} must be between 1 and 1000, got {self.max_values}")
        object.__setattr__(self, "edges", tuple(sorted(set(edges))))
        object.__setattr__(self, "quantiles", quantiles)

    @property
    def kind(self) -> str:
        """``bins`` (edges and/or quantiles) or ``values``."""
        return "bins" if self.edges or self.quantiles else "values"

    @property
    def label(self) -> str:
        """What slice names start with, and what ``by=`` in a condition refers to."""
        return self.name or self.column

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"column": self.column, "kind": self.kind}
        if self.name:
            out["name"] = self.name
        if self.edges:
            out["edges"] = list(self.edges)
        if self.quantiles:
            out["quantiles"] = list(self.quantiles)
        if self.kind == "values":
            out["max_values"] = self.max_values
        return out

    @classmethod
    def from_data(cls, data: Any, where: str = "slices") -> SliceSpec:
        """A spec from its JSON form: a column name or an object (see the module docstring)."""
        if isinstance(data, SliceSpec):
            return data
        if isinstance(data, str):
            return cls(column=data)
        if not isinstance(data, Mapping):
            raise _err(f"{where}: expected a column name or an object like {{'column': ...}}, got {data!r}")
        unknown = sorted(str(k) for k in data if k not in (*_KEYS, "kind", "resolved_edges"))
        if unknown:
            close = difflib.get_close_matches(unknown[0], _KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _err(f"{where}: unknown key(s) {', '.join(unknown)}{hint}; expected {', '.join(_KEYS)}")
        if "column" not in data:
            raise _err(f"{where}: a slice definition needs 'column'")
        quantiles = data.get("quantiles") or ()
        if isinstance(quantiles, numbers.Integral) and not isinstance(quantiles, bool):
            if not 2 <= quantiles <= MAX_EDGES:
                raise _err(f"quantiles of {data['column']!r} must be between 2 and {MAX_EDGES} bins")
            quantiles = tuple(i / int(quantiles) for i in range(1, int(quantiles)))
        return cls(
            column=data["column"],
            edges=_sequence(data.get("edges") or (), "edges", data["column"]),
            quantiles=_sequence(quantiles, "quantiles", data["column"]),
            name=data.get("name"),
            max_values=data.get("max_values", DEFAULT_MAX_VALUES),
        )


def _sequence(raw: Any, what: str, column: Any) -> tuple[Any, ...]:
    if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
        raise _err(f"{what} of {column!r} must be a list of numbers, got {raw!r}")
    if len(raw) > MAX_EDGES:
        raise _err(f"{what} of {column!r} has {len(raw)} items; at most {MAX_EDGES}")
    return tuple(raw)


def _numbers(raw: Sequence[Any], what: str, column: str) -> tuple[float, ...]:
    out = []
    for value in _sequence(raw, what, column):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _err(f"{what} of {column!r} must be numbers, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise _err(f"{what} of {column!r} must be finite numbers, got {value!r}")
        out.append(number)
    return tuple(out)


def _quantile_points(raw: Sequence[Any], column: str) -> tuple[float, ...]:
    points = _numbers(raw, "quantiles", column)
    bad = [q for q in points if not 0 < q < 1]
    if bad:
        raise _err(f"quantiles of {column!r} must lie strictly between 0 and 1, got {bad[0]!r}")
    return tuple(sorted(set(points)))


def parse_slices(spec: Any) -> list[SliceSpec]:
    """Slice definitions from a column name, an object, a list of them, or their JSON text.

    Names (``name`` or the column) must be unique, because conditions refer to a definition by it.
    """
    if spec is None or spec == "" or spec == [] or spec == ():
        return []
    if isinstance(spec, str) and spec.lstrip()[:1] in ("[", "{"):
        try:
            spec = json.loads(spec)
        except (ValueError, RecursionError) as exc:
            raise _err(f"slice definitions look like JSON but are not valid JSON: {exc}") from None
    items = list(spec) if isinstance(spec, list | tuple) else [spec]
    if len(items) > MAX_DEFINITIONS:
        raise _err(f"{len(items)} slice definitions; at most {MAX_DEFINITIONS}")
    specs = [SliceSpec.from_data(item, f"slices[{i}]") for i, item in enumerate(items)]
    labels = [s.label for s in specs]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise _err(f"two definitions are named {duplicates[0]!r}; give one of them a distinct 'name'")
    return specs


@dataclasses.dataclass(frozen=True)
class ResolvedSlicing:
    """A definition applied to one dataset: bins have concrete edges (quantiles computed on it)."""

    spec: SliceSpec
    edges: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = self.spec.to_dict()
        if self.spec.kind == "bins":
            out["resolved_edges"] = list(self.edges)
        return out

    def to_spec(self) -> SliceSpec:
        """The same cut with the edges fixed: apply it to other data for the same bins."""
        if self.spec.kind == "values":
            return self.spec
        return SliceSpec(column=self.spec.column, edges=self.edges, name=self.spec.name)


@dataclasses.dataclass(frozen=True)
class Slice:
    """The rows of one slice: ``index`` holds their positions in the sliced data."""

    name: str
    by: str
    column: str
    value: str
    index: np.ndarray = dataclasses.field(repr=False, compare=False)

    @property
    def rows(self) -> int:
        return len(self.index)


def _values(column: Any) -> np.ndarray:
    """A numpy array from a pandas Series, numpy array, list, or pyarrow (Chunked)Array."""
    import numpy as np

    if type(column).__module__.startswith("pyarrow"):
        column = column.to_pandas()
    if hasattr(column, "to_numpy") and hasattr(column, "dtype"):
        import pandas as pd

        if isinstance(column.dtype, pd.CategoricalDtype) or pd.api.types.is_extension_array_dtype(
            column.dtype
        ):
            numeric = pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(
                column.dtype
            )
            return column.to_numpy(dtype=float, na_value=np.nan) if numeric else column.to_numpy(object)
        return column.to_numpy()
    return np.asarray(column)


def _is_numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "iuf"


def _missing(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.isna(values)


def resolve(spec: SliceSpec, column: Any) -> ResolvedSlicing:
    """Fix the bin edges of ``spec`` on ``column`` (quantiles of its non-missing values)."""
    import numpy as np

    if spec.kind == "values":
        return ResolvedSlicing(spec)
    values = _values(column)
    if not _is_numeric(values):
        raise _err(
            f"{spec.label!r} cuts column {spec.column!r} into bins, but it is not numeric "
            f"(dtype {values.dtype}); slice it by value instead"
        )
    edges = set(spec.edges)
    present = values[~np.isnan(values.astype(float))].astype(float)
    if spec.quantiles and present.size:
        edges.update(float(q) for q in np.quantile(present, spec.quantiles))
    return ResolvedSlicing(spec, tuple(sorted(edges)))


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{x:.6g}"


def _bin_labels(edges: tuple[float, ...]) -> list[str]:
    bounds = [-math.inf, *edges, math.inf]
    return [
        f"{'(' if lo == -math.inf else '['}{_fmt(lo)}, {_fmt(hi)})" for lo, hi in itertools.pairwise(bounds)
    ]


def assign(resolved: ResolvedSlicing, column: Any) -> np.ndarray:
    """The slice value of every row (an object array of strings), in row order."""
    import numpy as np
    import pandas as pd

    values = _values(column)
    missing = _missing(values)
    out = np.full(len(values), MISSING, dtype=object)
    if resolved.spec.kind == "bins":
        if not _is_numeric(values):
            raise _err(f"column {resolved.spec.column!r} is not numeric (dtype {values.dtype})")
        labels = np.asarray(_bin_labels(resolved.edges), dtype=object)
        position = np.searchsorted(np.asarray(resolved.edges, dtype=float), values[~missing], side="right")
        out[~missing] = labels[position]
        return out
    present = pd.Series(values[~missing], dtype=object).map(str)
    counts = present.value_counts(sort=False)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    keep = {label for label, _ in ranked[: resolved.spec.max_values]}
    out[~missing] = np.where(present.isin(keep).to_numpy(), present.to_numpy(dtype=object), OTHER)
    return out


def _column(columns: Any, name: str) -> Any:
    if hasattr(columns, "column_names"):  # a pyarrow Table
        names = list(columns.column_names)
    elif hasattr(columns, "columns"):  # a pandas DataFrame
        names = list(columns.columns)
    else:
        names = list(columns)
    if name not in names:
        close = difflib.get_close_matches(name, [str(n) for n in names], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _err(f"column {name!r} is not in the data{hint}; columns: {', '.join(map(str, names[:30]))}")
    return columns.column(name) if hasattr(columns, "column_names") else columns[name]


def make_slices(specs: Sequence[SliceSpec], columns: Any) -> tuple[list[ResolvedSlicing], list[Slice]]:
    """Resolve every definition on ``columns`` and cut the rows: the slices of all definitions, in order.

    Within a definition, value slices come most frequent first and bins in order; ``(other)`` and
    ``(missing)`` come last. Empty slices are left out.
    """
    import numpy as np

    resolved: list[ResolvedSlicing] = []
    out: list[Slice] = []
    for spec in specs:
        column = _column(columns, spec.column)
        cut = resolve(spec, column)
        resolved.append(cut)
        labels = assign(cut, column)
        order: list[str] = _bin_labels(cut.edges) if spec.kind == "bins" else []
        if spec.kind == "values":
            uniques, counts = np.unique(labels[(labels != MISSING) & (labels != OTHER)], return_counts=True)
            order = [str(u) for _, u in sorted(zip(-counts, uniques, strict=True))]
            order.append(OTHER)
        order.append(MISSING)
        for value in order:
            index = np.flatnonzero(labels == value)
            if len(index):
                out.append(Slice(f"{spec.label}={value}", spec.label, spec.column, value, index))
    return resolved, out
