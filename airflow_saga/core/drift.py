"""Data drift of a capture window against the served version's baseline, judged with Evidently 0.7.

How the verdict stays Evidently's, on windows larger than memory
    Evidently's ``DataDriftPreset`` over 1M rows spends ~50 s, mostly building per-column plots,
    histograms and correlation tables over the full current data, and peaks near 1.4 GB; its memory grows
    with the window. The statistics that decide drift are cheap, and need far less than the rows. So:

    * **Verdict, on every row of the window, in bounded memory.** The window is read in chunks
      (``core.capture_scan.iter_capture``); each chunk is folded into one mergeable summary per feature
      (``core.drift_stream``), and each feature's test runs on its summary. For each feature the method
      is the one ``DataDriftPreset`` would pick (Evidently's own default selection, unless configured) and
      the test is Evidently's registered stat test, after the same NaN/inf cleaning. Every test is exact
      except the Wasserstein distance on a continuous feature, whose value carries a computed error bound
      (at most 4e-5 in normed units in the benchmark's windows, 50k reference rows; see
      ``core.drift_stream``), so scores, per-feature verdicts and the dataset verdict (drifted share >=
      ``drift_share``) are those of raw ``DataDriftPreset`` on the whole window.
    * **Report, on a uniform sample.** The HTML report and the Evidently-workspace snapshot come from the
      current ``Report([DataDriftPreset(...)])`` API run on a uniform sample of the window (default 100k
      rows, reservoir-sampled over the chunks, seeded by the window) with the methods and thresholds
      pinned to those of the verdict. Its per-feature scores are estimates of the full-window ones and are
      shown next to them.

Which rows: the monitored version's traffic, once
    A window's rows are those served by the monitored version (``model_version``) or mirrored to it as a
    shadow (``shadow_model_version``), each (``inference_id``, ``row``) counted once: a request captured
    twice (a shadow process that died between writing and acknowledging) is dropped the second time, and
    counted in ``window.duplicates``. Traffic of other versions in the window is counted, not judged.

Edge cases give a clear outcome: an empty or too-small window raises ``InsufficientDataError`` (the
monitor skips); features of the baseline missing from the capture, or entirely missing (all NaN) in the
window, are reported and count as drifted (traffic without a feature the model needs is an incident);
features the baseline lacks are listed and ignored; a model without a baseline raises ``NoBaselineError``.

Model quality, when ground truth exists
    Labels sent to the gateway's ``/feedback`` are joined to the window's captured predictions of the
    monitored version. With at least ``min_labelled_rows`` labelled rows, Evidently's
    ``ClassificationPreset`` (binary or multiclass, on labels) or ``RegressionPreset`` gives the served
    model's quality on them (``result["quality"]``, a second report). When Evidently cannot compute it
    (e.g. a constant regression error, "Too many bins for data range") the metrics come from numpy and the
    note says so. Before labels arrive, ``core.estimation`` estimates the same quality without them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

from airflow_saga.core.baselines import CATEGORICAL, NUMERICAL
from airflow_saga.core.errors import DataError
from airflow_saga.core.outcomes import MonitorOutcome
from airflow_saga.core.statistics import finite

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable, Iterator

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from mlflow import MlflowClient

    from airflow_saga.core.baselines import Baseline
    from airflow_saga.core.mlflow_client import MlflowSettings

log = logging.getLogger(__name__)

SCHEMA = "saga.drift/v1"
MISSING = "missing"
TASKS = ("auto", "classification", "regression")
# Evidently metric type -> our key; MAE and MeanError values are {"mean", "std"} (the mean is taken)
QUALITY_METRICS = {
    "Accuracy": "accuracy",
    "Precision": "precision",
    "Recall": "recall",
    "F1Score": "f1",
    "MAE": "mae",
    "RMSE": "rmse",
    "R2Score": "r2",
    "MeanError": "mean_error",
    "AbsMaxError": "abs_max_error",
}
#: Quality metrics where higher is better (a threshold is a minimum); every other one is a loss (maximum).
HIGHER_IS_BETTER = ("accuracy", "f1", "f1_macro", "f1_weighted", "roc_auc", "precision", "recall", "r2")
QUALITY_SOURCES = ("estimated", "realised")
#: Metrics ``quality_thresholds`` may name: those realised quality (Evidently's presets) or estimated
#: quality (CBPE: accuracy, f1, f1_macro, roc_auc; DLE: mae, rmse) reports. Any other name is refused, so a
#: misspelt threshold never silently guards nothing.
QUALITY_THRESHOLD_METRICS = frozenset((*QUALITY_METRICS.values(), "f1_macro", "roc_auc"))
#: Capture columns the drift pass reads besides the features.
META_COLUMNS = [
    "inference_id",
    "row",
    "model_version",
    "shadow_model_version",
    "prediction",
    "shadow_prediction",
]


class InsufficientDataError(DataError):
    """The window holds too little traffic to judge; the monitor should skip, not decide."""


@dataclasses.dataclass
class DriftConfig:
    """Thresholds and methods; ``None`` means Evidently's default. Keys follow ``DataDriftPreset``.

    Quality: ``quality_thresholds`` maps a metric to its limit (a minimum for accuracy, f1, roc_auc, r2,
    ...; a maximum for mae, rmse, ...), applied to the estimated and/or realised quality named in
    ``quality_alert_on``; crossing one makes the outcome ``degraded`` (alert and retraining Asset)."""

    drift_share: float = 0.5
    method: str | None = None
    num_method: str | None = None
    cat_method: str | None = None
    per_column_method: dict[str, str] = dataclasses.field(default_factory=dict)
    threshold: float | None = None
    num_threshold: float | None = None
    cat_threshold: float | None = None
    per_column_threshold: dict[str, float] = dataclasses.field(default_factory=dict)
    sample_rows: int = 100_000
    min_rows: int = 100
    min_labelled_rows: int = 30
    task: str = "auto"
    batch_rows: int = 200_000
    estimate: bool = True
    estimation_rows: int = 50_000
    estimation_chunks: int = 6
    estimation_boot: int = 200
    quality_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    quality_alert_on: list[str] = dataclasses.field(default_factory=lambda: list(QUALITY_SOURCES))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DriftConfig:
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"unknown drift threshold setting(s) {unknown}; known: {sorted(known)}")
        try:
            cfg = cls(**data)
        except TypeError as exc:  # pragma: no cover - guarded by the known-keys check
            raise DataError(f"bad drift settings {data}: {exc}") from exc
        if not 0 < cfg.drift_share <= 1:
            raise DataError(f"drift_share must be in (0, 1], got {cfg.drift_share}")
        if cfg.task not in TASKS:
            raise DataError(f"task must be one of {list(TASKS)}, got {cfg.task!r}")
        for name in ("sample_rows", "min_rows", "min_labelled_rows", "batch_rows", "estimation_rows"):
            value = getattr(cfg, name)
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < (1 if name != "sample_rows" else 0)
            ):
                raise DataError(f"{name} must be a positive whole number, got {value!r}")
        if not isinstance(cfg.estimation_chunks, int) or not 1 <= cfg.estimation_chunks <= 100:
            raise DataError(
                f"estimation_chunks must be a whole number in [1, 100], got {cfg.estimation_chunks!r}"
            )
        if not isinstance(cfg.estimation_boot, int) or not 20 <= cfg.estimation_boot <= 5000:
            raise DataError(
                f"estimation_boot must be a whole number in [20, 5000], got {cfg.estimation_boot!r}"
            )
        if not isinstance(cfg.estimate, bool):
            raise DataError(f"estimate must be true or false, got {cfg.estimate!r}")
        if not isinstance(cfg.quality_thresholds, dict):
            raise DataError(
                f"quality_thresholds must be an object of metric: limit, got {cfg.quality_thresholds!r}"
            )
        for k, v in cfg.quality_thresholds.items():
            if k not in QUALITY_THRESHOLD_METRICS:
                raise DataError(
                    f"quality_thresholds names an unknown metric {k!r}; known: "
                    f"{sorted(QUALITY_THRESHOLD_METRICS)}"
                )
            _finite_number(v, f"quality_thresholds[{k!r}]")
        for name in ("threshold", "num_threshold", "cat_threshold"):
            if getattr(cfg, name) is not None:
                _finite_number(getattr(cfg, name), name)
        for name in ("per_column_method", "per_column_threshold"):
            if not isinstance(getattr(cfg, name), dict):
                raise DataError(f"{name} must be an object of column: value, got {getattr(cfg, name)!r}")
        for col, v in cfg.per_column_threshold.items():
            _finite_number(v, f"per_column_threshold[{col!r}]")
        methods = [(n, getattr(cfg, n)) for n in ("method", "num_method", "cat_method")]
        methods += [(f"per_column_method[{c!r}]", m) for c, m in cfg.per_column_method.items()]
        for field, method in methods:
            if method is not None:
                _check_method(field, method)
        bad = [s for s in cfg.quality_alert_on if s not in QUALITY_SOURCES]
        if bad or not isinstance(cfg.quality_alert_on, list):
            raise DataError(
                f"quality_alert_on must be a list of {list(QUALITY_SOURCES)}, got {cfg.quality_alert_on!r}"
            )
        return cfg

    def method_for(self, column: str, kind: str) -> str | None:
        return (
            self.per_column_method.get(column)
            or (self.num_method if kind == NUMERICAL else self.cat_method)
            or self.method
        )

    def threshold_for(self, column: str, kind: str) -> float | None:
        if column in self.per_column_threshold:
            return float(self.per_column_threshold[column])
        t = self.num_threshold if kind == NUMERICAL else self.cat_threshold
        return t if t is not None else self.threshold


def _finite_number(value: Any, field: str) -> None:
    import math

    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f"{field} must be a finite number, got {value!r}")


def _check_method(field: str, method: Any) -> None:
    """A drift method must be one of Evidently's registered stat tests, for the column kind it is set for."""
    from airflow_saga.core.compat import evidently_method_kinds

    if not isinstance(method, str) or not method:
        raise DataError(f"{field} must be the name of an Evidently stat test, got {method!r}")
    kinds = evidently_method_kinds(method)
    if not kinds:
        raise DataError(
            f"{field} {method!r} is not an Evidently stat test (e.g. wasserstein, ks, psi, jensenshannon, "
            f"chisquare, kl_div, hellinger, anderson)"
        )
    need = {"num_method": NUMERICAL, "cat_method": CATEGORICAL}.get(field)
    if need and need not in kinds:
        raise DataError(f"{field} {method!r} does not apply to {need} features (it takes {', '.join(kinds)})")


