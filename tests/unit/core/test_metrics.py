"""The metric catalogue against scikit-learn, its documented meanings, and user metric functions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from airflow_saga.core import metrics as M
from airflow_saga.core.errors import MetricError

ALLOW = ("tests.support.user_metrics",)


def _sk_label_metrics(y, p, binary_pos=None):
    """What each label metric must equal, spelled with scikit-learn (zero_division=0)."""
    out = {
        "accuracy": skm.accuracy_score(y, p),
        "balanced_accuracy": skm.balanced_accuracy_score(y, p),
    }
    for base, fn in (("f1", skm.f1_score), ("precision", skm.precision_score), ("recall", skm.recall_score)):
        for avg in ("macro", "weighted"):
            out[f"{base}_{avg}"] = fn(y, p, average=avg, zero_division=0)
        if binary_pos is not None:
            out[base] = fn(y, p, average="binary", pos_label=binary_pos, zero_division=0)
        else:
            out[base] = out[f"{base}_weighted"]
    return out


@pytest.mark.parametrize("seed", range(8))
def test_label_metrics_equal_scikit_learn_binary(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.7, y, 1 - y)
    got = M.compute("classification", y, p).values
    for name, want in _sk_label_metrics(y, p, binary_pos=1).items():
        assert got[name] == pytest.approx(want, abs=1e-12), name


@pytest.mark.parametrize("seed", range(8))
def test_label_metrics_equal_scikit_learn_multiclass_with_odd_classes(seed):
    rng = np.random.default_rng(seed)
    labels = np.array(["ant", "bee", "cat", "dog"])
    y = labels[rng.integers(0, 3, 300)]  # "dog" never occurs in the truth ...
    p = labels[rng.integers(0, 4, 300)]  # ... but is predicted
    p[p == "bee"] = "cat"  # and "bee" is never predicted
    got = M.compute("classification", y, p).values
    for name, want in _sk_label_metrics(y, p).items():
        assert got[name] == pytest.approx(want, abs=1e-12), name


def test_bare_names_keep_the_training_meaning():
    # binary: the positive class is the larger label, whatever the label type
    y = np.array(["no", "yes", "yes", "no", "yes", "no"])
    p = np.array(["no", "yes", "no", "no", "yes", "yes"])
    got = M.compute("classification", y, p).values
    assert got["f1"] == pytest.approx(skm.f1_score(y, p, pos_label="yes"))
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(2 / 3)
    # multiclass: weighted, as MLflow's evaluate does
    y3, p3 = np.array([0, 1, 2, 2, 2, 1]), np.array([0, 2, 2, 2, 1, 1])
    got3 = M.compute("classification", y3, p3).values
    assert got3["f1"] == got3["f1_weighted"] != got3["f1_macro"]


def test_binary_is_decided_by_all_classes_not_by_the_rows_at_hand():
    # a slice with only classes 0 and 1 of a 3-class model is still multiclass (weighted f1)
    y, p = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    as_slice = M.compute("classification", y, p, classes=[0, 1, 2]).values
    assert as_slice["f1"] == pytest.approx(skm.f1_score(y, p, average="weighted"))
    assert M.compute("classification", y, p).values["f1"] == pytest.approx(skm.f1_score(y, p))


def test_from_confusion_is_vectorised_over_resamples():
    rng = np.random.default_rng(3)
    draws = rng.integers(0, 50, size=(40, 3, 3))
    draws[5, :, 2] = 0  # a resample in which class 2 is never predicted
    for name in M.LABEL_METRICS:
        batch = M.from_confusion(name, draws)
        assert batch.shape == (40,)
        assert np.allclose(batch, [M.from_confusion(name, d) for d in draws]), name


def test_probability_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(0.6 * y + 0.4 * rng.random(300), 0, 1)
    proba = np.column_stack([1 - p1, p1])
    res = M.compute("classification", y, (p1 > 0.5).astype(int), proba=proba, classes=[0, 1])
    assert res.values["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert res.values["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    # multiclass, with the probability columns in the model's (unsorted) order
    y3 = rng.integers(0, 3, 300)
    pr3 = rng.dirichlet(np.ones(3), 300)
    res3 = M.compute("classification", y3, pr3.argmax(1), proba=pr3[:, [2, 0, 1]], classes=[2, 0, 1])
    assert res3.values["roc_auc"] == pytest.approx(skm.roc_auc_score(y3, pr3, multi_class="ovr"))
    assert res3.values["log_loss"] == pytest.approx(skm.log_loss(y3, pr3))


def test_unavailable_metrics_say_why():
    y = np.array([1, 1, 1, 1])
    res = M.compute("classification", y, y, proba=np.tile([0.2, 0.8], (4, 1)), classes=[0, 1])
    assert "roc_auc" not in res.values and "two classes" in res.unavailable["roc_auc"]
    res = M.compute("classification", y, y, no_proba_reason="model m (pyfunc flavour) has no predict_proba")
    assert res.unavailable["log_loss"] == (
        "log_loss needs class probabilities: model m (pyfunc flavour) has no predict_proba"
    )
    one = M.compute("regression", [1.0], [2.0])
    assert one.values["mae"] == 1.0 and "r2" in one.unavailable


def test_regression_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 200)
    p = y + rng.normal(0, 1, 200)
    got = M.compute("regression", y, p).values
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, p))
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y, p))
    assert got["r2"] == pytest.approx(skm.r2_score(y, p))
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, p))
    assert got["max_error"] == pytest.approx(skm.max_error(y, p))
    assert got["example_count"] == 200.0
    with pytest.raises(MetricError, match="y_pred holds 1 NaN"):
        M.compute("regression", y, np.r_[p[:-1], np.nan])


def test_catalogue_is_complete_and_directions_are_right():
    want = {
        "classification": {"accuracy", "balanced_accuracy", "roc_auc", "log_loss"}
        | {f"{b}{a}" for b in ("f1", "precision", "recall") for a in ("", "_macro", "_weighted")},
        "regression": {"rmse", "mae", "r2", "mape", "mse", "max_error"},
    }
    for task, names in want.items():
        assert names | {"example_count"} == set(M.catalogue_names(task))
    assert [n for n, m in M.CATALOGUE.items() if not m.greater_is_better] == [
        "log_loss", "mae", "mse", "rmse", "mape", "max_error",
    ]  # fmt: skip
    assert {n for n, m in M.CATALOGUE.items() if m.needs_proba} == {"roc_auc", "log_loss"}


def test_label_mismatch_is_a_clear_error():
    with pytest.raises(MetricError, match="y_pred holds nan, which is not a class label"):
        M.compute("classification", np.array([0.0, 1.0]), np.array([0.0, np.nan]))


def test_infer_task():
    assert M.infer_task(np.array([0, 1, 1])) == "classification"
    assert M.infer_task(np.array(["a", "b"], dtype=object)) == "classification"
    assert M.infer_task(np.array([1.5, 2.25])) == "regression"
    assert M.infer_task(np.arange(1000.0)) == "regression"


# ------------------------------------------------------------------------------------------ user metrics


def test_user_metrics_resolve_declare_and_compute():
    user = M.resolve_user_metrics(
        {
            "cost": {"function": "tests.support.user_metrics:cost", "greater_is_better": False},
            "mpp": "tests.support.user_metrics:mean_positive_proba",
            "mcc": "sklearn.metrics:matthews_corrcoef",
        },
        (*ALLOW, *M.DEFAULT_ALLOWED_METRIC_PREFIXES),
    )
    assert user["cost"].describe() == {
        "function": "tests.support.user_metrics:cost",
        "needs_proba": False,
        "greater_is_better": False,
    }
    assert user["mpp"].needs_proba and user["mpp"].wants_classes and not user["cost"].needs_proba
    y, p = np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    res = M.compute("classification", y, p, proba=proba, classes=[0, 1], user=user)
    assert res.values["cost"] == 6.0
    assert res.values["mpp"] == pytest.approx(0.5)
    assert res.values["mcc"] == pytest.approx(skm.matthews_corrcoef(y, p))
    no_proba = M.compute("classification", y, p, user=user, no_proba_reason="pyfunc model")
    assert no_proba.unavailable["mpp"] == "user metric 'mpp' needs class probabilities: pyfunc model"
    assert M.greater_is_better("cost", user) is False and M.greater_is_better("f1") is True


@pytest.mark.parametrize(
    ("function", "fragment"),
    [
        ("explodes", "user metric 'm' (tests.support.user_metrics:explodes) raised ZeroDivisionError: "),
        ("returns_none", "returned None (NoneType), not a number"),
        ("returns_nan", "returned NaN"),
        ("returns_text", "returned '0.9' (str), not a number"),
        ("returns_array", "returned an array of shape (3,), not a number"),
        ("returns_bool", "returned True (bool), not a number"),
        ("returns_inf", "returned inf, not a finite number"),
    ],
)
def test_misbehaving_user_metric_is_named(function, fragment):
    user = M.resolve_user_metrics({"m": f"tests.support.user_metrics:{function}"}, ALLOW)
    with pytest.raises(MetricError) as info:
        M.compute("classification", [0, 1, 1], [0, 1, 0], user=user)
    assert fragment in str(info.value) and "'m'" in str(info.value)


def test_nan_user_metric_is_unavailable_only_when_lenient():
    user = M.resolve_user_metrics({"acc": "tests.support.user_metrics:nan_on_small"}, ALLOW)
    res = M.compute("classification", [0, 1, 1], [0, 1, 0], user=user, strict_user=False)
    assert "acc" not in res.values and "returned NaN" in res.unavailable["acc"]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"m": "os:system"}, "is outside the allowed prefixes ['tests.support.user_metrics']"),
        ({"m": "tests.support.user_metricsx:cost"}, "outside the allowed prefixes"),
        ({"m": "tests.support.user_metrics:nope"}, "cannot be imported"),
        ({"m": "tests.support.user_metrics:NOT_A_FUNCTION"}, "is a int, not a function"),
        ({"m": "__import__('os')"}, "is not an import path"),
        ({"f1": "tests.support.user_metrics:cost"}, "would shadow the catalogue metric"),
        ({"exists": "tests.support.user_metrics:cost"}, "reserved by the condition language"),
        ({"val loss": "tests.support.user_metrics:cost"}, "must be a name like 'cost'"),
        ({"m": {"function": "tests.support.user_metrics:cost", "lower": True}}, "takes 'function'"),
        ({"m": {"function": "tests.support.user_metrics:cost", "greater_is_better": "no"}}, "true or false"),
        ({"m": 3}, "must be an import path or an object"),
    ],
)
def test_bad_user_metric_specs(spec, fragment):
    with pytest.raises(MetricError) as info:
        M.resolve_user_metrics(spec, ALLOW)
    assert fragment in str(info.value)


def test_catalogue_slices_conditions_and_scoring_are_light_at_import():
    """DAG files may import them: only the standard library is loaded at module level."""
    import subprocess
    import sys

    code = (
        "import sys, airflow_saga.core.metrics, airflow_saga.core.slices, airflow_saga.core.conditions, "
        "airflow_saga.core.scoring, airflow_saga.core.evaluation; "
        "print(sorted(m for m in ('numpy', 'pandas', 'sklearn', 'mlflow', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_shadow_comparison_uses_the_same_catalogue():
    """A name means the same in both gates: multiclass f1 is weighted in the shadow comparison too."""
    from airflow_saga.core import shadow

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 2000).astype(float)
    p = np.where(rng.random(2000) < 0.7, y, rng.integers(0, 3, 2000)).astype(float)
    online = shadow.classification_metrics(y, p)
    offline = M.compute("classification", y, p).values
    for name in M.LABEL_METRICS:
        assert online[name] == pytest.approx(offline[name]), name
    assert online["f1"] == pytest.approx(skm.f1_score(y, p, average="weighted"))
    assert online["f1_ci_low"] <= online["f1"] <= online["f1_ci_high"]
    reg = shadow.regression_metrics(y, p)
    assert reg["mae"] == pytest.approx(M.compute("regression", y, p).values["mae"])
    assert reg["r2"] == pytest.approx(skm.r2_score(y, p))


def test_readme_catalogue_table_is_the_catalogue():
    """The README's metric table is generated from CATALOGUE; this keeps the two from drifting apart."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    table = text.split("<!-- metric-catalogue:start", 1)[1].split("<!-- metric-catalogue:end", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    yes = {True: "yes", False: "no"}
    want = [
        f"| `{m.name}` | {m.task} | {yes[m.needs_proba]} | {yes[m.greater_is_better]} | {m.definition} |"
        for m in M.CATALOGUE.values()
    ]
    assert rows == want
