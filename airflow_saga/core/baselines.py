"""Baselines: what "normal" input looks like for one exact model version (SageMaker's baseline job).

Training logs ``data/reference.parquet`` (a bounded sample of the training features) and tags the run with
``saga.baseline.uri``; registration copies that tag onto the version. This module adds summary statistics
of that sample, ``data/reference_stats.json`` (``saga.baseline.stats_uri``), so monitors know each feature's
type, range, quantiles, histogram and category counts without re-reading the reference, and so a human can
see in MLflow what the model was trained on.

Statistics are computed once, at training, by ``log_reference_stats``. Versions registered before this
existed (or whose version lacks the tag) get them lazily: ``resolve_baseline`` looks on the version, then
on its source run, and otherwise computes them from the reference sample, logs them on the run and tags
both run and version. Either way a monitor always finds the same document for the same version.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from airflow_saga.core import tags as T
from airflow_saga.core.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from airflow_saga.core.mlflow_client import MlflowSettings

STATS_SCHEMA = "saga.baseline/v1"
STATS_ARTIFACT = "data/reference_stats.json"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HIST_BINS = 20
TOP_CATEGORIES = 50
NUMERICAL = "numerical"
CATEGORICAL = "categorical"


class NoBaselineError(DataError):
    """The model version has no reference data to compare traffic with."""


def column_type(series: pd.Series) -> str:
    """``numerical`` for numeric dtypes (not bool), else ``categorical``: the split Evidently needs."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return CATEGORICAL
    return NUMERICAL


def _num(value: Any) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None