# --- typing values like the baseline ----------------------------------------------------------------------


def as_category(s: pd.Series) -> pd.Series:
    """Category values as strings, the same for the reference and the capture: integral floats (JSON
    numbers read as float64) print as integers, so 1 and 1.0 are one category; missing stays None."""
    import numpy as np

    if s.dtype.kind == "f":
        values = s.to_numpy()
        ok = np.isfinite(values)
        if ok.any() and np.all(values[ok] == np.round(values[ok])):
            s = s.astype("Int64")
    elif s.dtype.kind == "b" or str(s.dtype) == "boolean":
        s = s.map({True: "True", False: "False"}, na_action="ignore")
    return s.astype("string").astype(object).where(s.notna(), None)


def _coerce(frame: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """Values typed like the baseline: numbers as float64, categories as strings."""
    import pandas as pd

    out = {}
    for c in frame.columns:
        s = frame[c]
        if types.get(c) == NUMERICAL:
            out[c] = pd.to_numeric(s, errors="coerce").astype("float64")
        else:
            out[c] = as_category(s)
    return pd.DataFrame(out, index=frame.index)


def _clean(s: pd.Series) -> pd.Series:
    """Evidently's cleaning before a stat test: inf -> NaN, then drop NaN."""
    import numpy as np

    if s.dtype.kind == "f":
        return s[np.isfinite(s.to_numpy())]
    return s.dropna()


def sample_rows(n: int, k: int, seed: int) -> Any:
    """Sorted indices of a uniform sample of ``k`` of ``n`` rows, without replacement."""
    import numpy as np

    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def window_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "big")


