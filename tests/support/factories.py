"""Estimator factories used by tests: a ``module:callable`` spec builds a Pipeline without arguments."""

from __future__ import annotations


def scaled_logreg():
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=1000))
