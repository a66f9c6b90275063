"""A binary task with a known P(y | x), for label-free estimation tests: labels are drawn from it in every
window, so a shift moves the inputs only (what CBPE assumes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

COLS = [f"x{i}" for i in range(5)]


def binary(n: int, seed: int, boundary: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """``boundary`` moves the traffic towards the decision boundary: the model gets less accurate."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    if boundary:
        X[:, 0] *= 0.25
        X[:, 1] *= 0.5
    p = 1 / (1 + np.exp(-(2 * X[:, 0] + X[:, 1] - 0.5 * X[:, 2])))
    return pd.DataFrame(X, columns=COLS), (rng.random(n) < p).astype(int)
