"""Model quality without labels: confidence-based (CBPE) and direct loss estimation (DLE).

Why: ground truth arrives days or weeks after a prediction, and data drift alone does not say whether the
model got worse (a shift into a region the model handles well is harmless; one towards its decision
boundary is not). Both methods learn, on the version's own held-out data (``data/holdout.parquet`` of its
training run, never seen in fitting), how the model's outputs relate to its errors, and apply that to the
unlabelled traffic of a window. Both assume the shift is in the inputs only (P(y | x) unchanged); a change
of the concept itself needs labels, which is why realised quality is computed too once labels exist.

Classification: CBPE
    The model's class probabilities are calibrated on the held-out rows with isotonic regression (one
    per class, one-vs-rest, renormalised; sklearn's ``IsotonicRegression``, the calibrator behind
    ``CalibratedClassifierCV(method="isotonic")``). A calibrated probability ``q_ic`` is the chance that
    row ``i`` is of class ``c``, so on the window the expected confusion counts are sums of ``q``:
    accuracy = mean of ``q`` at the predicted class; F1 from expected TP/FP/FN per class (positive class
    for binary, support-weighted for multiclass, as the training pipeline's ``f1``; ``f1_macro`` too);
    ROC AUC with each row counted as a positive of weight ``q`` and a negative of weight ``1 - q``.

Regression: DLE
    Two gradient-boosting models (sklearn's ``HistGradientBoostingRegressor``) are fitted on the held-out
    rows to predict the absolute and the squared error from the features and the prediction, and
    calibrated (isotonic) on their own out-of-fold predictions of those rows, so where they over- or
    under-shoot is corrected; their mean over the window is the expected MAE and MSE (RMSE its root).

Confidence bands (95%)
    CBPE: a bootstrap that covers both sources of error. Each of ``boot`` replicas refits the calibrators
    on a resample (with replacement) of the held-out rows, then draws every window row's label from its
    replica-calibrated probabilities and computes the metrics the window would have with those labels;
    the band is the 2.5-97.5% range. So it is the range realised quality should fall in, given the
    window's rows and the size of the held-out set.
    DLE: a bootstrap of the loss models' calibration (resampling the held-out rows' out-of-fold
    predictions, 3-fold), each replica adding the window's sampling spread (per-row variances from the two
    loss models).

Estimates are computed on a uniform sample of the window (``estimation_rows``, the drift pass's
reservoir), whole and in ``estimation_chunks`` equal time slices, so a plot shows them over time next to
the realised values where labels exist.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from airflow_saga.core.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from airflow_saga.core.mlflow_client import MlflowSettings

log = logging.getLogger(__name__)

HOLDOUT_ARTIFACT = "data/holdout.parquet"
CLASSIFICATION_METRICS = ("accuracy", "f1", "f1_macro", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse")
Z95 = 1.959963984540054
OOF_FOLDS = 3


class EstimationSkipped(DataError):
    """Quality cannot be estimated for this version (and the monitor says why instead of failing)."""


@dataclasses.dataclass
class HeldOut:
    """The version's labelled held-out rows, on which estimation is calibrated."""

    uri: str
    target: str
    X: pd.DataFrame
    y: np.ndarray


def load_holdout(settings: MlflowSettings, client: MlflowClient, model_name: str, version: str) -> HeldOut:
    """``data/holdout.parquet`` of the version's training run and the run's ``target`` param."""
    from airflow_saga.core.evaluation import load_frame
    from airflow_saga.core.registry import get_version

    mv = get_version(client, model_name, version)
    who = f"model {model_name!r} version {version}"
    if not mv.run_id:
        raise EstimationSkipped(f"{who} has no source run, so no held-out data to calibrate on")
    run = client.get_run(mv.run_id)
    target = run.data.params.get("target")
    uri = f"runs:/{mv.run_id}/{HOLDOUT_ARTIFACT}"
    if not target:
        raise EstimationSkipped(f"{who}: its run {mv.run_id} records no 'target' param")
    try:
        frame = load_frame(settings, uri)
    except Exception as exc:  # MlflowException, OSError: the run has no held-out artifact
        raise EstimationSkipped(
            f"{who}: no held-out data at {uri} to calibrate on ({type(exc).__name__})"
        ) from exc
    if target not in frame.columns or frame.empty:
        raise EstimationSkipped(f"{who}: held-out data {uri} has no rows or no column {target!r}")
    return HeldOut(uri, target, frame.drop(columns=[target]), frame[target].to_numpy())