# --- reading the monitored version's rows ---------------------------------------------------------------


@dataclasses.dataclass
class VersionRows:
    """What a pass over the window saw: rows of the monitored version, duplicates, other versions."""

    version: str | None
    rows: int = 0
    duplicates: int = 0
    other_versions: dict[str, int] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "duplicates": self.duplicates, "other_versions": self.other_versions}


def version_chunks(
    chunks: Iterable[pa.Table], version: str | None, seen: VersionRows, *, include_shadow: bool = True
) -> Iterator[pa.Table]:
    """The chunks' rows served by (or mirrored to) ``version``, each (inference_id, row) once, with a
    ``_prediction`` column holding that version's prediction. ``version=None`` keeps every row."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from airflow_saga.core.drift_stream import Deduplicator
    from airflow_saga.core.statistics import to_numpy

    dedupe = Deduplicator()
    for t in chunks:
        names = t.column_names
        n = t.num_rows
        served = shadow = None
        if "model_version" in names:
            mv = t.column("model_version").cast(pa.string())
            if version is not None:
                served = pc.fill_null(pc.equal(mv, str(version)), False)
                other = pc.value_counts(mv.filter(pc.invert(served)).drop_null()).to_pylist()
                for d in other:
                    seen.other_versions[d["values"]] = seen.other_versions.get(d["values"], 0) + d["counts"]
        if version is not None and include_shadow and "shadow_model_version" in names:
            shadow = pc.fill_null(
                pc.equal(t.column("shadow_model_version").cast(pa.string()), str(version)), False
            )
            if served is not None:
                shadow = pc.and_(shadow, pc.invert(served))
        if version is None or served is None:
            keep = np.ones(n, bool)
            pred = t.column("prediction") if "prediction" in names else pa.nulls(n)
            pred_np = to_numpy(pred)
        else:
            s_np = served.to_numpy(zero_copy_only=False)
            h_np = shadow.to_numpy(zero_copy_only=False) if shadow is not None else np.zeros(n, bool)
            keep = s_np | h_np
            p1 = to_numpy(t.column("prediction")) if "prediction" in names else np.full(n, np.nan)
            p2 = (
                to_numpy(t.column("shadow_prediction"))
                if "shadow_prediction" in names
                else np.full(n, np.nan)
            )
            if p1.dtype != p2.dtype:
                p1, p2 = p1.astype(object), p2.astype(object)
            pred_np = np.where(h_np, p2, p1)
        if "inference_id" in names:
            ids = t.column("inference_id").cast(pa.string()).to_numpy(zero_copy_only=False)
            rows = to_numpy(t.column("row")) if "row" in names else np.zeros(n)
            first = np.zeros(n, bool)
            idx = np.flatnonzero(keep)
            first[idx] = dedupe.keep(ids[idx], rows[idx])
            keep = first
        if not keep.any():
            continue
        mask = pa.array(keep)
        out = t.filter(mask)
        out = out.append_column("_prediction", pa.array(pred_np[keep], from_pandas=True))
        seen.rows += out.num_rows
        yield out
    seen.duplicates = dedupe.dropped


def read_current(
    root: str, model_name: str, start: Any, end: Any, version: str | None = None
) -> pd.DataFrame:
    """Feature columns of the window as one DataFrame (``version``: its rows only, each once). For small
    windows and notebooks; the monitor itself never holds the window (``WindowDrift``)."""
    import pyarrow as pa

    from airflow_saga.core.capture_scan import FEATURE_PREFIX, iter_capture

    seen = VersionRows(version)
    chunks = list(
        version_chunks(iter_capture(root, model_name, start, end, META_COLUMNS, features=True), version, seen)
    )
    if not chunks:
        import pandas as pd

        return pd.DataFrame()
    table = pa.concat_tables(chunks, promote_options="permissive")
    feats = [c for c in table.column_names if c.startswith(FEATURE_PREFIX)]
    frame = table.select(feats).to_pandas()
    frame.columns = [c[len(FEATURE_PREFIX) :] for c in feats]
    return frame


# --- the verdict, streamed ------------------------------------------------------------------------------


class WindowDrift:
    """Folds chunks of a window into per-feature summaries and a report sample; ``result()`` judges.

    Memory: the summaries (a few arrays the size of the reference per numeric feature, value counts per
    categorical one), one chunk, and the sample; never the window.
    """

    def __init__(
        self,
        baseline: Baseline,
        config: DriftConfig,
        *,
        seed: int = 0,
        keep_sample: int | None = None,
        sample_meta: bool = False,
    ) -> None:
        from airflow_saga.core.drift_stream import (
            STREAMED_NUMERIC,
            CategoricalSummary,
            NumericSummary,
            Reservoir,
        )

        if baseline.reference is None:
            raise DataError(
                f"model {baseline.model_name!r} version {baseline.version}: the baseline reference sample "
                f"was not loaded"
            )
        self.baseline, self.config = baseline, config
        self.types = baseline.types()
        self.expected = [c for c in baseline.features if c in baseline.reference.columns]
        self.ref = _coerce(baseline.reference[self.expected], self.types)
        self.summaries: dict[str, Any] = {}
        for c in self.expected:
            if self.types[c] == NUMERICAL:
                method = config.method_for(c, NUMERICAL)
                keep = method is not None and method not in STREAMED_NUMERIC
                self.summaries[c] = NumericSummary.empty(self.ref[c].to_numpy(dtype=float), keep_values=keep)
            else:
                self.summaries[c] = CategoricalSummary()
        self.present: set[str] = set()
        self.added: set[str] = set()
        self.rows = 0
        self.sample_meta = sample_meta
        size = max(config.sample_rows, keep_sample or 0)
        self.reservoir = Reservoir(size, seed)

    def update(self, chunk: pa.Table) -> None:
        """One chunk: ``features.<name>`` columns (and, with ``sample_meta``, capture columns to keep in
        the sample: timestamp, inference_id, row, ``_prediction``)."""
        import pyarrow as pa

        from airflow_saga.core.capture_scan import FEATURE_PREFIX

        n = chunk.num_rows
        if not n:
            return
        self.rows += n
        frame_cols: dict[str, Any] = {}
        for name in chunk.column_names:
            if not name.startswith(FEATURE_PREFIX):
                continue
            c = name[len(FEATURE_PREFIX) :]
            if c not in self.summaries:
                self.added.add(c)
                continue
            self.present.add(c)
            col = chunk.column(name)
            if self.types[c] == NUMERICAL:
                values = self._numbers(col)
                self.summaries[c].update(values)
                frame_cols[c] = values
            else:
                s = as_category(col.to_pandas())
                vc = s.value_counts(dropna=True)
                self.summaries[c].update_counts(
                    vc.index.tolist(), vc.to_numpy().tolist(), int(s.isna().sum())
                )
                frame_cols[c] = s.to_numpy(dtype=object)
        import pandas as pd

        frame = pd.DataFrame(frame_cols)
        if self.sample_meta:
            for src, dst in (
                ("timestamp", "_ts"),
                ("inference_id", "_iid"),
                ("row", "_row"),
                ("_prediction", "_pred"),
            ):
                if src in chunk.column_names:
                    col = chunk.column(src)
                    frame[dst] = (
                        col.cast(pa.string()).to_numpy(zero_copy_only=False)
                        if src in ("timestamp", "inference_id")
                        else col.to_pandas().to_numpy()
                    )
        self.reservoir.update(frame)

    @staticmethod
    def _numbers(col: pa.ChunkedArray) -> np.ndarray:
        import pandas as pd
        import pyarrow as pa

        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            return col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return pd.to_numeric(col.to_pandas(), errors="coerce").to_numpy(
            dtype="float64", na_value=float("nan")
        )

    def sample(self) -> pd.DataFrame | None:
        return self.reservoir.sample()

    def result(
        self, *, model_name: str | None = None, window: dict[str, Any] | None = None, with_report: bool = True
    ) -> tuple[dict[str, Any], Any]:
        """The drift result (JSON) and the Evidently snapshot of the sample (None without ``with_report``)."""
        from airflow_saga.core.drift_stream import judge_categorical, judge_numeric

        t0 = time.perf_counter()
        config, baseline, types = self.config, self.baseline, self.types
        model_name = model_name or baseline.model_name
        who = f"model {model_name!r} version {baseline.version}"
        n = self.rows
        if n < config.min_rows:
            raise InsufficientDataError(
                f"{who}: {n} captured row(s) in the window; at least {config.min_rows} are needed to judge "
                f"drift"
            )
        expected = self.expected
        missing = [c for c in expected if c not in self.present]
        if len(missing) == len(expected):
            raise DataError(
                f"{who}: none of the baseline's features {expected[:10]} is in the capture (capture has "
                f"{sorted(self.added)[:10]}); is this the right model?"
            )
        rows: dict[str, dict[str, Any]] = {}
        for c in missing:
            rows[c] = _missing_row(types[c], "feature of the baseline is missing from the capture")
        judged: list[str] = []
        for c in (c for c in expected if c in self.present):
            summary = self.summaries[c]
            ref_c = _clean(self.ref[c])
            missing_share = float(1 - summary.n / n)
            if ref_c.empty:
                rows[c] = {
                    "type": types[c],
                    "method": "not judged",
                    "score": None,
                    "threshold": None,
                    "drifted": False,
                    "note": "the baseline has no values for this feature",
                    "missing_share": missing_share,
                }
                continue
            if summary.n == 0:
                rows[c] = _missing_row(types[c], "every value in the window is missing (NaN/null)", 1.0)
                continue
            method, thr = config.method_for(c, types[c]), config.threshold_for(c, types[c])
            try:
                if types[c] == NUMERICAL:
                    res = judge_numeric(ref_c, summary, method, thr)
                else:
                    res = judge_categorical(ref_c, summary, method, thr)
            except ValueError as exc:  # Evidently's registry: a method that does not take this column kind
                raise DataError(
                    f"{who}: feature {c!r} ({types[c]}) cannot be judged with drift method {method!r}: {exc}"
                ) from exc
            rows[c] = {"type": types[c], **res, "missing_share": missing_share}
            judged.append(c)
        counted = [c for c, r in rows.items() if r["method"] != "not judged"]
        drifted = [c for c in counted if rows[c]["drifted"]]
        share = len(drifted) / len(counted) if counted else 0.0
        inexact = [c for c in judged if rows[c].get("verdict_exact") is False]
        result: dict[str, Any] = {
            "schema": SCHEMA,
            "model_name": model_name,
            "version": baseline.version,
            "baseline": {
                "reference_uri": baseline.reference_uri,
                "stats_uri": baseline.stats_uri,
                "rows": len(baseline.reference),
            },
            "window": {**(window or {}), "rows": n},
            "drift_share_threshold": config.drift_share,
            "drifted_count": len(drifted),
            "columns_count": len(counted),
            "drift_share": share,
            "dataset_drift": bool(counted) and share >= config.drift_share,
            "drifted_features": drifted,
            "features": rows,
            "schema_changes": {"missing": missing, "added": sorted(self.added)},
            "verdict_exact": not inexact,
            "seconds_verdict": round(time.perf_counter() - t0, 3),
        }
        if inexact:
            result["inexact_features"] = inexact
        snapshot = None
        sample = self.sample()
        if with_report and judged and sample is not None and config.sample_rows > 0:
            t1 = time.perf_counter()
            if len(sample) > config.sample_rows:
                sample = sample.iloc[: config.sample_rows]
            snapshot = evidently_report(self.ref, sample, judged, types, rows, config.drift_share, result)
            result["report"] = {"sample_rows": len(sample), "seconds": round(time.perf_counter() - t1, 3)}
            _attach_sample_scores(result, snapshot)
        return finite(result), snapshot


def _missing_row(kind: str, note: str, share: float | None = None) -> dict[str, Any]:
    """A feature the window lacks counts as drifted (traffic without a model input is an incident)."""
    row: dict[str, Any] = {"type": kind, "method": MISSING, "score": 1.0, "threshold": 0.0, "drifted": True}
    row["note"] = note
    if share is not None:
        row["missing_share"] = share
    return row


def compute_drift(
    baseline: Baseline,
    current: pd.DataFrame,
    config: DriftConfig | None = None,
    *,
    model_name: str | None = None,
    window: dict[str, Any] | None = None,
    with_report: bool = True,
) -> tuple[dict[str, Any], Any]:
    """Drift of an in-memory window (a DataFrame of feature columns): the same result as the streamed
    monitor gives for the same rows, for scripts and notebooks."""
    import pyarrow as pa

    from airflow_saga.core.capture_scan import FEATURE_PREFIX

    config = config or DriftConfig()
    model_name = model_name or baseline.model_name
    seed = window_seed(model_name, baseline.version, window, len(current))
    acc = WindowDrift(baseline, config, seed=seed)
    batch = max(config.batch_rows, 1)
    for off in range(0, len(current), batch):
        part = current.iloc[off : off + batch]
        acc.update(pa.Table.from_pandas(part.add_prefix(FEATURE_PREFIX), preserve_index=False))
    return acc.result(model_name=model_name, window=window, with_report=with_report)


def evidently_report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    columns: list[str],
    types: dict[str, str],
    rows: dict[str, dict[str, Any]],
    drift_share: float,
    result: dict[str, Any],
) -> Any:
    """``Report([DataDriftPreset])`` with methods and thresholds pinned to the verdict's."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    dd = DataDefinition(
        numerical_columns=[c for c in columns if types[c] == NUMERICAL],
        categorical_columns=[c for c in columns if types[c] == CATEGORICAL],
    )
    preset = DataDriftPreset(
        columns=columns,
        drift_share=drift_share,
        per_column_method={c: rows[c]["method"] for c in columns},
        per_column_threshold={c: rows[c]["threshold"] for c in columns},
    )
    report = Report(
        [preset],
        include_tests=True,
        metadata={
            "model_name": str(result["model_name"]),
            "version": str(result["version"]),
            "full_window_rows": str(result["window"]["rows"]),
            "verdict": "drift" if result["dataset_drift"] else "no drift",
        },
        tags=["saga", "drift", str(result["model_name"])],
    )
    return report.run(
        Dataset.from_pandas(cur[columns], data_definition=dd),
        Dataset.from_pandas(ref[columns], data_definition=dd),
    )


