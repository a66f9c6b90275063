"""Any MLflow model, from any URI, scored on a DataFrame: predictions and, when it has them, probabilities.

The gate must judge models trained anywhere, not only by ``TrainModelOperator``: a ``runs:/`` URI from a
notebook, a registered ``models:/name/3`` or ``models:/name@alias``, a logged-model id ``m-...``. Each is
resolved through the task's own MLflow client (never MLflow's process-wide tracking URI) to its artifacts,
its source run and its flavours, before anything is written anywhere, so a URI that does not exist is a
clear ``ModelError`` and leaves nothing behind.

How a model is loaded decides what can be measured. A model with MLflow's **sklearn** flavour (this includes
XGBoost and LightGBM models with the scikit-learn API, which the training steps log with that flavour) is
loaded as the raw estimator, so ``predict_proba`` and ``classes_`` give probability metrics (ROC AUC, log
loss). Every other flavour (native boosters, a ``PythonModel``) is loaded through pyfunc, whose ``predict``
is read as follows for a classification task:

* a 1-D output of labels is taken as the predicted labels;
* a 2-D output with one column per class (rows summing to 1) is taken as class probabilities, the columns
  being the sorted labels of the evaluation (or the DataFrame's column names when they are those labels),
  and the predicted label is the most probable one;
* a 1-D output of probabilities in [0, 1] that are not all 0/1, on a binary task, is taken as the positive
  (larger) label's probability, thresholded at 0.5: what a native XGBoost ``binary:logistic`` booster
  returns.

How the output was read is recorded (``Scored.kind``) and shown in the evaluation report.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_saga.core.errors import ModelError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from airflow_saga.core.mlflow_client import MlflowSettings

_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND", "ENDPOINT_NOT_FOUND")
_ROW_SUM_TOL = 1e-3


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Where a model URI leads: its artifacts, the run that produced it, and its registry identity."""

    uri: str
    artifact_uri: str
    source_run_id: str | None = None
    model_id: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "model_uri": self.uri,
            "source_run_id": self.source_run_id,
            "model_id": self.model_id,
            "registered_model": None
            if self.registered_name is None
            else {"name": self.registered_name, "version": self.registered_version},
        }


def resolve_model(client: MlflowClient, uri: str) -> ModelRef:
    """Resolve ``uri`` with ``client`` (``core.registry.resolve_model_uri``, the registration step's own
    resolver) and find its files; a URI that does not exist raises naming it, and nothing is read."""
    from airflow_saga.core.models import resolve_artifact_uri
    from airflow_saga.core.registry import resolve_model_uri

    resolved = resolve_model_uri(client, uri, field="model URI")
    name, _, version = (resolved.registry_version or "").rpartition("/")
    return ModelRef(
        uri=resolved.given_uri if not resolved.given_uri.startswith("m-") else resolved.model_uri,
        artifact_uri=resolve_artifact_uri(client, resolved.model_uri),
        source_run_id=resolved.run_id,
        model_id=resolved.model_id,
        registered_name=name or None,
        registered_version=version or None,
    )


@dataclasses.dataclass
class Scored:
    """A model's answers on some rows: labels (or values), probabilities when it has them."""

    predictions: np.ndarray
    proba: np.ndarray | None
    classes: np.ndarray | None  # column order of ``proba``
    kind: str  # how the output was read (see the module docstring)


@dataclasses.dataclass
class LoadedModel:
    """A model loaded for scoring, with what it declares about itself."""

    ref: ModelRef
    flavors: list[str]
    loader: str  # sklearn | pyfunc
    model: Any
    inputs: list[str] | None  # the input columns it declares (feature_names_in_ or its signature)
    local_dir: str | None = None

    @property
    def task(self) -> str | None:
        """classification / regression when the model says so (scikit-learn estimators), else None."""
        if self.loader != "sklearn":
            return None
        from sklearn.base import is_classifier, is_regressor

        if is_classifier(self.model):
            return "classification"
        return "regression" if is_regressor(self.model) else None

    def describe(self) -> dict[str, Any]:
        return {**self.ref.describe(), "flavors": self.flavors, "loaded_as": self.loader}

    def close(self) -> None:
        if self.local_dir:
            shutil.rmtree(self.local_dir, ignore_errors=True)
            self.local_dir = None

    def columns(self, frame: pd.DataFrame, fallback: list[str] | None) -> list[str]:
        """The input columns to give the model: what it declares, else ``fallback``, else all of them."""
        wanted = self.inputs or fallback
        if not wanted:
            return list(frame.columns)
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ModelError(
                f"model {self.ref.uri!r} needs input column(s) {missing[:20]} that the data lacks "
                f"(its columns: {list(frame.columns)[:30]})"
            )
        return list(wanted)

    def score(self, X: pd.DataFrame, task: str, labels: np.ndarray | None = None) -> Scored:
        """Predict on ``X``; ``labels`` (the evaluation's sorted class labels) interpret pyfunc outputs."""
        import numpy as np

        try:
            raw = self.model.predict(X)
        except Exception as exc:  # the model's own failure: name the model and what it said
            raise ModelError(
                f"model {self.ref.uri!r} failed to predict on {len(X)} rows with columns "
                f"{list(X.columns)[:20]}: {type(exc).__name__}: {str(exc)[:500]}"
            ) from exc
        if self.loader == "sklearn":
            predictions = np.asarray(raw)
            proba, classes = None, None
            if task == "classification" and hasattr(self.model, "predict_proba"):
                try:
                    proba = np.asarray(self.model.predict_proba(X), dtype=float)
                    classes = np.asarray(self.model.classes_)
                except (AttributeError, NotImplementedError, ValueError, TypeError):
                    proba, classes = None, None  # e.g. SVC(probability=False)
            if predictions.ndim > 1 and predictions.shape[1] == 1:
                predictions = predictions[:, 0]
            return Scored(predictions, proba, classes, "labels" if task == "classification" else "values")
        return _interpret(raw, task, labels, self.ref.uri)

    @property
    def no_proba_reason(self) -> str:
        if self.loader == "sklearn":
            return f"model {self.ref.uri!r} has no usable predict_proba"
        return (
            f"model {self.ref.uri!r} ({', '.join(self.flavors) or 'unknown'} flavour, loaded through pyfunc) "
            "returns no class probabilities"
        )


