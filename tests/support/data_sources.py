"""Callable data sources for tests (``tests.support.data_sources:<name>`` under prefix ``tests.support.``)."""

from __future__ import annotations

from typing import Any


def small_frame(rows: int = 40, shift: float = 0.0) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    a = rng.normal(size=rows) + shift
    return pd.DataFrame({"a": a, "b": rng.normal(size=rows), "target": (a > shift).astype(int)})


def not_a_frame() -> Any:
    return [{"a": 1.0, "target": 0}]


def nothing() -> None:
    return None


def explodes() -> Any:
    raise RuntimeError("warehouse is down")


NOT_CALLABLE = 42
