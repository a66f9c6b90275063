"""The metric catalogue: one meaning for each metric name, in every gate that reads it.

A gate condition such as ``f1 >= 0.9`` is only as good as the agreement on what ``f1`` is. The training
gate, the shadow comparison and the per-slice metrics all compute their numbers here, from plain numpy
arrays (``y_true``, ``y_pred``, optional class probabilities), so a name means the same thing everywhere.

Label metrics (accuracy, balanced accuracy, precision, recall, F1) are computed from a confusion matrix,
vectorised over leading axes (``from_confusion``), because the shadow comparison bootstraps them by drawing
confusion matrices: one definition serves the point estimate and every resample. They match scikit-learn's
functions (``zero_division=0``; checked by the unit tests). Probability and regression metrics call
scikit-learn.

What the bare names mean (kept from the first releases, so existing ``saga.metric.*`` tags keep theirs):

* ``f1``, ``precision``, ``recall`` on a **binary** task (at most two classes) are the positive class's, and
  the positive class is the *larger* label (1 of 0/1, ``True``, ``"yes"`` of ``"no"``/``"yes"``). On a
  **multiclass** task they are support-weighted averages (as MLflow's evaluate does). ``_macro`` and
  ``_weighted`` variants say the average explicitly.
* Whether a task is binary is decided by the class labels of the whole evaluation (the model's classes and
  every label in ``y_true`` and ``y_pred``), never by one slice, so a slice holding one class keeps the
  meaning of the whole. Pass ``classes`` to fix it.
* ``_macro`` averages over the classes that occur in ``y_true`` or ``y_pred`` of the rows scored.

A metric that cannot be computed on the rows at hand (ROC AUC with one class present, probabilities from a
model that offers none, R² of one row) is left out of the values and listed in ``unavailable`` with the
reason, so a gate that needs it can say why instead of comparing against nothing.

User metrics (``resolve_user_metrics``) are functions named by import path, under allowed prefixes because
the path may come from a UI trigger form. ``fn(y_true, y_pred) -> float``; a function with a parameter named
``y_proba`` needs probabilities and receives them (rows x classes, columns in the order of ``classes``,
which it receives too if it has a parameter of that name). A user metric that raises or returns anything but
a finite real number is a ``MetricError`` naming it.

This module imports only the standard library at top level (numpy, pandas and scikit-learn inside
functions), so DAG files may import it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import numbers
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from airflow_saga.core.errors import MetricError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CATALOGUE",
    "CLASSIFICATION",
    "DEFAULT_ALLOWED_METRIC_PREFIXES",
    "LABEL_METRICS",
    "REGRESSION",
    "MetricInfo",
    "MetricResult",
    "MetricUndefined",
    "UserMetric",
    "catalogue_names",
    "class_labels",
    "compute",
    "confusion",
    "from_confusion",
    "greater_is_better",
    "infer_task",
    "resolve_user_metrics",
    "score",
]

CLASSIFICATION: Final = "classification"
REGRESSION: Final = "regression"
TASKS: Final = (CLASSIFICATION, REGRESSION)
# sklearn.metrics functions such as matthews_corrcoef already have the (y_true, y_pred) shape.
DEFAULT_ALLOWED_METRIC_PREFIXES: Final = ("sklearn.metrics",)


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """What a catalogue name means: the README's metric table is this, row by row."""

    name: str
    task: str  # classification | regression | any
    needs_proba: bool
    greater_is_better: bool
    definition: str


def _info(name: str, task: str, definition: str, *, proba: bool = False, gib: bool = True) -> MetricInfo:
    return MetricInfo(name, task, proba, gib, definition)