def _attach_sample_scores(result: dict[str, Any], snapshot: Any) -> None:
    for m in snapshot.dict().get("metrics", []):
        cfg = m.get("config") or {}
        col = cfg.get("column")
        if col in result["features"] and isinstance(m.get("value"), int | float):
            result["features"][col]["report_score"] = float(m["value"])


# --- model quality on labelled rows ---------------------------------------------------------------------


def read_labelled(
    root: str, model_name: str, start: Any, end: Any, version: str | None = None
) -> tuple[pd.DataFrame, int]:
    """Captured predictions of the window (of ``version``, each row once) joined with their ground truth:
    the labelled rows as ``prediction``/``target`` columns, and the number of captured rows they come from.

    Feedback is read first: without labels the capture is not read again."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from airflow_saga.core.capture_scan import iter_capture, scan_feedback
    from airflow_saga.core.statistics import join_labels, to_numpy

    empty = pd.DataFrame({"prediction": pd.Series([], dtype=float), "target": pd.Series([], dtype=float)})
    feedback = scan_feedback(root, model_name, start)
    seen = VersionRows(version)
    chunks = version_chunks(iter_capture(root, model_name, start, end, META_COLUMNS), version, seen)
    if feedback.num_rows == 0 or "ground_truth" not in feedback.column_names:
        for _ in chunks:  # count the captured rows only
            pass
        return empty, seen.rows
    ids = pc.unique(feedback.column("inference_id").cast(pa.string()))
    kept = []
    for t in chunks:
        t = t.filter(pc.is_in(t.column("inference_id").cast(pa.string()), value_set=ids))
        if t.num_rows:
            kept.append(t.select([c for c in ("inference_id", "row", "_prediction") if c in t.column_names]))
    if not kept:
        return empty, seen.rows
    table = pa.concat_tables(kept, promote_options="permissive")
    if "row" not in table.column_names:
        table = table.append_column("row", pa.nulls(table.num_rows))
    truth = join_labels(table, feedback)
    pred = to_numpy(table.column("_prediction"))
    has = (pd.notna(truth) & pd.notna(pred)).astype(bool)
    return pd.DataFrame({"prediction": pred[has], "target": truth[has]}), seen.rows


def compute_quality(
    labelled: pd.DataFrame,
    config: DriftConfig | None = None,
    *,
    model_name: str,
    version: str,
    captured_rows: int | None = None,
    with_report: bool = True,
) -> tuple[dict[str, Any], Any]:
    """The served model's quality on the labelled rows (``read_labelled``) and its Evidently snapshot.

    Never raises for the data: too few labels give ``status: "skipped"`` with a note; an Evidently failure
    falls back to numpy metrics (``source: "numpy"``) with the reason."""
    import numpy as np
    import pandas as pd

    from airflow_saga.core.statistics import infer_task, same_kind, tidy_labels

    config = config or DriftConfig()
    t0 = time.perf_counter()
    n = len(labelled)
    out: dict[str, Any] = {"labelled_rows": n, "min_labelled_rows": config.min_labelled_rows}
    if captured_rows:
        out["coverage"] = n / captured_rows
    if n < config.min_labelled_rows:
        why = "no ground truth (gateway /feedback) joined to" if n == 0 else f"only {n} labelled row(s) among"
        out.update(
            status="skipped",
            note=f"{why} the window's predictions of v{version}; model quality needs at least "
            f"{config.min_labelled_rows} (min_labelled_rows)",
        )
        return out, None
    truth, pred = labelled["target"].to_numpy(), labelled["prediction"].to_numpy()
    task = config.task
    if task == "auto":
        task = infer_task(pred)
    if task == "classification":
        t, p = (tidy_labels(a) for a in same_kind(truth, pred))
        classes = sorted(set(t.tolist()) | set(p.tolist()), key=str)
        kind = "binary" if len(classes) <= 2 else "multiclass"
        frame = pd.DataFrame({"target": t, "prediction": p})
        if kind == "binary":
            out["pos_label"] = 1 if 1 in classes else classes[-1]
        out["classes"] = len(classes)
    else:
        kind = "regression"
        frame = pd.DataFrame(
            {"target": pd.to_numeric(pd.Series(truth), errors="coerce"), "prediction": pred.astype(float)}
        )
        frame = frame[np.isfinite(frame["target"]) & np.isfinite(frame["prediction"])]
        out["labelled_rows"] = len(frame)
    out.update(status="computed", task=task, kind=kind)
    snapshot = None
    try:
        snapshot = quality_report(frame, kind, out.get("pos_label"), model_name, version)
        metrics = {}
        for m in snapshot.dict().get("metrics", []):
            key = QUALITY_METRICS.get(str((m.get("config") or {}).get("type", "")).rsplit(":", 1)[-1])
            value = m.get("value")
            value = value.get("mean") if isinstance(value, dict) else value
            if key and isinstance(value, int | float):
                metrics[key] = float(value)
        out["source"] = "evidently"
    except Exception as exc:  # quality only informs: never lose the drift result over it
        log.warning("Evidently could not compute model quality (%s); using numpy metrics", exc)
        metrics = _numpy_quality(frame, kind)
        out.update(source="numpy", note=f"Evidently could not compute the quality report: {exc}")
        snapshot = None
    if not with_report:
        snapshot = None
    out["metrics"] = metrics
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return finite(out), snapshot


def quality_report(frame: pd.DataFrame, kind: str, pos_label: Any, model_name: str, version: str) -> Any:
    """``Report([ClassificationPreset])`` (labels, not probas) or ``Report([RegressionPreset])``."""
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        MulticlassClassification,
        Regression,
        Report,
    )
    from evidently.presets import ClassificationPreset, RegressionPreset

    if kind == "regression":
        dd = DataDefinition(
            numerical_columns=["target", "prediction"],
            regression=[Regression(target="target", prediction="prediction")],
        )
        preset: Any = RegressionPreset()
    else:
        task = (
            BinaryClassification(target="target", prediction_labels="prediction", pos_label=pos_label)
            if kind == "binary"
            else MulticlassClassification(target="target", prediction_labels="prediction")
        )
        dd = DataDefinition(categorical_columns=["target", "prediction"], classification=[task])
        preset = ClassificationPreset()
    report = Report(
        [preset],
        metadata={"model_name": str(model_name), "version": str(version), "labelled_rows": str(len(frame))},
        tags=["saga", "quality", str(model_name)],
    )
    return report.run(Dataset.from_pandas(frame, data_definition=dd), None)


def _numpy_quality(frame: pd.DataFrame, kind: str) -> dict[str, float]:
    import numpy as np

    t, p = frame["target"].to_numpy(), frame["prediction"].to_numpy()
    if kind != "regression":
        return {"accuracy": float(np.mean(t == p))}
    err = p - t
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err * err))),
        "r2": 1 - float(np.sum(err * err)) / ss_tot if ss_tot else float("nan"),
        "mean_error": float(err.mean()),
        "abs_max_error": float(np.max(np.abs(err))),
    }


def quality_summary(quality: dict[str, Any] | None) -> str:
    if not quality:
        return ""
    if quality.get("status") != "computed":
        return f"Model quality not computed: {quality.get('note', 'no labels')}"
    shown = [
        f"{k} {v:.4g}"
        for k, v in quality.get("metrics", {}).items()
        if k in ("accuracy", "f1", "precision", "recall", "mae", "rmse", "r2") and v is not None
    ]
    note = f" ({quality['note']})" if quality.get("note") else ""
    return (
        f"Model quality on {quality['labelled_rows']} labelled rows ({quality['kind']}): "
        f"{', '.join(shown) or 'no metrics'}{note}"
    )


def summary(result: dict[str, Any]) -> str:
    """A readable per-feature table for task logs and failure messages."""
    head = (
        f"Drift {'DETECTED' if result['dataset_drift'] else 'not detected'} for model "
        f"{result['model_name']!r} version {result['version']}: {result['drifted_count']}/"
        f"{result['columns_count']} features drifted (share {result['drift_share']:.2f}, threshold "
        f"{result['drift_share_threshold']:.2f}) over {result['window'].get('rows')} captured rows"
    )
    lines = [head, f"  {'feature':<28} {'method':<14} {'score':>10} {'threshold':>10}  verdict"]
    order = sorted(result["features"].items(), key=lambda kv: (not kv[1]["drifted"], kv[0]))
    for name, r in order:
        score = "-" if r.get("score") is None else f"{r['score']:.4g}"
        thr = "-" if r.get("threshold") is None else f"{r['threshold']:.4g}"
        verdict = "DRIFT" if r["drifted"] else "ok"
        note = f"  ({r['note']})" if r.get("note") else ""
        lines.append(f"  {name[:28]:<28} {r['method'][:14]:<14} {score:>10} {thr:>10}  {verdict}{note}")
    added = result.get("schema_changes", {}).get("added") or []
    if added:
        lines.append(f"  features not in the baseline (ignored): {', '.join(added[:20])}")
    quality = quality_summary(result.get("quality"))
    if quality:
        lines.append(quality)
    estimated = estimation_summary(result.get("estimated_quality"))
    if estimated:
        lines.append(estimated)
    for reason in (result.get("alert") or {}).get("reasons", []):
        lines.append(f"  ALERT: {reason}")
    for note in (result.get("alert") or {}).get("unchecked", []):
        lines.append(f"  threshold not checked: {note}")
    return "\n".join(lines)


def estimation_summary(est: dict[str, Any] | None) -> str:
    if not est:
        return ""
    if est.get("status") != "computed":
        return f"Quality not estimated: {est.get('note', 'not requested')}"
    parts = []
    for name, m in est.get("metrics", {}).items():
        if m.get("estimate") is None:
            continue
        text = f"{name} {m['estimate']:.4g} [{m['ci_low']:.4g}, {m['ci_high']:.4g}]"
        if m.get("realised") is not None:
            text += f" (realised {m['realised']:.4g})"
        parts.append(text)
    return f"Estimated quality ({est['method']}, {est['rows']} sampled rows, no labels used): " + ", ".join(
        parts
    )


# --- alerts and the outcome ---------------------------------------------------------------------------------


def _quality_values(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The values each quality source offers thresholds. Realised: Evidently's metrics on every labelled
    row of the window, plus (for metrics the labels-only preset lacks, such as roc_auc) the realised value
    on the estimation sample's labelled rows; only once the window has ``min_labelled_rows`` labels."""
    est = (result.get("estimated_quality") or {}).get("metrics") or {}
    quality = result.get("quality") or {}
    realised: dict[str, float] = {}
    if quality.get("status") == "computed":
        realised = {k: v for k, v in (quality.get("metrics") or {}).items() if v is not None}
        for k, m in est.items():
            if k not in realised and m.get("realised") is not None:
                realised[k] = m["realised"]
    return {
        "estimated": {k: m["estimate"] for k, m in est.items() if m.get("estimate") is not None},
        "realised": realised,
    }


