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
import re
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

_LOGGED_ID_RE = re.compile(r"^m-[0-9a-f]{8,64}$")
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


def normalise_uri(uri: Any) -> str:
    """``m-...`` (a logged-model id) becomes ``models:/m-...``; other URIs are kept."""
    if not isinstance(uri, str) or not uri.strip():
        raise ModelError(f"a model URI must be a non-empty string like 'models:/name/1', got {uri!r}")
    uri = uri.strip()
    return f"models:/{uri}" if _LOGGED_ID_RE.match(uri) else uri


def _missing(uri: str, exc: Exception) -> ModelError:
    message = str(getattr(exc, "message", exc)).splitlines()[0][:300]
    return ModelError(f"model URI {uri!r} does not exist: {message}")


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) in _NOT_FOUND


def resolve_model(client: MlflowClient, uri: str, settings: MlflowSettings | None = None) -> ModelRef:
    """Resolve ``uri`` with ``client``; ``ModelError`` when it does not exist (no model files are read).

    ``settings`` (the client's server) are needed to list a run's artifacts without MLflow's process-wide
    default store; by default they are the client's own.
    """
    from mlflow.exceptions import MlflowException

    from airflow_saga.core.mlflow_client import settings_of

    normalised = normalise_uri(uri)
    given = uri.strip()  # messages name the URI as the user wrote it (a bare m-... id stays bare)
    try:
        return _resolve(client, normalised, given, settings or settings_of(client))
    except MlflowException as exc:
        if _is_not_found(exc):
            raise _missing(given, exc) from None
        raise


def _resolve(client: MlflowClient, uri: str, original: str, settings: MlflowSettings) -> ModelRef:
    if uri.startswith("models:/"):
        rest = uri.removeprefix("models:/").strip("/")
        if _LOGGED_ID_RE.match(rest):
            logged = client.get_logged_model(rest)
            return ModelRef(original, logged.artifact_location, logged.source_run_id, logged.model_id)
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, version = rest.rpartition("/")
            if not name or not version:
                raise ModelError(
                    f"model URI {original!r} is not models:/<name>/<version>, models:/<name>@<alias> "
                    "or models:/m-<id>"
                )
            if version == "latest":
                found = client.search_model_versions(
                    f"name='{name}'", max_results=1, order_by=["version_number DESC"]
                )
                if not found:
                    raise ModelError(f"model URI {original!r} does not exist: {name!r} has no versions")
                mv = found[0]
            else:
                mv = client.get_model_version(name, version)
        inner = (
            _resolve(client, mv.source, original, settings)
            if str(mv.source).startswith(("models:/", "runs:/"))
            else None
        )
        return ModelRef(
            original,
            inner.artifact_uri if inner else str(mv.source),
            mv.run_id or (inner.source_run_id if inner else None),
            inner.model_id if inner else None,
            mv.name,
            str(mv.version),
        )
    if uri.startswith("runs:/"):
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        if not run_id or not path.strip("/"):
            raise ModelError(f"model URI {original!r} is not runs:/<run_id>/<path>")
        import mlflow.artifacts

        from airflow_saga.core.mlflow_client import bounded

        run = client.get_run(run_id)
        path = path.strip("/")
        with bounded(settings):
            found = mlflow.artifacts.list_artifacts(
                artifact_uri=f"{run.info.artifact_uri.rstrip('/')}/{path}", tracking_uri=settings.tracking_uri
            )
        listed = {Path(f.path).name for f in found}
        if "MLmodel" in listed:
            return ModelRef(original, uri, run_id)
        name = path.split("/", 1)[0]
        token = None
        while True:  # MLflow 3 keeps models logged with name=... as logged models, not run artifacts
            page = client.search_logged_models(
                experiment_ids=[run.info.experiment_id], filter_string=f"name = '{name}'", page_token=token
            )
            for logged in page:
                if logged.source_run_id == run_id:
                    return ModelRef(original, logged.artifact_location, run_id, logged.model_id)
            token = page.token
            if not token:
                break
        raise ModelError(
            f"model URI {original!r} does not exist: run {run_id} has no model at {path!r} "
            "(no MLmodel file, and no logged model of that name from this run)"
        )
    return ModelRef(original, uri)


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


def checked_ref(client: MlflowClient, uri: str) -> ModelRef:
    """``uri`` resolved *and checked* the way registration checks it (a READY logged model with an MLmodel
    file), so evaluate and register accept and refuse exactly the same URIs with the same messages.

    ``core.registry.resolve_model_uri`` does the checks on top of ``resolve_model`` above; this turns its
    answer back into a ``ModelRef`` (one module resolves, the other validates: no cycle at run time).
    """
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


def load_model(settings: MlflowSettings, client: MlflowClient, uri: str) -> LoadedModel:
    """Resolve and load ``uri``: the raw estimator for the sklearn flavour, pyfunc for any other."""
    from mlflow.exceptions import MlflowException

    from airflow_saga.core.mlflow_client import download_artifacts

    ref = checked_ref(client, uri)
    local_dir = tempfile.mkdtemp(prefix="saga-eval-model-")
    try:
        try:
            local = download_artifacts(settings, ref.artifact_uri, local_dir)
        except MlflowException as exc:
            if _is_not_found(exc):
                raise _missing(ref.uri, exc) from None
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