def _numeric_stats(s: pd.Series) -> dict[str, Any]:
    import numpy as np

    values = s.to_numpy(dtype="float64", na_value=np.nan)
    finite = values[np.isfinite(values)]
    out: dict[str, Any] = {"type": NUMERICAL, "dtype": str(s.dtype), "count": len(values)}
    out["missing"] = int(np.isnan(values).sum())
    out["infinite"] = int(np.isinf(values).sum())
    if finite.size == 0:
        out.update(mean=None, std=None, min=None, max=None, unique=0, quantiles={}, histogram=None)
        return out
    edges = np.histogram_bin_edges(finite, bins=HIST_BINS)
    counts, _ = np.histogram(finite, bins=edges)
    out.update(
        mean=_num(finite.mean()),
        std=_num(finite.std()),
        min=_num(finite.min()),
        max=_num(finite.max()),
        unique=int(np.unique(finite).size),
        quantiles={str(q): _num(v) for q, v in zip(QUANTILES, np.quantile(finite, QUANTILES), strict=True)},
        histogram={"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    )
    return out


def _categorical_stats(s: pd.Series) -> dict[str, Any]:
    counts = s.dropna().astype(str).value_counts()
    return {
        "type": CATEGORICAL,
        "dtype": str(s.dtype),
        "count": len(s),
        "missing": int(s.isna().sum()),
        "unique": len(counts),
        "top": {str(k): int(v) for k, v in counts.head(TOP_CATEGORIES).items()},
    }


def compute_stats(frame: pd.DataFrame) -> dict[str, Any]:
    """Per-feature summary statistics of a reference frame (JSON-serialisable)."""
    features = {}
    for name in frame.columns:
        s = frame[name]
        features[str(name)] = _numeric_stats(s) if column_type(s) == NUMERICAL else _categorical_stats(s)
    return {"schema": STATS_SCHEMA, "rows": len(frame), "features": features}


def log_reference_stats(client: MlflowClient, run_id: str, reference: pd.DataFrame) -> str:
    """Compute, log (``data/reference_stats.json``) and tag (``saga.baseline.stats_uri``) the run's stats."""
    from airflow_saga.core.evaluation import log_json_artifact

    uri = log_json_artifact(client, run_id, compute_stats(reference), STATS_ARTIFACT)
    client.set_tag(run_id, T.BASELINE_STATS_URI, uri)
    return uri


@dataclasses.dataclass
class Baseline:
    """The reference of one model version: where it lives, its statistics, and (when loaded) the sample."""

    model_name: str
    version: str
    reference_uri: str
    stats_uri: str
    stats: dict[str, Any]
    reference: pd.DataFrame | None = None

    @property
    def features(self) -> list[str]:
        return list(self.stats.get("features", {}))

    def types(self) -> dict[str, str]:
        return {k: v.get("type", NUMERICAL) for k, v in self.stats.get("features", {}).items()}


def _load_json(settings: MlflowSettings, uri: str) -> dict[str, Any]:
    import json
    import tempfile
    from pathlib import Path

    from airflow_saga.core.mlflow_client import download_artifacts

    with tempfile.TemporaryDirectory(prefix="saga-stats-") as tmp:
        local = download_artifacts(settings, uri, tmp)
        return json.loads(Path(local).read_text())


def _run_tag(client: MlflowClient, run_id: str | None, key: str) -> str | None:
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).data.tags.get(key)
    except MlflowException:
        return None


def _owner_run(uri: str) -> str | None:
    """The run id in a ``runs:/<id>/...`` URI."""
    if uri.startswith("runs:/"):
        return uri.removeprefix("runs:/").split("/", 1)[0] or None
    return None


def resolve_baseline(
    settings: MlflowSettings,
    client: MlflowClient,
    model_name: str,
    version: str | int,
    *,
    load_reference: bool = True,
) -> Baseline:
    """The baseline of ``model_name`` version ``version``; raises ``NoBaselineError`` naming what is missing.

    Statistics missing everywhere are computed from the reference sample and recorded on the run that owns
    it and on the version, so the next call (and a human in MLflow) finds them.
    """
    from airflow_saga.core.evaluation import load_frame
    from airflow_saga.core.registry import get_version

    version = str(version)
    mv = get_version(client, model_name, version)
    vtags = dict(mv.tags or {})
    ref_uri = vtags.get(T.BASELINE_URI) or _run_tag(client, mv.run_id, T.BASELINE_URI)
    if not ref_uri:
        raise NoBaselineError(
            f"Model {model_name!r} version {version} has no baseline: neither the version nor its run "
            f"{mv.run_id or '(none)'} has tag {T.BASELINE_URI!r}. Register versions through "
            f"saga_training_pipeline (which logs data/reference.parquet), or set the tag to a runs:/ URI of "
            f"a Parquet sample of the training features."
        )
    owner = _owner_run(ref_uri)
    stats_uri = (
        vtags.get(T.BASELINE_STATS_URI)
        or _run_tag(client, mv.run_id, T.BASELINE_STATS_URI)
        or _run_tag(client, owner, T.BASELINE_STATS_URI)
    )
    reference = None
    try:
        if stats_uri:
            stats = _load_json(settings, stats_uri)
        else:
            reference = load_frame(settings, ref_uri)
            if owner is None:
                raise NoBaselineError(
                    f"Model {model_name!r} version {version}: baseline {ref_uri!r} is not a runs:/ URI, so "
                    f"its statistics cannot be recorded next to it"
                )
            stats_uri = log_reference_stats(client, owner, reference)
            stats = compute_stats(reference)
        if load_reference and reference is None:
            reference = load_frame(settings, ref_uri)
    except NoBaselineError:
        raise
    except Exception as exc:  # MlflowException, OSError, Arrow errors: the artifact is not usable
        raise NoBaselineError(
            f"Model {model_name!r} version {version}: baseline {ref_uri!r} could not be read: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if vtags.get(T.BASELINE_STATS_URI) != stats_uri:
        client.set_model_version_tag(model_name, version, T.BASELINE_STATS_URI, stats_uri)
    if vtags.get(T.BASELINE_URI) != ref_uri:
        client.set_model_version_tag(model_name, version, T.BASELINE_URI, ref_uri)
    if reference is not None and reference.empty:
        raise NoBaselineError(f"Model {model_name!r} version {version}: baseline {ref_uri!r} has no rows")
    return Baseline(model_name, version, ref_uri, stats_uri, stats, reference)