_C, _R = CLASSIFICATION, REGRESSION
CATALOGUE: Final[Mapping[str, MetricInfo]] = {
    m.name: m
    for m in (
        _info("accuracy", _C, "share of rows whose predicted label equals the true label"),
        _info("balanced_accuracy", _C, "mean recall over the classes present in y_true"),
        _info("f1", _C, "binary: F1 of the positive (larger) label; multiclass: f1_weighted"),
        _info("f1_macro", _C, "unweighted mean of per-class F1 over classes in y_true or y_pred"),
        _info("f1_weighted", _C, "per-class F1 averaged with weights = class support in y_true"),
        _info("precision", _C, "binary: precision of the positive (larger) label; multiclass: weighted"),
        _info("precision_macro", _C, "unweighted mean of per-class precision (0 if never predicted)"),
        _info("precision_weighted", _C, "per-class precision averaged with support weights"),
        _info("recall", _C, "binary: recall of the positive (larger) label; multiclass: weighted"),
        _info("recall_macro", _C, "unweighted mean of per-class recall"),
        _info("recall_weighted", _C, "per-class recall averaged with support weights (equals accuracy)"),
        _info(
            "roc_auc",
            _C,
            "binary: ROC AUC of the positive label's probability; multiclass: one-vs-rest, macro",
            proba=True,
        ),
        _info("log_loss", _C, "cross-entropy of the predicted probabilities", proba=True, gib=False),
        _info("mae", _R, "mean absolute error", gib=False),
        _info("mse", _R, "mean squared error", gib=False),
        _info("rmse", _R, "square root of mse", gib=False),
        _info("r2", _R, "coefficient of determination, 1 - SS_res / SS_tot"),
        _info(
            "mape",
            _R,
            "mean of abs(y - pred) / max(abs(y), machine epsilon), a fraction (0.05 = 5%)",
            gib=False,
        ),
        _info("max_error", _R, "largest absolute error", gib=False),
        _info("example_count", "any", "rows scored (a count, not a quality measure)"),
    )
}
LABEL_METRICS: Final = tuple(n for n, m in CATALOGUE.items() if m.task == _C and not m.needs_proba)
_PROBA_METRICS: Final = tuple(n for n, m in CATALOGUE.items() if m.needs_proba)
_REGRESSION_METRICS: Final = tuple(n for n, m in CATALOGUE.items() if m.task == _R)


def catalogue_names(task: str | None = None) -> list[str]:
    """Catalogue names for ``task`` (all of them when None), in catalogue order."""
    return [n for n, m in CATALOGUE.items() if task is None or m.task in (task, "any")]


def greater_is_better(name: str, user: Mapping[str, UserMetric] | None = None) -> bool | None:
    """The direction of a catalogue or user metric; None for a name neither knows."""
    if user and name in user:
        return user[name].greater_is_better
    info = CATALOGUE.get(name)
    return None if info is None else info.greater_is_better


class MetricUndefined(Exception):
    """The metric has no value on these rows; ``compute`` records the reason under ``unavailable``."""


@dataclasses.dataclass
class MetricResult:
    """Metric values (finite floats) and, for each metric that could not be computed, why not."""

    values: dict[str, float]
    unavailable: dict[str, str]


# ------------------------------------------------------------------------------------------ labels


def class_labels(*arrays: Any) -> np.ndarray:
    """Sorted distinct labels of ``arrays`` (mixed types compare as strings)."""
    import numpy as np
    import pandas as pd

    parts = [np.asarray(a).ravel() for a in arrays if a is not None]
    if not parts:
        return np.asarray([], dtype=object)
    flat = np.concatenate(parts) if len(parts) > 1 else parts[0]
    try:
        _, uniques = pd.factorize(flat, sort=True, use_na_sentinel=True)
    except TypeError:  # e.g. 1 and "1" in one array: compare as text
        _, uniques = pd.factorize(flat.astype(str), sort=True, use_na_sentinel=True)
    return np.asarray(uniques)


def _encode(y: Any, labels: np.ndarray, what: str) -> np.ndarray:
    import numpy as np
    import pandas as pd

    y = np.asarray(y).ravel()
    try:
        codes = pd.Index(labels).get_indexer(y)
    except TypeError:
        codes = pd.Index(labels.astype(str)).get_indexer(y.astype(str))
    if (codes < 0).any():
        bad = y[codes < 0][:1].tolist()[0]
        raise MetricError(
            f"{what} holds {bad!r}, which is not a class label (labels: {labels[:20].tolist()})"
        )
    return codes