def load_scorer(settings: MlflowSettings, model_uri: str) -> Any:
    """The estimator behind ``model_uri`` with sklearn's API (``predict``, maybe ``predict_proba``)."""
    from airflow_saga.core.compat import sklearn_estimator_of
    from airflow_saga.core.errors import MlflowUnreachableError
    from airflow_saga.core.models import load_pyfunc_model, load_sklearn_model

    try:
        return load_sklearn_model(settings, model_uri)
    except MlflowUnreachableError:
        raise  # an outage fails the monitor (and Airflow retries it), it is no property of the model
    except Exception:  # not the sklearn flavour: look inside the pyfunc
        pass
    try:
        pyfunc = load_pyfunc_model(settings, model_uri)
    except MlflowUnreachableError:
        raise
    except Exception as exc:  # no loadable model (deleted artifacts, a flavour not installed here)
        raise EstimationSkipped(
            f"{model_uri} could not be loaded to estimate its quality: {type(exc).__name__}: {exc}"[:1000]
        ) from exc
    return sklearn_estimator_of(pyfunc) or pyfunc


def _features(X: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise EstimationSkipped(f"the window lacks model input column(s) {missing[:10]}")
    return X[columns]


# --- classification -----------------------------------------------------------------------------------


def _calibrate(p_ref: np.ndarray, y_ref: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Probabilities ``p`` calibrated on (``p_ref``, ``y_ref`` class indices): isotonic per class."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression

    k = p.shape[1]

    def fit(c: int) -> np.ndarray:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        return iso.fit(p_ref[:, c], (y_ref == c).astype(float)).predict(p[:, c])

    if k == 2:
        q1 = fit(1)
        return np.column_stack([1 - q1, q1])
    q = np.column_stack([fit(c) for c in range(k)])
    s = q.sum(axis=1, keepdims=True)
    return np.where(s > 0, q / np.where(s > 0, s, 1), 1.0 / k)


class _Metrics:
    """Accuracy, F1 (binary: positive class; else weighted), macro F1 and ROC AUC of fixed predictions
    and scores under class probabilities ``q`` (one row per sample, one column per class): expected
    values for calibrated probabilities, realised ones for one-hot labels. The score orderings are
    computed once, so each bootstrap replica costs O(n)."""

    def __init__(self, yhat: np.ndarray, scores: np.ndarray) -> None:
        import numpy as np

        self.n, self.k = scores.shape
        self.rows = np.arange(self.n)
        self.yhat = yhat
        self.on_pred = np.zeros((self.n, self.k))
        self.on_pred[self.rows, yhat] = 1.0
        self.predicted = self.on_pred.sum(axis=0)
        self.auc_cols = [1] if self.k == 2 else list(range(self.k))
        self.orders = []
        for c in self.auc_cols:
            order = np.argsort(scores[:, c], kind="stable")
            s = scores[order, c]
            self.orders.append((order, np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if self.n else s))

    def _auc(self, i: int, q: np.ndarray) -> float:
        """AUC with each row a positive of weight ``q`` and a negative of weight ``1 - q`` (ties half)."""
        import numpy as np

        order, starts = self.orders[i]
        total_p = float(q.sum())
        total_n = self.n - total_p
        if self.n == 0 or total_p <= 1e-12 or total_n <= 1e-12:
            return math.nan
        p_g = np.add.reduceat(q[order], starts)
        n_g = np.add.reduceat(1.0 - q[order], starts)
        below = np.cumsum(n_g) - n_g
        return float((p_g * (below + 0.5 * n_g)).sum() / (total_p * total_n))

    def of(self, q: np.ndarray) -> dict[str, float]:
        import numpy as np

        if self.n == 0:
            return dict.fromkeys(CLASSIFICATION_METRICS, math.nan)
        tp = (q * self.on_pred).sum(axis=0)
        support = q.sum(axis=0)
        fp, fn = self.predicted - tp, support - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            f1c = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        out = {"accuracy": float(q[self.rows, self.yhat].mean()), "f1_macro": float(f1c.mean())}
        aucs = np.array([self._auc(i, q[:, c]) for i, c in enumerate(self.auc_cols)])
        if self.k == 2:
            out["f1"] = float(f1c[1])
            out["roc_auc"] = float(aucs[0])
        else:
            out["f1"] = float((f1c * support).sum() / max(float(support.sum()), 1e-12))
            out["roc_auc"] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else math.nan
        return out

    def of_labels(self, y: np.ndarray) -> dict[str, float]:
        import numpy as np

        onehot = np.zeros((len(y), self.k))
        onehot[np.arange(len(y)), y] = 1.0
        return self.of(onehot)


def _chunk_ids(
    timestamps: np.ndarray | None, n: int, start: Any, end: Any, chunks: int
) -> tuple[np.ndarray, list]:
    """Each row's time slice of [start, end) (``chunks`` equal slices) and the slices' bounds."""
    import numpy as np
    import pandas as pd

    if timestamps is None or start is None or end is None or chunks <= 1:
        return np.zeros(n, np.int64), [(start, end)]
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    ts = pd.to_datetime(pd.Series(timestamps), utc=True, errors="coerce", format="ISO8601")
    frac = ((ts - s) / (e - s)).to_numpy(dtype=float)
    ids = np.clip(np.floor(np.nan_to_num(frac, nan=0.0) * chunks), 0, chunks - 1).astype(np.int64)
    edges = [s + (e - s) * i / chunks for i in range(chunks + 1)]
    return ids, [(edges[i].isoformat(), edges[i + 1].isoformat()) for i in range(chunks)]


def _class_index(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Labels as indices into ``classes`` (-1 when unknown or missing); 1, 1.0 and "1" are one class."""
    import numpy as np

    from airflow_saga.core.statistics import as_labels

    keys = {str(c).removesuffix(".0"): i for i, c in enumerate(classes.tolist())}
    labels = as_labels(np.asarray(values, dtype=object))
    out = np.full(len(labels), -1, np.int64)
    for i, v in enumerate(labels.tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out[i] = keys.get(str(v).removesuffix(".0"), -1)
    return out


def estimate_classification(
    model: Any,
    held_out: HeldOut,
    window: pd.DataFrame,
    columns: list[str],
    *,
    labels: np.ndarray | None = None,
    chunks: int = 6,
    boot: int = 200,
    seed: int = 0,
    start: Any = None,
    end: Any = None,
) -> dict[str, Any]:
    """CBPE of ``model`` on ``window`` (feature columns, ``_ts`` timestamps), calibrated on ``held_out``;
    ``labels`` (aligned with the window, None/NaN where unknown) are used only to report realised quality."""
    import numpy as np

    name = type(model).__name__
    if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
        raise EstimationSkipped(
            f"{name} has no predict_proba: confidence-based estimation needs class probabilities "
            f"(use a probabilistic classifier, or wait for feedback labels)"
        )
    classes = np.asarray(model.classes_)
    k = len(classes)
    y_ref = _class_index(held_out.y, classes)
    keep = y_ref >= 0
    if keep.sum() < 20 or len(np.unique(y_ref[keep])) < 2:
        raise EstimationSkipped(
            f"held-out data {held_out.uri} has {int(keep.sum())} rows of known classes; calibration needs "
            f"at least 20 rows and two classes"
        )
    try:
        p_ref = np.asarray(model.predict_proba(_features(held_out.X, columns)[keep]), dtype=float)
        Xw = _features(window, columns)
        p_w = np.asarray(model.predict_proba(Xw), dtype=float)
        yhat = _class_index(np.asarray(model.predict(Xw)), classes)
    except EstimationSkipped:
        raise
    except Exception as exc:  # the model's own failure on these inputs: report, do not fail the monitor
        raise EstimationSkipped(f"{name} could not score the window: {type(exc).__name__}: {exc}") from exc
    y_ref = y_ref[keep]
    yhat = np.where(yhat >= 0, yhat, p_w.argmax(axis=1))
    n = len(yhat)
    q = _calibrate(p_ref, y_ref, p_w)
    ids, bounds = _chunk_ids(window["_ts"].to_numpy() if "_ts" in window else None, n, start, end, chunks)
    groups = [np.flatnonzero(ids == c) for c in range(len(bounds))]
    whole = _Metrics(yhat, p_w)
    parts = [_Metrics(yhat[g], p_w[g]) for g in groups]
    point = whole.of(q)
    point_chunks = [m.of(q[g]) for m, g in zip(parts, groups, strict=True)]
    rng = np.random.default_rng(seed)
    reps: list[dict[str, float]] = []
    reps_chunks: list[list[dict[str, float]]] = []
    n_ref = len(y_ref)
    for _ in range(boot):
        idx = rng.integers(0, n_ref, n_ref)
        if len(np.unique(y_ref[idx])) < 2:
            continue
        qb = _calibrate(p_ref[idx], y_ref[idx], p_w)
        u = rng.random(n)
        ystar = np.minimum((np.cumsum(qb, axis=1) < u[:, None]).sum(axis=1), k - 1)
        reps.append(whole.of_labels(ystar))
        if len(groups) > 1:
            reps_chunks.append([m.of_labels(ystar[g]) for m, g in zip(parts, groups, strict=True)])
    if len(groups) == 1:
        reps_chunks = [[r] for r in reps]
    y_w = _class_index(labels, classes) if labels is not None else np.full(n, -1)
    lab = y_w >= 0
    realised = _Metrics(yhat[lab], p_w[lab]).of_labels(y_w[lab])
    yhat_ref = _class_index(np.asarray(model.predict(_features(held_out.X, columns)[keep])), classes)
    ref_q = _Metrics(np.where(yhat_ref >= 0, yhat_ref, p_ref.argmax(axis=1)), p_ref).of_labels(y_ref)
    out_chunks = []
    for c, g in enumerate(groups):
        lab_c = g[lab[g]]
        real_c = _Metrics(yhat[lab_c], p_w[lab_c]).of_labels(y_w[lab_c]) if len(lab_c) else None
        out_chunks.append(
            {
                "start": bounds[c][0],
                "end": bounds[c][1],
                "rows": len(g),
                "labelled_rows": len(lab_c),
                "metrics": _bands(point_chunks[c], [r[c] for r in reps_chunks], real_c),
            }
        )
    return {
        "method": "CBPE",
        "task": "classification",
        "classes": [str(c) for c in classes.tolist()],
        "calibration": "isotonic per class, fitted on the held-out rows",
        "rows": n,
        "labelled_rows": int(lab.sum()),
        "reference": {"uri": held_out.uri, "rows": n_ref, "metrics": ref_q},
        "metrics": _bands(point, reps, realised if lab.any() else None),
        "chunks": out_chunks,
        "band": f"95% bootstrap over {len(reps)} replicas (held-out resampling + label draws)",
    }


def _bands(
    point: dict[str, float], reps: list[dict[str, float]], realised: dict[str, float] | None
) -> dict[str, dict[str, Any]]:
    import numpy as np

    out: dict[str, dict[str, Any]] = {}
    for name, value in point.items():
        vals = np.array([r[name] for r in reps], dtype=float)
        vals = vals[np.isfinite(vals)]
        lo, hi = np.quantile(vals, [0.025, 0.975]).tolist() if vals.size else (math.nan, math.nan)
        row: dict[str, Any] = {"estimate": value, "ci_low": float(lo), "ci_high": float(hi)}
        if realised is not None and math.isfinite(realised.get(name, math.nan)):
            r = float(realised[name])
            row["realised"] = r
            row["within_band"] = bool(lo - 1e-12 <= r <= hi + 1e-12)
        out[name] = row
    return out


# --- regression -----------------------------------------------------------------------------------------


def _iso(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(y_min=0.0, out_of_bounds="clip").fit(x, y).predict(at)


def estimate_regression(
    model: Any,
    held_out: HeldOut,
    window: pd.DataFrame,
    columns: list[str],
    *,
    labels: np.ndarray | None = None,
    chunks: int = 6,
    boot: int = 200,
    seed: int = 0,
    start: Any = None,
    end: Any = None,
) -> dict[str, Any]:
    """DLE of ``model`` on ``window``: loss models fitted on ``held_out`` predict each row's error."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold
    from threadpoolctl import threadpool_limits

    name = type(model).__name__
    Xr = _features(held_out.X, columns)
    y_ref = pd.to_numeric(pd.Series(held_out.y), errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(y_ref)
    if ok.sum() < 20:
        raise EstimationSkipped(
            f"held-out data {held_out.uri} has {int(ok.sum())} numeric targets; DLE needs 20"
        )
    try:
        Xr = Xr[ok]
        y_ref = y_ref[ok]
        pred_ref = np.asarray(model.predict(Xr), dtype=float).reshape(len(Xr), -1)[:, 0]
        Xw = _features(window, columns)
        pred_w = np.asarray(model.predict(Xw), dtype=float).reshape(len(Xw), -1)[:, 0]
    except EstimationSkipped:
        raise
    except Exception as exc:  # the model's own failure on these inputs: report, do not fail the monitor
        raise EstimationSkipped(f"{name} could not score the window: {type(exc).__name__}: {exc}") from exc
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(Xr[c])]

    def design(X: pd.DataFrame, pred: np.ndarray) -> np.ndarray:
        return np.column_stack([X[numeric].to_numpy(dtype=float), pred])

    Zr, Zw = design(Xr, pred_ref), design(Xw, pred_w)
    err = y_ref - pred_ref
    targets = {"abs": np.abs(err), "sq": err * err}

    def loss_model() -> Any:
        return HistGradientBoostingRegressor(
            max_iter=100, learning_rate=0.08, min_samples_leaf=max(5, len(Zr) // 50), random_state=seed
        )

    # one thread: OpenMP spinning across busy cores costs far more than it gains on a few thousand rows
    with threadpool_limits(limits=1, user_api="openmp"):
        fitted = {k: loss_model().fit(Zr, v) for k, v in targets.items()}
        raw_w = {k: np.clip(fitted[k].predict(Zw), 0, None) for k in targets}
        oof = {k: np.zeros(len(Zr)) for k in targets}
        for tr, te in KFold(OOF_FOLDS, shuffle=True, random_state=seed).split(Zr):
            for k, v in targets.items():
                oof[k][te] = np.clip(loss_model().fit(Zr[tr], v[tr]).predict(Zr[te]), 0, None)
    # the loss models' predictions are calibrated on their out-of-fold predictions of the held-out rows
    # (isotonic, as CBPE calibrates probabilities), which removes their bias where they over- or
    # under-shoot; the bootstrap of that calibration is the model part of the band
    m_abs = _iso(oof["abs"], targets["abs"], raw_w["abs"])
    m_sq = np.maximum(_iso(oof["sq"], targets["sq"], raw_w["sq"]), m_abs**2)
    rng = np.random.default_rng(seed)
    reps: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(boot):
        idx = rng.integers(0, len(Zr), len(Zr))
        b_abs = _iso(oof["abs"][idx], targets["abs"][idx], raw_w["abs"])
        reps.append((b_abs, np.maximum(_iso(oof["sq"][idx], targets["sq"][idx], raw_w["sq"]), b_abs**2)))
    n = len(pred_w)
    ids, bounds = _chunk_ids(window["_ts"].to_numpy() if "_ts" in window else None, n, start, end, chunks)
    y_w = (
        pd.to_numeric(pd.Series(labels), errors="coerce").to_numpy(dtype=float)
        if labels is not None
        else np.full(n, np.nan)
    )

    def summarise(g: np.ndarray) -> dict[str, dict[str, Any]]:
        if not len(g):
            return {
                m: {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan} for m in REGRESSION_METRICS
            }
        noise = np.random.default_rng(seed + len(g))
        maes, rmses = [], []
        for b_abs, b_sq in reps:
            # the window's realised losses scatter around their expectation: per-row variances from the
            # two loss models (|e|: E[e^2] - E[|e|]^2; e^2: 2 E[e^2]^2, as for normal errors)
            sd_abs = math.sqrt(float(np.clip(b_sq[g] - b_abs[g] ** 2, 0, None).sum())) / len(g)
            sd_sq = math.sqrt(float((2 * b_sq[g] ** 2).sum())) / len(g)
            maes.append(float(b_abs[g].mean()) + noise.normal() * sd_abs)
            rmses.append(math.sqrt(max(float(b_sq[g].mean()) + noise.normal() * sd_sq, 0.0)))
        out = {}
        for name, value, draws in (
            ("mae", float(m_abs[g].mean()), maes),
            ("rmse", math.sqrt(float(m_sq[g].mean())), rmses),
        ):
            lo, hi = np.quantile(draws, [0.025, 0.975]).tolist()
            out[name] = {"estimate": value, "ci_low": float(lo), "ci_high": float(hi)}
        lab = g[np.isfinite(y_w[g])]
        if len(lab):
            e = y_w[lab] - pred_w[lab]
            for m, r in (("mae", float(np.mean(np.abs(e)))), ("rmse", float(np.sqrt(np.mean(e * e))))):
                out[m]["realised"] = r
                out[m]["within_band"] = bool(out[m]["ci_low"] <= r <= out[m]["ci_high"])
        return out

    everything = np.arange(n)
    groups = [np.flatnonzero(ids == c) for c in range(len(bounds))]
    labelled = np.isfinite(y_w)
    return {
        "method": "DLE",
        "task": "regression",
        "loss_models": "HistGradientBoostingRegressor on features + prediction, |error| and error^2",
        "rows": n,
        "labelled_rows": int(labelled.sum()),
        "reference": {
            "uri": held_out.uri,
            "rows": len(Zr),
            "metrics": {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err * err)))},
        },
        "metrics": summarise(everything),
        "chunks": [
            {
                "start": bounds[c][0],
                "end": bounds[c][1],
                "rows": len(g),
                "labelled_rows": int(labelled[g].sum()),
                "metrics": summarise(g),
            }
            for c, g in enumerate(groups)
        ],
        "band": f"95% bootstrap over {len(reps)} replicas (held-out resampling of the loss calibration + "
        "the window's sampling spread)",
    }


def estimate(
    model: Any,
    held_out: HeldOut,
    window: pd.DataFrame,
    columns: list[str],
    *,
    task: str,
    labels: np.ndarray | None = None,
    chunks: int = 6,
    boot: int = 200,
    seed: int = 0,
    start: Any = None,
    end: Any = None,
) -> dict[str, Any]:
    """The estimated quality of ``model`` on the window (``status: computed``), or ``status: skipped``
    with the reason; never raises for the model or the data."""
    from airflow_saga.core.statistics import finite

    t0 = time.perf_counter()
    try:
        if task == "classification":
            out = estimate_classification(
                model,
                held_out,
                window,
                columns,
                labels=labels,
                chunks=chunks,
                boot=boot,
                seed=seed,
                start=start,
                end=end,
            )
        else:
            out = estimate_regression(
                model,
                held_out,
                window,
                columns,
                labels=labels,
                chunks=chunks,
                seed=seed,
                start=start,
                end=end,
            )
    except EstimationSkipped as exc:
        return {"status": "skipped", "note": str(exc)}
    out["status"] = "computed"
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return finite(out)


def task_of(model: Any, fallback: str) -> str:
    """``classification`` for sklearn classifiers, ``regression`` for regressors, else ``fallback``.

    Only sklearn-API models are asked: sklearn's tag lookup raises on anything else (a pyfunc model, a
    native Booster), and those say nothing about their task, so the fallback decides.
    """
    if not hasattr(model, "__sklearn_tags__"):
        return fallback
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(model):
        return "classification"
    if is_regressor(model):
        return "regression"
    return fallback


def plot_over_time(estimation: dict[str, Any], thresholds: dict[str, float] | None = None) -> bytes | None:
    """PNG: estimated quality per time slice with its band, realised quality where labels exist, the
    held-out reference level and any alert threshold. None without matplotlib or chunks."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is an evidently dependency here
        return None
    import io

    import pandas as pd

    chunks = estimation.get("chunks") or []
    names = [m for m in (estimation.get("metrics") or {}) if m != "f1_macro"]
    if not chunks or not names:
        return None
    xs = [pd.Timestamp(c["start"]) + (pd.Timestamp(c["end"]) - pd.Timestamp(c["start"])) / 2 for c in chunks]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.4 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        est = [c["metrics"][name]["estimate"] for c in chunks]
        lo = [c["metrics"][name]["ci_low"] for c in chunks]
        hi = [c["metrics"][name]["ci_high"] for c in chunks]
        real = [c["metrics"][name].get("realised") for c in chunks]
        nan = float("nan")
        ax.fill_between(
            xs,
            [nan if v is None else v for v in lo],
            [nan if v is None else v for v in hi],
            alpha=0.25,
            label="95% band",
        )
        ax.plot(xs, [nan if v is None else v for v in est], "o-", label=f"estimated ({estimation['method']})")
        if any(v is not None for v in real):
            ax.plot(xs, [nan if v is None else v for v in real], "s--", label="realised (labels)")
        ref = (estimation.get("reference") or {}).get("metrics", {}).get(name)
        if ref is not None:
            ax.axhline(ref, color="grey", lw=0.8, ls=":", label="held-out reference")
        if thresholds and name in thresholds:
            ax.axhline(thresholds[name], color="red", lw=0.8, label="alert threshold")
        ax.set_ylabel(name)
        ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("window time (UTC)")
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