def quality_alerts(result: dict[str, Any], config: DriftConfig) -> list[str]:
    """Reasons the estimated and/or realised quality crossed ``config.quality_thresholds``."""
    reasons = []
    sources = _quality_values(result)
    for source in config.quality_alert_on:
        values = sources[source]
        for metric, limit in config.quality_thresholds.items():
            value = values.get(metric)
            if value is None:
                continue
            higher = metric in HIGHER_IS_BETTER
            if (higher and value < limit) or (not higher and value > limit):
                side = "below" if higher else "above"
                reasons.append(f"{source} {metric} {value:.4g} is {side} its threshold {limit:g}")
    return reasons


def unchecked_thresholds(result: dict[str, Any], config: DriftConfig) -> list[str]:
    """Thresholds no source could check in this window (no labels yet, estimation skipped, or a metric of
    the other task), so a quiet outcome is never mistaken for a passed check."""
    sources = _quality_values(result)
    out = []
    for metric in config.quality_thresholds:
        if not any(metric in sources[s] for s in config.quality_alert_on):
            out.append(f"{metric}: no {' or '.join(config.quality_alert_on)} value in this window")
    return out


def decide(result: dict[str, Any], config: DriftConfig) -> MonitorOutcome:
    """``drift`` on data drift, else ``degraded`` when quality crossed a threshold, else ``no_drift``."""
    reasons = quality_alerts(result, config)
    if result["dataset_drift"]:
        reasons.insert(0, f"data drift in {result['drifted_count']}/{result['columns_count']} features")
        outcome = MonitorOutcome.DRIFT
    elif reasons:
        outcome = MonitorOutcome.DEGRADED
    else:
        outcome = MonitorOutcome.NO_DRIFT
    result["outcome"] = outcome.value
    result["alert"] = {"raised": outcome.retrain, "reasons": reasons}
    unchecked = unchecked_thresholds(result, config)
    if unchecked:
        result["alert"]["unchecked"] = unchecked
    return outcome


