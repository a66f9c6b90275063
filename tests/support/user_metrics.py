"""User metric functions for tests: the shapes the README documents, and every way one can misbehave."""

from __future__ import annotations

import numpy as np


def cost(y_true, y_pred):
    """A false negative costs 5, a false positive 1 (labels 0/1); lower is better."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(5 * ((y_true == 1) & (y_pred == 0)).sum() + ((y_true == 0) & (y_pred == 1)).sum())


def mean_positive_proba(y_true, y_pred, y_proba, classes):
    """Needs probabilities: the mean probability given to the positive (largest) class."""
    return float(np.asarray(y_proba)[:, int(np.argmax(classes))].mean())


def brier(y_true, y_pred, y_proba):
    """Needs probabilities (binary 0/1): mean squared error of the positive class's probability."""
    return float(((np.asarray(y_proba)[:, 1] - (np.asarray(y_true) == 1)) ** 2).mean())


def explodes(y_true, y_pred):
    raise ZeroDivisionError("metric exploded on purpose")


def returns_none(y_true, y_pred):
    return None


def returns_nan(y_true, y_pred):
    return float("nan")


def returns_text(y_true, y_pred):
    return "0.9"


def returns_array(y_true, y_pred):
    return np.asarray(y_true, dtype=float)


def returns_bool(y_true, y_pred):
    return True


def returns_inf(y_true, y_pred):
    return float("inf")


def nan_on_small(y_true, y_pred):
    """NaN on fewer than 20 rows: a metric undefined on a small slice."""
    return float("nan") if len(y_true) < 20 else float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


NOT_A_FUNCTION = 3