def confusion(y_true: Any, y_pred: Any, classes: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Confusion counts ``[truth, prediction]`` over the sorted labels, and those labels.

    The labels are ``classes`` (when given) together with every label in ``y_true`` and ``y_pred``.
    """
    import numpy as np

    labels = class_labels(classes, y_true, y_pred)
    k = len(labels)
    t = _encode(y_true, labels, "y_true")
    p = _encode(y_pred, labels, "y_pred")
    if len(t) != len(p):
        raise MetricError(f"y_true has {len(t)} rows but y_pred has {len(p)}")
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    return cm, labels


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    import numpy as np

    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def from_confusion(name: str, cm: Any) -> Any:
    """A label metric from confusion counts of shape ``(..., k, k)``; vectorised over leading axes.

    ``k <= 2`` is a binary task whose positive class is the last (largest) label.
    """
    import numpy as np

    if name not in LABEL_METRICS:
        raise MetricError(f"{name!r} is not a label metric; label metrics: {', '.join(LABEL_METRICS)}")
    cm = np.asarray(cm, dtype=float)
    k = cm.shape[-1]
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    total = support.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "accuracy":
            return tp.sum(axis=-1) / total
        if name == "balanced_accuracy":
            present = support > 0
            return (_div(tp, support) * present).sum(axis=-1) / present.sum(axis=-1)
        base, _, average = name.partition("_")
        if base == "precision":
            per = _div(tp, predicted)
        elif base == "recall":
            per = _div(tp, support)
        else:
            per = _div(2 * tp, support + predicted)
        if not average:
            average = "binary" if k <= 2 else "weighted"
        if average == "binary":
            return per[..., k - 1]
        if average == "macro":
            present = (support + predicted) > 0
            return (per * present).sum(axis=-1) / present.sum(axis=-1)
        return (per * support).sum(axis=-1) / total


# ------------------------------------------------------------------------------------------ metrics


def _positive_index(classes: np.ndarray) -> int:
    return len(classes) - 1 if len(classes) else 0


def _proba_metric(name: str, y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    import numpy as np
    from sklearn import metrics as skm

    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise MetricUndefined(
            f"the probabilities have shape {proba.shape}, not (rows, {len(classes)} classes)"
        )
    order = np.argsort(classes, kind="stable")
    classes, proba = classes[order], proba[:, order]  # sorted, so the positive class is the last
    present = class_labels(y_true)
    if name == "roc_auc":
        if len(present) < 2:
            raise MetricUndefined(f"roc_auc needs at least two classes in y_true, got {list(present)}")
        if len(classes) <= 2:
            pos = classes[_positive_index(classes)]
            return float(skm.roc_auc_score(y_true == pos, proba[:, -1]))
        try:
            return float(skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes))
        except ValueError as exc:
            raise MetricUndefined(f"roc_auc is undefined here: {exc}") from None
    try:
        return float(skm.log_loss(y_true, proba, labels=classes))
    except ValueError as exc:
        raise MetricUndefined(f"log_loss is undefined here: {exc}") from None


def _regression_metric(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn import metrics as skm

    if name == "mae":
        return float(skm.mean_absolute_error(y_true, y_pred))
    if name in ("mse", "rmse"):
        mse = float(skm.mean_squared_error(y_true, y_pred))
        return math.sqrt(mse) if name == "rmse" else mse
    if name == "r2":
        if len(y_true) < 2:
            raise MetricUndefined("r2 needs at least two rows")
        return float(skm.r2_score(y_true, y_pred))
    if name == "mape":
        return float(skm.mean_absolute_percentage_error(y_true, y_pred))
    return float(skm.max_error(y_true, y_pred))


def score(
    name: str,
    y_true: Any,
    y_pred: Any,
    *,
    proba: Any | None = None,
    classes: Any | None = None,
) -> float:
    """One catalogue metric on arrays; raises ``MetricUndefined`` when it has no value on them."""
    import numpy as np

    info = CATALOGUE.get(name)
    if info is None:
        raise MetricError(f"{name!r} is not in the metric catalogue{_suggest(name, CATALOGUE)}")
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if name == "example_count":
        return float(len(y_true))
    if len(y_true) == 0:
        raise MetricUndefined(f"{name} is undefined on zero rows")
    if name in LABEL_METRICS:
        cm, _ = confusion(y_true, y_pred, classes)
        return float(from_confusion(name, cm))
    if name in _PROBA_METRICS:
        if proba is None or classes is None:
            raise MetricUndefined(f"{name} needs class probabilities and the labels of their columns")
        return _proba_metric(name, y_true, np.asarray(proba, dtype=float), np.asarray(classes))
    return _regression_metric(name, y_true.astype(float), y_pred.astype(float))


def compute(
    task: str,
    y_true: Any,
    y_pred: Any,
    *,
    proba: Any | None = None,
    classes: Any | None = None,
    user: Mapping[str, UserMetric] | None = None,
    no_proba_reason: str = "the model offers no class probabilities",
    strict_user: bool = True,
) -> MetricResult:
    """Every catalogue metric of ``task`` plus ``user`` metrics on one set of rows.

    ``classes`` (the model's class labels, probability columns in that order) fixes the label set, so
    that binary-vs-multiclass is decided once for a whole evaluation and all of its slices.
    ``strict_user=False`` records a user metric's NaN as unavailable instead of raising (used on slices,
    where a metric may legitimately be undefined on a handful of rows); exceptions and non-numbers raise
    either way.
    """
    import numpy as np

    if task not in TASKS:
        raise MetricError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if len(y_true) != len(y_pred):
        raise MetricError(f"y_true has {len(y_true)} rows but y_pred has {len(y_pred)}")
    values: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's UndefinedMetricWarning: we report it as data
        if task == CLASSIFICATION:
            cm, _ = confusion(y_true, y_pred, classes)
            for name in LABEL_METRICS:
                values[name] = float(from_confusion(name, cm))
            for name in _PROBA_METRICS:
                if proba is None:
                    unavailable[name] = f"{name} needs class probabilities: {no_proba_reason}"
                    continue
                try:
                    values[name] = score(name, y_true, y_pred, proba=proba, classes=classes)
                except MetricUndefined as exc:
                    unavailable[name] = str(exc)
        else:
            truth, pred = _as_float(y_true, "y_true"), _as_float(y_pred, "y_pred")
            for name in _REGRESSION_METRICS:
                try:
                    values[name] = _regression_metric(name, truth, pred) if len(truth) else math.nan
                except MetricUndefined as exc:
                    unavailable[name] = str(exc)
        values["example_count"] = float(len(y_true))
        for name in list(values):
            if not math.isfinite(values[name]):
                del values[name]
                unavailable[name] = f"{name} is undefined on these {len(y_true)} rows"
        for name, metric in (user or {}).items():
            if metric.needs_proba and proba is None:
                unavailable[name] = f"user metric {name!r} needs class probabilities: {no_proba_reason}"
                continue
            try:
                values[name] = metric(y_true, y_pred, proba=proba, classes=classes)
            except MetricUndefined as exc:
                if strict_user:
                    raise MetricError(str(exc)) from None
                unavailable[name] = str(exc)
    return MetricResult(values, unavailable)


def _as_float(values: np.ndarray, what: str) -> np.ndarray:
    import numpy as np

    try:
        out = values.astype(float)
    except (TypeError, ValueError):
        raise MetricError(
            f"{what} must be numeric for a regression task, got values like {values[:3].tolist()}"
        ) from None
    if not np.isfinite(out).all():
        raise MetricError(f"{what} holds {int((~np.isfinite(out)).sum())} NaN or infinite value(s)")
    return out


def infer_task(y: Any) -> str:
    """``classification`` for text/boolean labels or a few integral values, else ``regression``."""
    import numpy as np

    y = np.asarray(y).ravel()
    if y.dtype.kind in "OUSb":
        return CLASSIFICATION
    if y.dtype.kind in "iu":
        return CLASSIFICATION if len(np.unique(y[:100_000])) <= 50 else REGRESSION
    finite = y[np.isfinite(y)]
    integral = finite.size and bool(np.all(finite == np.round(finite)))
    return CLASSIFICATION if integral and len(np.unique(finite[:100_000])) <= 50 else REGRESSION


# ------------------------------------------------------------------------------------------ user metrics

_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_PATH_RE: Final = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_]\w*)?$")
_RESERVED: Final = frozenset({"exists", "candidate", "champion", "and", "or", "not", "in", "true", "false"})


@dataclasses.dataclass(frozen=True)
class UserMetric:
    """A user's metric function, resolved from an import path, with what it declares."""

    name: str
    path: str
    fn: Callable[..., Any] = dataclasses.field(repr=False, compare=False)
    needs_proba: bool = False
    wants_classes: bool = False
    greater_is_better: bool = True

    def describe(self) -> dict[str, Any]:
        """The report's entry for this metric: what ran, and how to read it."""
        return {
            "function": self.path,
            "needs_proba": self.needs_proba,
            "greater_is_better": self.greater_is_better,
        }

    def __call__(
        self, y_true: Any, y_pred: Any, *, proba: Any | None = None, classes: Any | None = None
    ) -> float:
        kwargs: dict[str, Any] = {}
        if self.needs_proba:
            kwargs["y_proba"] = proba
        if self.wants_classes:
            kwargs["classes"] = classes
        try:
            raw = self.fn(y_true, y_pred, **kwargs)
        except Exception as exc:  # the user's code: any failure is reported with its name
            raise MetricError(
                f"user metric {self.name!r} ({self.path}) raised {type(exc).__name__}: {str(exc)[:500]}"
            ) from exc
        return _user_value(self, raw)


def _user_value(metric: UserMetric, raw: Any) -> float:
    import numpy as np

    where = f"user metric {metric.name!r} ({metric.path})"
    if isinstance(raw, np.ndarray):
        raise MetricError(f"{where} returned an array of shape {raw.shape}, not a number")
    if isinstance(raw, bool | np.bool_) or not isinstance(raw, numbers.Real):
        shown = repr(raw)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise MetricError(f"{where} returned {shown} ({type(raw).__name__}), not a number")
    try:
        value = float(raw)
    except (OverflowError, ValueError):
        raise MetricError(f"{where} returned {type(raw).__name__} that is not a float") from None
    if math.isnan(value):
        raise MetricUndefined(f"{where} returned NaN")
    if not math.isfinite(value):
        raise MetricError(f"{where} returned {value}, not a finite number")
    return value


def _prefix_allows(path: str, prefix: str) -> bool:
    """``mypkg`` allows ``mypkg.metrics:cost`` but not ``mypkg_evil.x``: prefixes end at a boundary."""
    prefix = prefix.strip()
    if not prefix or not path.startswith(prefix):
        return False
    return prefix[-1] in ".:" or len(path) == len(prefix) or path[len(prefix)] in ".:"


def resolve_callable(path: str, allowed_prefixes: Iterable[str], what: str) -> Callable[..., Any]:
    """Import ``pkg.module:function`` (or ``pkg.module.function``) if it is under an allowed prefix.

    Paths may come from a UI trigger form, i.e. from anyone allowed to trigger a DAG, so nothing outside
    ``allowed_prefixes`` is imported; the prefixes are set in the DAG file, never by a Param.
    """
    allowed = [p for p in allowed_prefixes if isinstance(p, str) and p.strip()]
    if not isinstance(path, str) or not _PATH_RE.match(path.strip()):
        raise MetricError(f"{what} {path!r} is not an import path like 'mypkg.metrics:cost'")
    path = path.strip()
    if not any(_prefix_allows(path, p) for p in allowed):
        raise MetricError(
            f"{what} {path!r} is outside the allowed prefixes {allowed}; add its package to "
            "allowed_metric_prefixes in the DAG"
        )
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise MetricError(f"{what} {path!r} cannot be imported: {exc}") from exc
    if not callable(target):
        raise MetricError(f"{what} {path!r} is a {type(target).__name__}, not a function")
    return target  # type: ignore[no-any-return]


def _suggest(name: str, available: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(available), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_user_metrics(
    spec: Mapping[str, Any] | None,
    allowed_prefixes: Iterable[str] = DEFAULT_ALLOWED_METRIC_PREFIXES,
) -> dict[str, UserMetric]:
    """``{"cost": "mypkg.metrics:cost"}`` or ``{"cost": {"function": ..., "greater_is_better": false}}``.

    Validates names and imports every function before anything is computed or written.
    """
    if spec is None or spec == {}:
        return {}
    if not isinstance(spec, Mapping):
        raise MetricError(
            f'metrics must be an object like {{"cost": "mypkg.metrics:cost"}}, got {type(spec).__name__}'
        )
    allowed = tuple(allowed_prefixes)
    out: dict[str, UserMetric] = {}
    for name, entry in spec.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise MetricError(
                f"user metric name {name!r} must be a name like 'cost' (letters, digits, _; at most 100)"
            )
        if name in CATALOGUE:
            raise MetricError(f"user metric {name!r} would shadow the catalogue metric; choose another name")
        if name.lower() in _RESERVED:
            raise MetricError(f"user metric name {name!r} is reserved by the condition language")
        options: dict[str, Any]
        if isinstance(entry, str):
            options = {"function": entry}
        elif isinstance(entry, Mapping):
            options = dict(entry)
        else:
            raise MetricError(
                f"user metric {name!r} must be an import path or an object with 'function', got {entry!r}"
            )
        unknown = sorted(set(options) - {"function", "greater_is_better"})
        if unknown or "function" not in options:
            raise MetricError(
                f"user metric {name!r} takes 'function' (required) and 'greater_is_better', got "
                f"{sorted(options)}"
            )
        gib = options.get("greater_is_better", True)
        if not isinstance(gib, bool):
            raise MetricError(f"user metric {name!r}: greater_is_better must be true or false, got {gib!r}")
        path = options["function"]
        fn = resolve_callable(path, allowed, f"user metric {name!r}: function")
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # some builtins have no signature: call with (y_true, y_pred)
            params = {}  # type: ignore[assignment]
        out[name] = UserMetric(
            name=name,
            path=str(path).strip(),
            fn=fn,
            needs_proba="y_proba" in params,
            wants_classes="classes" in params,
            greater_is_better=gib,
        )
    return out
