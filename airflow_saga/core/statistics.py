"""Label handling and the small statistics the monitors share (shadow comparison, drift, estimation).

Why one module: the shadow comparison, the drift monitor's labelled quality and the label-free estimation
all turn capture columns into comparable label arrays, join late ground truth to captured rows, and put
intervals on proportions and means. Before this module each borrowed the other's private helpers; now
they all call these public functions, and a label means the same thing in every report.

Everything is numpy/pandas/pyarrow, imported inside functions (DAG files import the modules that import
this one).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

Z95 = 1.959963984540054


# --- JSON -------------------------------------------------------------------------------------------------


def finite(obj: Any) -> Any:
    """NaN/inf -> None, recursively, so a report is strict JSON (XCom, MLflow, the REST API)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


# --- columns and labels -------------------------------------------------------------------------------------


def to_numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numpy view of an Arrow column; nulls become NaN (numeric, bool) or None (other)."""
    import numpy as np
    import pyarrow as pa

    if pa.types.is_null(col.type):
        return np.full(len(col), None, dtype=object)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
        return col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return col.cast(pa.string()).to_numpy(zero_copy_only=False)


def present(a: np.ndarray) -> np.ndarray:
    """Not NaN (numeric); object arrays come from Arrow, whose validity is checked separately."""
    import numpy as np

    if a.dtype == object:
        return np.ones(a.shape, dtype=bool)
    return ~np.isnan(a)


def has_value(a: np.ndarray) -> np.ndarray:
    """Not None/NaN, for numeric and object arrays alike."""
    import pandas as pd

    return pd.notna(a).astype(bool)


def infer_task(pred: np.ndarray) -> str:
    """``classification`` for string/bool labels or few integral values, else ``regression``."""
    import numpy as np

    if pred.dtype == object:
        return "classification"
    finite_values = pred[np.isfinite(pred)]
    if (
        finite_values.size
        and np.all(finite_values == np.round(finite_values))
        and np.unique(finite_values[:100_000]).size <= 50
    ):
        return "classification"
    return "regression"


def as_labels(values: np.ndarray) -> np.ndarray:
    """Labels comparable across models and ground truth: 1.0, 1 and "1" are the same class."""
    import pandas as pd

    if values.dtype != object:
        return values
    s = pd.Series(values, dtype=object).astype(str)
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().all():
        return num.to_numpy(dtype=float)
    return s.str.removesuffix(".0").to_numpy(dtype=object)


def same_kind(*arrays: np.ndarray) -> list[np.ndarray]:
    """All numeric stay numeric; otherwise all become strings ("1.0" -> "1") so they compare."""
    import pandas as pd

    arrays = tuple(as_labels(a) for a in arrays)
    if all(a.dtype != object for a in arrays):
        return list(arrays)
    return [pd.Series(a).astype(str).str.removesuffix(".0").to_numpy(dtype=object) for a in arrays]


def tidy_labels(values: np.ndarray) -> np.ndarray:
    """Integral float labels (1.0) as int64, so reports show and match them as 1."""
    import numpy as np

    if values.dtype.kind == "f" and values.size and np.all(values == np.round(values)):
        return values.astype("int64")
    return values


def join_labels(table: pa.Table, feedback: pa.Table) -> np.ndarray:
    """Ground truth per capture row (``inference_id``, ``row``): a row-specific label wins over a
    request-wide one (``row`` null); the latest label wins. Numeric when every label is a number."""
    import numpy as np
    import pandas as pd

    cap = pd.DataFrame(
        {
            "inference_id": table.column("inference_id").to_numpy(zero_copy_only=False),
            "row": to_numpy(table.column("row")) if "row" in table.column_names else np.nan,
        }
    )
    fb = feedback.to_pandas()
    if "row" not in fb:
        fb["row"] = np.nan
    fb = fb.drop_duplicates(["inference_id", "row"], keep="last")
    out = pd.Series([None] * len(cap), dtype=object)
    general = fb[fb["row"].isna()].drop_duplicates("inference_id", keep="last")
    if len(general):
        m = cap[["inference_id"]].merge(
            general[["inference_id", "ground_truth"]], on="inference_id", how="left"
        )
        hit = m["ground_truth"].notna().to_numpy()
        out[hit] = m["ground_truth"].to_numpy()[hit]
    specific = fb[fb["row"].notna()].astype({"row": float})
    if len(specific):
        m = cap.merge(
            specific[["inference_id", "row", "ground_truth"]], on=["inference_id", "row"], how="left"
        )
        hit = m["ground_truth"].notna().to_numpy()
        out[hit] = m["ground_truth"].to_numpy()[hit]
    num = pd.to_numeric(out, errors="coerce")
    if bool((num.notna() == out.notna()).all()):
        return num.to_numpy(dtype=float)
    return out.to_numpy(dtype=object)


# --- intervals --------------------------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion: well-behaved near 0 and 1, unlike the normal interval."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and a CLT 95% interval (NaN bounds for fewer than two values)."""
    m = float(values.mean())
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return m, m - half, m + half


def f1_with_ci(
    truth: np.ndarray, pred: np.ndarray, *, boot: int = 500, seed: int = 0, name: str = "f1"
) -> dict[str, float]:
    """A label metric of the catalogue (``core.metrics``; default F1) and a 95% bootstrap interval.

    Resampling rows with replacement only changes how many rows fall into each confusion-matrix cell, so
    the bootstrap draws cell counts from a multinomial over the k x k matrix: the same distribution as a
    row bootstrap, at O(boot * k^2) instead of O(boot * n). The catalogue's metric is vectorised over them.
    """
    import numpy as np

    from airflow_saga.core import metrics

    cm, _ = metrics.confusion(truth, pred)
    k, n = cm.shape[0], int(cm.sum())
    value = float(metrics.from_confusion(name, cm))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cm.ravel() / n, size=boot).reshape(boot, k, k)
    lo, hi = np.quantile(metrics.from_confusion(name, draws), [0.025, 0.975])
    return {name: value, f"{name}_ci_low": float(lo), f"{name}_ci_high": float(hi)}


def classification_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The catalogue's label metrics (``core.metrics``), with intervals for accuracy (Wilson) and F1."""
    from airflow_saga.core import metrics

    correct = int((truth == pred).sum())
    lo, hi = wilson(correct, len(truth))
    return {
        **metrics.compute("classification", truth, pred).values,
        "accuracy": correct / len(truth),
        "accuracy_ci_low": lo,
        "accuracy_ci_high": hi,
        **f1_with_ci(truth, pred),
    }


def regression_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The catalogue's regression metrics (``core.metrics``), with normal-approximation 95% intervals for
    MAE and RMSE (CLT over rows; RMSE via the MSE interval)."""
    import numpy as np

    from airflow_saga.core import metrics

    err = pred - truth
    mae, mae_lo, mae_hi = mean_ci(np.abs(err))
    mse, mse_lo, mse_hi = mean_ci(err * err)
    return {
        **metrics.compute("regression", truth, pred).values,
        "mae": mae,
        "mae_ci_low": mae_lo,
        "mae_ci_high": mae_hi,
        "rmse": math.sqrt(mse),
        "rmse_ci_low": math.sqrt(max(mse_lo, 0.0)) if math.isfinite(mse_lo) else math.nan,
        "rmse_ci_high": math.sqrt(mse_hi) if math.isfinite(mse_hi) else math.nan,
    }
