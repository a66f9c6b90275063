"""The training run's dataset schema: the fast path records exactly what MLflow's own inference records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_saga.core.compat import pandas_dataset, pandas_schema


def _frames() -> dict[str, pd.DataFrame]:
    n = 50
    rng = np.random.default_rng(0)
    full = pd.DataFrame(
        {
            "f": rng.normal(size=n),
            "i": rng.integers(0, 9, n),
            "b": rng.integers(0, 2, n).astype(bool),
            "s": [f"city-{k % 3}" for k in range(n)],
            "t": pd.date_range("2026-01-01", periods=n, freq="h"),
            "f32": rng.normal(size=n).astype(np.float32),
        }
    )
    gaps = full.copy()
    gaps.loc[3, "f"] = np.nan
    gaps["s"] = gaps["s"].astype(object)
    gaps.loc[5, "s"] = None
    gaps.loc[7, "t"] = pd.NaT
    nullable = pd.DataFrame({"ni": pd.array([1, None, 3], dtype="Int64"), "ok": [1.0, 2.0, 3.0]})
    return {"full": full, "gaps": gaps, "nullable": nullable}


@pytest.mark.parametrize("which", ["full", "gaps", "nullable"])
def test_fast_schema_equals_mlflows_inference(which):
    from mlflow.types.utils import _infer_schema

    frame = _frames()[which]
    assert pandas_schema(frame).to_dict() == _infer_schema(frame).to_dict()


def test_dataset_carries_the_fast_schema_and_the_given_digest():
    frame = _frames()["gaps"]
    ds = pandas_dataset(frame, source=None, targets="i", name="training", digest="abc123")
    assert ds.digest == "abc123" and ds.schema.to_dict() == pandas_schema(frame).to_dict()
    assert [c["required"] for c in ds.schema.to_dict()] == [False, True, True, False, False, True]
