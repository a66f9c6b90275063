"""Validate and split training data loaded through ``core.sources``.

The content digest is computed over every cell (not a sample, and not the path), so the training cache and
lineage see a changed file at the same path as different data: SageMaker's cache keys on S3 paths only.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from airflow_saga.core.errors import DataError
from airflow_saga.core.sources import BUNDLED, SourceData, content_digest, load_source

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from airflow_saga.core.sources import SqlLoader

__all__ = [
    "BUNDLED",
    "LoadedData",
    "check_features",
    "content_digest",
    "load_dataset",
    "non_numeric_columns",
    "read_source",
    "split",
]


@dataclasses.dataclass(frozen=True)
class LoadedData:
    frame: pd.DataFrame
    target: str
    source: str
    digest: str
    details: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def features(self) -> list[str]:
        return [c for c in self.frame.columns if c != self.target]

    def describe(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "source": self.source,
            "rows": self.rows,
            "target": self.target,
            **self.details,
        }


def read_source(source: Any) -> pd.DataFrame:
    """The frame behind a file path/URI or ``sklearn:<name>`` (kept for callers that need no digest)."""
    return load_source(source).frame


def load_dataset(
    source: Any,
    target: str,
    *,
    sql_loader: SqlLoader | None = None,
    allowed_prefixes: Sequence[str] = (),
    allowed_conn_ids: Sequence[str] | None = None,
) -> LoadedData:
    """Load any ``core.sources`` spec and check it can train a model predicting ``target``."""
    data = load_source(
        source, sql_loader=sql_loader, allowed_prefixes=allowed_prefixes, allowed_conn_ids=allowed_conn_ids
    )
    return from_source(data, target)


def from_source(data: SourceData, target: str) -> LoadedData:
    """Check that loaded data can train a model for ``target``; its recorded source and digest carry over."""
    return validated(
        data.frame, target, source=data.source, digest=data.digest, details=data.parsed.details()
    )


def validated(
    frame: pd.DataFrame,
    target: str,
    *,
    source: str,
    digest: str | None = None,
    details: dict[str, str] | None = None,
) -> LoadedData:
    """``frame`` as ``LoadedData`` once it has rows, ``target`` with values, and at least one feature."""
    shown = source
    if frame.shape[1] == 0 or len(frame) == 0:
        raise DataError(f"data_source {shown!r} is empty: {len(frame)} rows, {frame.shape[1]} columns")
    if target not in frame.columns:
        cols = ", ".join(map(str, frame.columns[:30]))
        raise DataError(f"target column {target!r} is not in data_source {shown!r}; columns are: {cols}")
    if frame[target].isna().all():
        raise DataError(f"target column {target!r} in {shown!r} has no values (all missing)")
    if len(frame.columns) < 2:
        raise DataError(f"data_source {shown!r} has no feature columns besides target {target!r}")
    return LoadedData(
        frame=frame,
        target=target,
        source=shown,
        digest=digest or content_digest(frame),
        details=dict(details or {}),
    )


def check_features(frame: pd.DataFrame, target: str, *, allow_nan: bool) -> None:
    """Refuse values the estimator cannot take, naming columns and counts, before any fit or log."""
    import numpy as np

    features = frame.drop(columns=[target])
    numeric = features.select_dtypes(include="number")
    problems: list[str] = []
    infs = np.isinf(numeric.to_numpy(dtype="float64", na_value=np.nan)).sum(axis=0)
    for col, n in zip(numeric.columns, infs, strict=True):
        if n:
            problems.append(f"{col!r}: {int(n)} inf value(s)")
    if not allow_nan:
        for col, n in features.isna().sum().items():
            if n:
                problems.append(f"{col!r}: {int(n)} NaN value(s)")
    if problems:
        what = "NaN or inf" if not allow_nan else "inf"
        raise DataError(
            f"features contain {what} values the estimator cannot take: {'; '.join(problems[:20])}. "
            "Clean the data, or use an estimator/Pipeline with an imputer."
        )
    if frame[target].isna().any():
        raise DataError(f"target column {target!r} has {int(frame[target].isna().sum())} missing value(s)")


def non_numeric_columns(frame: pd.DataFrame) -> dict[str, str]:
    """``{column: "dtype, e.g. 'value'"}`` for every column that is neither numeric nor boolean."""
    import pandas as pd

    out = {}
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        sample = s.dropna()
        example = f", e.g. {sample.iloc[0]!r}" if len(sample) else ""
        out[str(col)] = f"{s.dtype}{example}"[:80]
    return out


def explain_fit_failure(features: pd.DataFrame, who: str, exc: BaseException) -> str:
    """A fit error message that names the non-numeric columns when there are any (their usual cause)."""
    text = f"{type(exc).__name__}: {exc}"[:1500]
    bad = non_numeric_columns(features)
    if not bad:
        return f"{who} failed to fit: {text}"
    listed = "; ".join(f"{c!r} ({d})" for c, d in list(bad.items())[:20])
    return (
        f"{who} failed to fit, and these feature columns are not numeric: {listed}. Encode them (e.g. a "
        f"Pipeline with a OneHotEncoder), drop them, or use an estimator that takes categories. {text}"
    )


def split(
    data: LoadedData, *, test_size: float, random_state: int, stratify: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/held-out split; stratified for classification when every class has >= 2 rows."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise DataError(f"test_size must be between 0 and 1 (exclusive), got {test_size!r}")
    if data.rows < 4:
        raise DataError(f"data_source {data.source!r} has {data.rows} rows; at least 4 are needed to split")
    y = data.frame[data.target]
    strat = y if stratify and y.value_counts().min() >= 2 else None
    try:
        train, test = train_test_split(
            data.frame, test_size=test_size, random_state=random_state, stratify=strat
        )
    except ValueError as exc:
        raise DataError(f"cannot split {data.source!r} with test_size={test_size}: {exc}") from exc
    return train, test
