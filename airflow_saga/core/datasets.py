"""Load, validate, split and fingerprint training data.

The content digest is computed over every cell (not a sample, and not the path), so the training cache and
lineage see a changed file at the same path as different data: SageMaker's cache keys on S3 paths only.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any

from airflow_saga.core.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

SKLEARN_PREFIX = "sklearn:"
# Bundled scikit-learn datasets that need no download (fetch_* datasets do, and the network is not ours).
BUNDLED = ("breast_cancer", "iris", "wine", "diabetes", "digits")


@dataclasses.dataclass(frozen=True)
class LoadedData:
    frame: pd.DataFrame
    target: str
    source: str
    digest: str

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def features(self) -> list[str]:
        return [c for c in self.frame.columns if c != self.target]

    def describe(self) -> dict[str, Any]:
        return {"digest": self.digest, "source": self.source, "rows": self.rows, "target": self.target}


def content_digest(frame: pd.DataFrame) -> str:
    """A 16-hex digest of column names, dtypes and every value, independent of row index labels."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _load_sklearn(name: str) -> pd.DataFrame:
    import sklearn.datasets as skd

    if name not in BUNDLED:
        raise DataError(
            f"data_source 'sklearn:{name}' is not a bundled scikit-learn dataset; choose one of "
            f"{', '.join(BUNDLED)}"
        )
    bunch = getattr(skd, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


def read_source(source: str) -> pd.DataFrame:
    """Read a CSV or Parquet path/URI, or a bundled scikit-learn dataset named ``sklearn:<name>``."""
    import pandas as pd

    if not source or not str(source).strip():
        raise DataError("data_source is empty; give a CSV/Parquet path or URI, or sklearn:<name>")
    source = str(source).strip()
    if source.startswith(SKLEARN_PREFIX):
        return _load_sklearn(source[len(SKLEARN_PREFIX) :])
    lower = source.lower().split("?")[0]
    try:
        if lower.endswith((".parquet", ".pq")):
            return pd.read_parquet(source)
        if lower.endswith((".csv", ".csv.gz", ".txt")):
            return pd.read_csv(source)
    except FileNotFoundError as exc:
        raise DataError(f"data_source {source!r} does not exist") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"data_source {source!r} is empty (no columns, no rows)") from exc
    except (ValueError, OSError, ImportError) as exc:
        raise DataError(f"data_source {source!r} could not be read: {exc}") from exc
    raise DataError(f"data_source {source!r}: unsupported format; use .csv, .parquet, or sklearn:<name>")


def load_dataset(source: str, target: str) -> LoadedData:
    frame = read_source(source)
    if frame.shape[1] == 0 or len(frame) == 0:
        raise DataError(f"data_source {source!r} is empty: {len(frame)} rows, {frame.shape[1]} columns")
    if target not in frame.columns:
        cols = ", ".join(map(str, frame.columns[:30]))
        raise DataError(f"target column {target!r} is not in data_source {source!r}; columns are: {cols}")
    if frame[target].isna().all():
        raise DataError(f"target column {target!r} in {source!r} has no values (all missing)")
    if len(frame.columns) < 2:
        raise DataError(f"data_source {source!r} has no feature columns besides target {target!r}")
    return LoadedData(frame=frame, target=target, source=source, digest=content_digest(frame))


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