# --- the use case ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class DriftCheck:
    """What ``monitor`` found: the outcome, the JSON result (XCom), and what was logged where."""

    outcome: MonitorOutcome
    result: dict[str, Any]
    reason: str = ""
    snapshot: Any = None
    quality_snapshot: Any = None


def monitor(
    settings: MlflowSettings,
    client: MlflowClient,
    *,
    model_name: str,
    capture_root: str,
    start: dt.datetime,
    end: dt.datetime,
    alias: str = "champion",
    version: str | None = None,
    config: DriftConfig | None = None,
    window_source: str = "params",
    experiment: str = "saga-monitoring",
    airflow: dict[str, str] | None = None,
    evidently_workspace: str | None = None,
    log_to_mlflow: bool = True,
) -> DriftCheck:
    """Judge the traffic of ``model_name`` in [start, end): data drift against the version's baseline,
    realised quality on feedback labels, estimated quality without them; log it all in MLflow.

    The version is ``version``, else the one that served ``alias`` for most of the window's traffic (so a
    re-run of a past window judges what was served then, even after a promotion), else the alias's
    current version when the window has no traffic under that alias. A window too small to judge returns
    ``MonitorOutcome.SKIPPED`` with the reason; a version without a baseline raises ``NoBaselineError``.
    """
    from airflow_saga.core.baselines import NoBaselineError, resolve_baseline
    from airflow_saga.core.capture_scan import iter_capture
    from airflow_saga.core.monitoring import add_to_workspace, log_drift_run
    from airflow_saga.core.registry import version_by_alias

    config = config or DriftConfig()
    window = {"start": start.isoformat(), "end": end.isoformat(), "source": window_source}
    where = f"[{window['start']}, {window['end']})"
    if version is None:
        version = served_version(capture_root, model_name, alias, start, end)
        if version is None:
            mv = version_by_alias(client, model_name, alias)
            if mv is None:
                raise DataError(f"Model {model_name!r} has no {alias!r} alias: no served version to monitor")
            version = str(mv.version)
    version = str(version)
    try:
        baseline = resolve_baseline(settings, client, model_name, version)
    except NoBaselineError as exc:
        raise NoBaselineError(
            f"monitor window {where} of model {model_name!r} version {version}: {exc}"
        ) from exc
    seed = window_seed(model_name, version, window["start"], window["end"])
    acc = WindowDrift(
        baseline,
        config,
        seed=seed,
        keep_sample=config.estimation_rows if config.estimate else 0,
        sample_meta=True,
    )
    seen = VersionRows(version)
    chunks = iter_capture(
        capture_root,
        model_name,
        start,
        end,
        [*META_COLUMNS, "timestamp"],
        features=True,
        batch_rows=config.batch_rows,
    )
    for chunk in version_chunks(chunks, version, seen):
        acc.update(chunk)
    window.update(seen.as_dict())
    log.info("Drift of %r v%s over %s: %s", model_name, version, where, seen.as_dict())
    try:
        result, snapshot = acc.result(model_name=model_name, window=window)
    except InsufficientDataError as exc:
        reason = (
            f"Not enough traffic to judge drift of {model_name!r} v{version}: {exc} (window {where}, capture "
            f"{capture_root}; traffic of other versions: {seen.other_versions or 'none'})"
        )
        return DriftCheck(
            MonitorOutcome.SKIPPED, {"outcome": "skipped", "reason": reason, "window": window}, reason
        )
    result["window"].update(window)
    labelled, captured = read_labelled(capture_root, model_name, start, end, version)
    result["quality"], quality_snapshot = compute_quality(
        labelled, config, model_name=model_name, version=version, captured_rows=captured
    )
    plot = None
    if config.estimate:
        result["estimated_quality"], plot = _estimate(
            settings, client, model_name, version, acc, config, start, end, capture_root, seed
        )
    outcome = decide(result, config)
    result = finite(result)
    if log_to_mlflow:
        result["mlflow"] = log_drift_run(
            client,
            result,
            snapshot,
            experiment=experiment,
            airflow=airflow,
            quality_snapshot=quality_snapshot,
            estimation_plot=plot,
        )
    if evidently_workspace and snapshot is not None:
        result["evidently"] = add_to_workspace(evidently_workspace, f"saga-{model_name}", snapshot)
    if evidently_workspace and quality_snapshot is not None:
        result["evidently_quality"] = add_to_workspace(
            evidently_workspace, f"saga-{model_name}", quality_snapshot
        )
    return DriftCheck(outcome, result, "", snapshot, quality_snapshot)