def _interpret(raw: Any, task: str, labels: np.ndarray | None, uri: str) -> Scored:
    import numpy as np
    import pandas as pd

    columns = list(raw.columns) if isinstance(raw, pd.DataFrame) else None
    out = np.asarray(raw.to_numpy() if isinstance(raw, pd.DataFrame | pd.Series) else raw)
    if out.ndim == 2 and out.shape[1] == 1:
        out, columns = out[:, 0], None
    if out.ndim > 2 or out.ndim == 0:
        raise ModelError(f"model {uri!r} returned predictions of shape {out.shape}; expected one per row")
    if task == "regression":
        if out.ndim != 1:
            raise ModelError(
                f"model {uri!r} returned {out.shape[1]} columns per row for a regression task; expected one"
            )
        return Scored(out, None, None, "values")
    known = labels if labels is not None else np.asarray([])
    if out.ndim == 2:
        k = out.shape[1]
        probabilities = out.dtype.kind == "f" and bool(
            np.all((out >= 0) & (out <= 1)) and np.allclose(out.sum(axis=1), 1.0, atol=_ROW_SUM_TOL)
        )
        if not probabilities:
            raise ModelError(
                f"model {uri!r} returned {k} columns per row that are not class probabilities; a "
                "classifier should return one label per row, or one probability column per class"
            )
        classes = _column_classes(columns, known, k, uri)
        return Scored(classes[out.argmax(axis=1)], out.astype(float), classes, "probabilities (argmax)")
    if (
        len(known) == 2
        and out.dtype.kind == "f"
        and out.size
        and bool(np.all((out >= 0) & (out <= 1)))
        and not bool(np.all(np.isin(out, [0.0, 1.0])))
    ):
        proba = np.column_stack([1 - out, out]).astype(float)
        return Scored(known[(out >= 0.5).astype(int)], proba, known, "positive-class probability (>= 0.5)")
    return Scored(out, None, None, "labels")


def _column_classes(columns: list[Any] | None, known: np.ndarray, k: int, uri: str) -> np.ndarray:
    import numpy as np

    if columns is not None and {str(c) for c in columns} <= {str(x) for x in known} and len(columns) == k:
        by_text = {str(x): x for x in known}
        return np.asarray([by_text[str(c)] for c in columns])
    if len(known) == k:
        return np.asarray(known)
    raise ModelError(
        f"model {uri!r} returned {k} probability columns, but the data has {len(known)} classes "
        f"{known.tolist()[:20]}; cannot tell which column is which class"
    )


def load_model(settings: MlflowSettings, client: MlflowClient, uri: str) -> LoadedModel:
    """Resolve and load ``uri``: the raw estimator for the sklearn flavour, pyfunc for any other."""
    from mlflow.exceptions import MlflowException

    from airflow_saga.core.mlflow_client import download_artifacts

    ref = resolve_model(client, uri)
    local_dir = tempfile.mkdtemp(prefix="saga-eval-model-")
    try:
        try:
            local = download_artifacts(settings, ref.artifact_uri, local_dir)
        except MlflowException as exc:
            if getattr(exc, "error_code", None) in _NOT_FOUND:
                raise ModelError(
                    f"model URI {ref.uri!r} has no files at {ref.artifact_uri!r}: {exc}"
                ) from None
            raise
        except OSError as exc:
            raise ModelError(f"model URI {ref.uri!r} cannot be read: {exc}") from None
        if not (Path(local) / "MLmodel").is_file():
            raise ModelError(f"model URI {ref.uri!r} is not an MLflow model: it has no MLmodel file")
        return _load_local(ref, local, local_dir)
    except BaseException:
        shutil.rmtree(local_dir, ignore_errors=True)
        raise


def _load_local(ref: ModelRef, local: str, local_dir: str) -> LoadedModel:
    from mlflow.models import Model

    try:
        meta = Model.load(local)
    except Exception as exc:  # a corrupt MLmodel file: say so, naming the model
        raise ModelError(f"model URI {ref.uri!r} has an unreadable MLmodel file: {exc}") from exc
    flavors = sorted(meta.flavors)
    declared = _declared_inputs(meta)
    try:
        if "sklearn" in meta.flavors:
            import mlflow.sklearn

            model = mlflow.sklearn.load_model(local)
            names = getattr(model, "feature_names_in_", None)
            inputs = [str(n) for n in names] if names is not None else declared
            return LoadedModel(ref, flavors, "sklearn", model, inputs, local_dir)
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(local)
    except ModelError:
        raise
    except Exception as exc:  # the model's own loading code (a PythonModel's load_context, unpickling)
        raise ModelError(
            f"model URI {ref.uri!r} ({', '.join(flavors)}) could not be loaded: {type(exc).__name__}: "
            f"{str(exc)[:500]}"
        ) from exc
    return LoadedModel(ref, flavors, "pyfunc", model, declared, local_dir)


def _declared_inputs(meta: Any) -> list[str] | None:
    try:
        schema = meta.get_input_schema()
    except Exception:  # no or unreadable signature: the caller falls back to the data's columns
        return None
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    return [str(n) for n in schema.input_names()]
