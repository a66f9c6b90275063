"""Label-free quality estimation (CBPE, DLE) on real sklearn models and a known data-generating process.

Labels are drawn from the same P(y | x) in every window (the shift is in the inputs only, which is what
both methods assume); they are given to ``estimate`` only to compare, never to compute the estimate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_saga.core import estimation
from airflow_saga.core.estimation import HeldOut
from tests.support.estimation_data import COLS, binary

_binary = binary


@pytest.fixture(scope="module")
def classifier():
    from sklearn.linear_model import LogisticRegression

    X, y = _binary(6_000, seed=1)
    Xh, yh = _binary(2_000, seed=2)
    return LogisticRegression().fit(X, y), HeldOut("mem://holdout", "y", Xh, yh)


def _window(X: pd.DataFrame, start: str = "2026-01-01T00:00:00+00:00") -> pd.DataFrame:
    ts = pd.date_range(start, periods=len(X), freq="500ms", tz="UTC")
    return X.assign(_ts=ts.map(lambda t: t.isoformat()))


def test_cbpe_follows_an_accuracy_drop_before_any_label(classifier):
    model, held_out = classifier
    Xn, yn = _binary(6_000, seed=3)
    Xs, ys = _binary(6_000, seed=4, boundary=True)
    kw = {
        "task": "classification",
        "boot": 100,
        "chunks": 3,
        "start": "2026-01-01T00:00:00+00:00",
        "end": "2026-01-01T00:50:00+00:00",
    }
    normal = estimation.estimate(model, held_out, _window(Xn), COLS, **kw)
    shifted = estimation.estimate(model, held_out, _window(Xs), COLS, **kw)
    assert normal["status"] == shifted["status"] == "computed" and shifted["method"] == "CBPE"
    assert shifted["labelled_rows"] == 0 and "realised" not in shifted["metrics"]["accuracy"]
    drop = normal["metrics"]["accuracy"]["estimate"] - shifted["metrics"]["accuracy"]["estimate"]
    assert drop > 0.08  # the estimate sees the drop with no label at all
    # the labels, only to check: the realised values fall inside the estimate's bands
    checked = estimation.estimate(model, held_out, _window(Xs), COLS, labels=ys.astype(float), **kw)
    for name in ("accuracy", "f1", "roc_auc"):
        m = checked["metrics"][name]
        assert m["estimate"] == shifted["metrics"][name]["estimate"]  # labels never change the estimate
        assert m["ci_low"] <= m["realised"] <= m["ci_high"], (name, m)
    realised_drop = float(np.mean(model.predict(Xn) == yn) - np.mean(model.predict(Xs) == ys))
    assert abs(drop - realised_drop) < 0.04
    assert [c["rows"] for c in checked["chunks"]] == [2_000, 2_000, 2_000]
    assert all("realised" in c["metrics"]["accuracy"] for c in checked["chunks"])
    png = estimation.plot_over_time(checked, {"accuracy": 0.8})
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_cbpe_multiclass():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)

    def data(n, scale=1.0):
        X = rng.normal(size=(n, 3)) * scale
        logits = np.c_[2 * X[:, 0], -2 * X[:, 0] + X[:, 1], X[:, 2]]
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        y = (p.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
        return pd.DataFrame(X, columns=["a", "b", "c"]), np.array(["red", "green", "blue"])[y]

    X, y = data(6_000)
    model = LogisticRegression(max_iter=500).fit(X, y)
    Xh, yh = data(2_000)
    Xw, yw = data(5_000, scale=0.5)
    out = estimation.estimate(
        model,
        HeldOut("mem", "y", Xh, yh),
        Xw,
        ["a", "b", "c"],
        task="classification",
        labels=yw,
        boot=100,
        chunks=1,
    )
    assert out["status"] == "computed" and len(out["classes"]) == 3
    for name in ("accuracy", "f1", "f1_macro", "roc_auc"):
        m = out["metrics"][name]
        assert m["ci_low"] <= m["realised"] <= m["ci_high"], (name, m)


def test_dle_follows_a_loss_increase():
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(11)

    def data(n, tails=False):
        X = rng.normal(size=(n, 3))
        if tails:  # inputs where the noise is larger (still inside the held-out data's range)
            X[:, 0] = rng.choice([-1, 1], n) * rng.uniform(1.2, 2.2, n)
        y = X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=n) * (0.2 + 0.5 * np.abs(X[:, 0]))
        return pd.DataFrame(X, columns=["a", "b", "c"]), y

    X, y = data(5_000)
    model = LinearRegression().fit(X, y)
    held_out = HeldOut("mem", "y", *data(3_000))
    Xn, yn = data(5_000)
    Xs, ys = data(5_000, tails=True)
    normal = estimation.estimate(model, held_out, Xn, ["a", "b", "c"], task="regression", labels=yn, chunks=1)
    shifted = estimation.estimate(
        model, held_out, Xs, ["a", "b", "c"], task="regression", labels=ys, chunks=1
    )
    assert shifted["method"] == "DLE"
    assert shifted["metrics"]["mae"]["estimate"] > 1.4 * normal["metrics"]["mae"]["estimate"]
    for out in (normal, shifted):
        for name in ("mae", "rmse"):
            m = out["metrics"][name]
            assert m["ci_low"] <= m["realised"] <= m["ci_high"], (name, m)


def test_a_model_without_probabilities_is_a_clear_skip(classifier):
    from sklearn.svm import LinearSVC

    _, held_out = classifier
    X, y = _binary(2_000, seed=5)
    out = estimation.estimate(LinearSVC().fit(X, y), held_out, X, COLS, task="classification")
    assert out["status"] == "skipped"
    assert "LinearSVC has no predict_proba" in out["note"] and "class probabilities" in out["note"]
    # inputs the model cannot take: a skip naming the column, not a crash
    out = estimation.estimate(classifier[0], held_out, X.drop(columns=["x3"]), COLS, task="classification")
    assert out["status"] == "skipped" and "x3" in out["note"]