def served_version(root: str, model_name: str, alias: str, start: Any, end: Any) -> str | None:
    """The version that answered most of the window's requests under ``alias`` (the capture's
    ``variant``), or None when the window has none. Reads two columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from airflow_saga.core.capture_scan import iter_capture

    counts: dict[str, int] = {}
    for t in iter_capture(root, model_name, start, end, ["variant", "model_version"]):
        if "variant" not in t.column_names or "model_version" not in t.column_names:
            continue
        mine = t.filter(pc.fill_null(pc.equal(t.column("variant").cast(pa.string()), alias), False))
        for d in pc.value_counts(mine.column("model_version").cast(pa.string()).drop_null()).to_pylist():
            counts[d["values"]] = counts.get(d["values"], 0) + d["counts"]
    if not counts:
        return None
    return max(sorted(counts), key=lambda v: counts[v])


def _estimate(
    settings: MlflowSettings,
    client: MlflowClient,
    model_name: str,
    version: str,
    acc: WindowDrift,
    config: DriftConfig,
    start: Any,
    end: Any,
    root: str,
    seed: int,
) -> tuple[dict[str, Any], bytes | None]:
    """Estimated quality on the drift pass's sample (labels joined only to report realised quality)."""
    from airflow_saga.core import estimation
    from airflow_saga.core.capture_scan import scan_feedback
    from airflow_saga.core.statistics import infer_task, join_labels

    sample = acc.sample()
    if sample is None or sample.empty:
        return {"status": "skipped", "note": "no rows sampled"}, None
    sample = sample.iloc[: config.estimation_rows]
    try:
        held_out = estimation.load_holdout(settings, client, model_name, version)
        model = estimation.load_scorer(settings, f"models:/{model_name}/{version}")
    except estimation.EstimationSkipped as exc:
        return {"status": "skipped", "note": str(exc)}, None
    columns = [c for c in held_out.X.columns]
    labels = None
    feedback = scan_feedback(root, model_name, start)
    if feedback.num_rows and "ground_truth" in feedback.column_names and "_iid" in sample:
        import pyarrow as pa

        keys = pa.table(
            {
                "inference_id": sample["_iid"].astype(str).tolist(),
                "row": sample["_row"].astype(float).tolist(),
            }
        )
        labels = join_labels(keys, feedback)
    task = config.task
    if task == "auto":
        preds = sample["_pred"].to_numpy() if "_pred" in sample else None
        task = estimation.task_of(model, infer_task(preds) if preds is not None else "classification")
    est = estimation.estimate(
        model,
        held_out,
        sample,
        columns,
        task=task,
        labels=labels,
        chunks=config.estimation_chunks,
        boot=config.estimation_boot,
        seed=seed,
        start=start,
        end=end,
    )
    plot = (
        estimation.plot_over_time(est, config.quality_thresholds) if est.get("status") == "computed" else None
    )
    return est, plot
