"""Champion vs challenger on the same requests: the decision-ready shadow-test report.

SageMaker's shadow-test dashboard shows latency and errors. A team deciding whether to switch models also
needs to know how often the two models *agree* (and where they disagree), and, once ground truth arrives,
which one is more *accurate*, with confidence intervals so a lucky week is not mistaken for a better model.

Inputs are capture rows in which the gateway mirrored a request to the challenger (``shadow_*`` columns),
read by column with ``core.capture_scan`` (~1 s per million rows), or an offline replay of a dataset
through both models (``replay``). Everything below is vectorised numpy over those columns.

The report has the evaluation report's shape, so the training gate's condition language applies as is::

    {"candidate": {"version": "2", "metrics": {"agreement": 0.97, "error_rate": 0.0, "latency_p99_ms": ...,
                                               "accuracy": ..., "accuracy_ci_low": ..., ...}},
     "champion":  {"version": "1", "metrics": {...}}, "comparison": {...}, ...}

Conventions: latency percentiles are per request (a request's rows share one latency); agreement and
accuracy are per row. Mirrored copies the gateway never scored (queue full, shutdown) are counted as
``not_scored``, not as challenger errors: they say nothing about the challenger. The gateway captures only
requests the champion answered, so the champion's error rate counts rows without a champion prediction.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from airflow_saga.core.capture import RECORD_FIELDS
from airflow_saga.core.capture_scan import FEATURE_PREFIX, feature_names
from airflow_saga.core.drift import InsufficientDataError
from airflow_saga.core.errors import DataError
from airflow_saga.core.statistics import (
    classification_metrics,
    finite,
    infer_task,
    join_labels,
    mean_ci,
    present,
    regression_metrics,
    same_kind,
    to_numpy,
    wilson,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from mlflow import MlflowClient

    from airflow_saga.core.mlflow_client import MlflowSettings
    from airflow_saga.core.slices import SliceSpec

log = logging.getLogger(__name__)

SCHEMA = "saga.shadow/v1"
NOT_SCORED_PREFIXES = ("dropped", "not run")
# The capture columns a comparison needs: every record field but the features and the per-window constants.
COLUMNS = [f for f in RECORD_FIELDS if f not in ("timestamp", "model_name", "features")]
MAX_CONFUSION_LABELS = 20


class ChallengerFailedError(DataError):
    """The challenger errored on every mirrored request: nothing to compare, and that is a verdict."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


# --- latency ---------------------------------------------------------------------------------------


def _percentiles(values: np.ndarray) -> dict[str, float]:
    import numpy as np

    if values.size == 0:
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "latency_p50_ms": float(p50),
        "latency_p90_ms": float(p90),
        "latency_p99_ms": float(p99),
        "latency_mean_ms": float(values.mean()),
    }


# --- column handling ------------------------------------------------------------------------------------


def _mask(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _mode(col: pa.ChunkedArray) -> str | None:
    """Most frequent non-null value of a column, as a string."""
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = pc.value_counts(col.cast(pa.string()).drop_null())
    if len(counts) == 0:
        return None
    best = max(counts.to_pylist(), key=lambda d: d["counts"])
    return best["values"]


def _error_counts(errors: pa.ChunkedArray) -> Counter:
    """Error messages grouped by their text before the first ':' (the exception type, usually)."""
    import pyarrow.compute as pc

    out: Counter = Counter()
    for d in pc.value_counts(errors).to_pylist():
        out[str(d["values"]).split(":")[0][:200]] += int(d["counts"])
    return out


# --- the comparison ---------------------------------------------------------------------------------------


def compare(
    table: pa.Table,
    *,
    model_name: str,
    task: str = "auto",
    min_requests: int = 1,
    regression_tolerance: float = 0.01,
    labels: np.ndarray | None = None,
    champion_version: str | None = None,
    challenger_version: str | None = None,
    window: dict[str, Any] | None = None,
    mode: str = "capture",
    slices: list[SliceSpec] | None = None,
    slice_min_rows: int | None = None,
) -> dict[str, Any]:
    """Compare champion (``prediction``) and challenger (``shadow_prediction``) over mirrored rows.

    ``table`` holds the capture columns in ``COLUMNS`` (extra columns are ignored); ``labels`` is aligned
    with it (object/float array, None/NaN where no ground truth arrived). ``challenger_version`` keeps only
    rows the given challenger version scored (a window may span a hot swap). ``slices`` (``core.slices``
    definitions over feature columns, present in ``table`` as ``features.<column>``) add ``report["slices"]``:
    agreement and labelled quality per slice, in the shape the gate's ``slice_improves`` reads.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    t0 = time.perf_counter()
    names = set(table.column_names)
    if "shadow_variant" not in names or table.num_rows == 0:
        raise InsufficientDataError(f"model {model_name!r}: the capture window is empty")
    mirrored = pc.is_valid(table.column("shadow_variant"))
    if challenger_version is not None and "shadow_model_version" in names:
        mirrored = pc.and_(
            mirrored,
            pc.equal(table.column("shadow_model_version").cast(pa.string()), str(challenger_version)),
        )
    if champion_version is not None and "model_version" in names:
        mirrored = pc.and_(
            mirrored, pc.equal(table.column("model_version").cast(pa.string()), str(champion_version))
        )
    table = table.filter(mirrored)
    if labels is not None:
        labels = labels[mirrored.to_numpy(zero_copy_only=False)]
    rows = table.num_rows
    if rows == 0:
        raise InsufficientDataError(
            f"model {model_name!r}: no request in the window was mirrored to challenger "
            f"{'v' + str(challenger_version) if challenger_version else ''} (is the gateway running with "
            f"--shadow challenger?)"
        )
    first_row = to_numpy(table.column("row")) == 0 if "row" in names else np.ones(rows, dtype=bool)
    requests = int(first_row.sum())
    if requests < min_requests:
        raise InsufficientDataError(
            f"model {model_name!r}: only {requests} mirrored request(s) in the window; at least "
            f"{min_requests} are needed to judge (min_requests)"
        )
    champ_col, chall_col = table.column("prediction"), table.column("shadow_prediction")
    champ, chall = to_numpy(champ_col), to_numpy(chall_col)
    err_col = table.column("shadow_error").cast(pa.string())
    has_err = _mask(pc.is_valid(err_col))
    not_scored = _mask(
        pc.fill_null(pc.or_(*(pc.starts_with(err_col, p) for p in NOT_SCORED_PREFIXES)), False)
    )
    errored = has_err & ~not_scored
    attempted = ~not_scored
    champ_ok = _mask(pc.is_valid(champ_col)) & present(champ)
    both = champ_ok & _mask(pc.is_valid(chall_col)) & present(chall) & ~has_err
    champ_v = champion_version or _mode(table.column("model_version"))
    chall_v = challenger_version or _mode(table.column("shadow_model_version"))
    error_counts = _error_counts(err_col.filter(pa.array(errored)))
    attempted_n = int(attempted.sum())
    if attempted_n == 0:
        raise InsufficientDataError(
            f"model {model_name!r}: none of the {rows} mirrored rows was scored by the challenger "
            f"(all dropped or not run: the shadow queue is too small or the gateway stopped)"
        )
    chall_lat = to_numpy(table.column("shadow_latency_ms"))[first_row & attempted & ~errored]
    champ_lat = to_numpy(table.column("latency_ms"))[first_row]
    champion_metrics = {
        "rows": rows,
        "requests": requests,
        "error_rate": float((~champ_ok).sum() / rows),
        **_percentiles(champ_lat[np.isfinite(champ_lat)]),
    }
    candidate_metrics: dict[str, Any] = {
        "rows": attempted_n,
        "requests": int((first_row & attempted).sum()),
        "errors": int(errored.sum()),
        "not_scored": int(not_scored.sum()),
        "error_rate": float(errored.sum() / attempted_n),
        **_percentiles(chall_lat[np.isfinite(chall_lat)]),
    }
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "model_name": model_name,
        "mode": mode,
        "window": window or {},
        "candidate": {"alias": "challenger", "version": chall_v, "metrics": candidate_metrics},
        "champion": {"alias": "champion", "version": champ_v, "metrics": champion_metrics},
        "comparison": {
            "rows": rows,
            "requests": requests,
            "compared_rows": int(both.sum()),
            "errors": {"count": int(errored.sum()), "top": dict(error_counts.most_common(10))},
        },
    }
    if not both.any():
        raise ChallengerFailedError(
            f"model {model_name!r}: challenger v{chall_v} errored on all {attempted_n} mirrored row(s) it "
            f"was sent (most common error: {error_counts.most_common(1)[0][0] if error_counts else 'none'}); "
            f"there is nothing to compare",
            finite(report),
        )
    a, b = champ[both], chall[both]
    if task == "auto":
        task = infer_task(a)
    if task not in ("classification", "regression"):
        raise DataError(
            f"model {model_name!r}: task must be auto, classification or regression, got {task!r}"
        )
    report["task"] = task
    comp = report["comparison"]
    if task == "classification":
        sa, sb = same_kind(a, b)
        agree = sa == sb
        comp["confusion"] = _confusion(sa, sb)
    else:
        a, b = a.astype(float), b.astype(float)
        diff = b - a
        agree = np.abs(diff) <= regression_tolerance * np.maximum(np.abs(a), 1e-12)
        comp["differences"] = _differences(diff)
        comp["tolerance"] = regression_tolerance
    agreement = float(agree.mean())
    lo, hi = wilson(int(agree.sum()), len(agree))
    for side in (candidate_metrics, champion_metrics):
        side.update(agreement=agreement, agreement_ci_low=lo, agreement_ci_high=hi)
    comp["agreement"] = agreement
    if labels is not None:
        _add_label_metrics(report, task, labels[both], a, b)
    if slices:
        columns = {}
        for spec in slices:
            name = FEATURE_PREFIX + spec.column
            if name not in table.column_names:
                raise DataError(
                    f"model {model_name!r}: slice {spec.label!r} needs feature column {spec.column!r}, which "
                    f"the capture does not have (features: {sorted(feature_names(table))[:20]})"
                )
            columns[spec.column] = table.column(name).filter(pa.array(both))
        truth = labels[both] if labels is not None else None
        report["slices"] = slice_report(task, slices, columns, agree, a, b, truth, slice_min_rows)
    comp["seconds"] = round(time.perf_counter() - t0, 3)
    return finite(report)


def slice_report(
    task: str,
    specs: list[SliceSpec],
    columns: dict[str, Any],
    agree: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    truth: np.ndarray | None,
    min_rows: int | None = None,
) -> dict[str, Any]:
    """Per slice of the compared rows: agreement (Wilson interval) on both sides, and each model's labelled
    quality (the catalogue's metrics) on the slice's labelled rows. The evaluation report's ``slices`` shape:
    ``{"definitions", "min_rows", "results": [{"name", "by", "value", "rows", "eligible", "candidate":
    {"metrics"}, "champion": {"metrics"}}]}``, so ``slice_improves(accuracy, ...)`` gates on it."""
    import numpy as np

    from airflow_saga.core.slices import DEFAULT_MIN_ROWS, make_slices

    minimum = DEFAULT_MIN_ROWS if min_rows is None else int(min_rows)
    resolved, cut = make_slices(specs, columns)
    has = None
    if truth is not None:
        import pandas as pd

        has = pd.notna(truth).astype(bool) if truth.dtype == object else ~np.isnan(truth)
    results = []
    for sl in cut:
        idx = sl.index
        ok = int(agree[idx].sum())
        lo, hi = wilson(ok, len(idx))
        base = {"agreement": ok / len(idx), "agreement_ci_low": lo, "agreement_ci_high": hi, "rows": len(idx)}
        champ, chall = dict(base), dict(base)
        unavailable: dict[str, str] = {}
        lab = idx[has[idx]] if has is not None else idx[:0]
        champ["labeled_rows"] = chall["labeled_rows"] = len(lab)
        if len(lab):
            t, pa_, pb = truth[lab], a[lab], b[lab]
            if task == "classification":
                t, pa_, pb = same_kind(t, pa_, pb)
                champ.update(classification_metrics(t, pa_))
                chall.update(classification_metrics(t, pb))
            else:
                t = t.astype(float)
                champ.update(regression_metrics(t, pa_.astype(float)))
                chall.update(regression_metrics(t, pb.astype(float)))
        else:
            unavailable["labels"] = "no ground truth in this slice yet"
        results.append(
            {
                "name": sl.name,
                "by": sl.by,
                "value": sl.value,
                "rows": len(idx),
                "eligible": len(idx) >= minimum,
                "candidate": {"metrics": chall, "unavailable": unavailable},
                "champion": {"metrics": champ, "unavailable": unavailable},
            }
        )
    return {"definitions": [r.to_dict() for r in resolved], "min_rows": minimum, "results": results}


def _confusion(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Champion label (rows) x challenger label (columns), for the most frequent labels."""
    import numpy as np
    import pandas as pd

    inv, labels = pd.factorize(np.concatenate([a, b]), sort=True)
    labels = np.asarray([str(x) for x in labels], dtype=object)
    counts = np.bincount(inv, minlength=len(labels))
    top = np.argsort(-counts)[:MAX_CONFUSION_LABELS]
    k = len(labels)
    ia, ib = inv[: len(a)], inv[len(a) :]
    cm = np.bincount(ia * k + ib, minlength=k * k).reshape(k, k)[np.ix_(top, top)]
    return {
        "labels": [_short(x) for x in labels[top]],
        "matrix": cm.tolist(),
        "axes": "champion x challenger",
    }


def _short(label: str) -> str:
    return label[:-2] if label.endswith(".0") else label


def _differences(diff: np.ndarray) -> dict[str, Any]:
    import numpy as np

    qs = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
    lo, hi = np.quantile(diff, [0.005, 0.995])
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(np.clip(diff, lo, hi), bins=40, range=(lo, hi))
    return {
        "mean": float(diff.mean()),
        "std": float(diff.std()),
        "mean_abs": float(np.abs(diff).mean()),
        "quantiles": {str(q): float(v) for q, v in zip(qs, np.quantile(diff, qs), strict=True)},
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def _add_label_metrics(
    report: dict[str, Any], task: str, truth: np.ndarray, a: np.ndarray, b: np.ndarray
) -> None:
    import numpy as np

    if truth.dtype == object:
        import pandas as pd

        has = pd.notna(truth)
    else:
        has = ~np.isnan(truth)
    n = int(has.sum())
    report["labels"] = {"rows": n, "coverage": float(n / len(truth)) if len(truth) else 0.0}
    for side in ("candidate", "champion"):
        report[side]["metrics"]["labeled_rows"] = n
    if n == 0:
        return
    t, pa_, pb = truth[has], a[has], b[has]
    if task == "classification":
        t, pa_, pb = same_kind(t, pa_, pb)
        champ_m, chall_m = classification_metrics(t, pa_), classification_metrics(t, pb)
        diff = (pb == t).astype(float) - (pa_ == t).astype(float)
        name = "accuracy"
    else:
        t = t.astype(float)
        champ_m, chall_m = regression_metrics(t, pa_), regression_metrics(t, pb)
        diff = np.abs(pa_ - t) - np.abs(pb - t)  # > 0: challenger closer to the truth
        name = "mae_reduction"
    report["champion"]["metrics"].update(champ_m)
    report["candidate"]["metrics"].update(chall_m)
    m, lo, hi = mean_ci(diff)
    # paired difference (challenger better when > 0) with a CLT interval over rows
    report["candidate"]["metrics"].update(
        {f"{name}_gain": m, f"{name}_gain_ci_low": lo, f"{name}_gain_ci_high": hi}
    )


# --- reading and replay -----------------------------------------------------------------------------------


def read_window(
    root: str,
    model_name: str,
    start: Any,
    end: Any,
    *,
    with_labels: bool = True,
    features: list[str] | None = None,
) -> tuple[pa.Table, np.ndarray | None]:
    """The capture columns the comparison needs (plus ``features.<name>`` for ``features``), each
    (inference_id, row) once, and labels aligned with them (None without feedback)."""
    import numpy as np
    import pyarrow as pa

    from airflow_saga.core.capture_scan import iter_capture, scan_feedback
    from airflow_saga.core.drift_stream import Deduplicator

    wanted = {FEATURE_PREFIX + f for f in features or []}
    dedupe = Deduplicator()
    parts = []
    for t in iter_capture(root, model_name, start, end, COLUMNS, features=bool(wanted)):
        if wanted:
            t = t.select([c for c in t.column_names if not c.startswith(FEATURE_PREFIX) or c in wanted])
        if t.num_rows and "inference_id" in t.column_names:
            ids = t.column("inference_id").cast(pa.string()).to_numpy(zero_copy_only=False)
            rows = to_numpy(t.column("row")) if "row" in t.column_names else np.zeros(t.num_rows)
            t = t.filter(pa.array(dedupe.keep(ids, rows)))
        parts.append(t)
    parts = [t for t in parts if t.num_rows]
    table = pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({})
    for c in COLUMNS:
        if c not in table.column_names:
            table = table.append_column(c, pa.nulls(table.num_rows))
    if not with_labels or table.num_rows == 0:
        return table, None
    feedback = scan_feedback(root, model_name, start)
    if feedback.num_rows == 0 or "ground_truth" not in feedback.column_names:
        return table, None
    return table, join_labels(table, feedback)


def replay(
    settings: MlflowSettings,
    *,
    model_name: str,
    dataset: str,
    target: str | None,
    champion_uri: str,
    challenger_uri: str,
    batch_size: int = 256,
) -> tuple[pa.Table, np.ndarray | None]:
    """Offline mode: score ``dataset`` with both models in batches, shaped like a capture window.

    Latency is per batch (like a gateway request of ``batch_size`` rows); an exception in a challenger
    batch is recorded as that batch's ``shadow_error``, as the gateway would.
    """
    import numpy as np
    import pyarrow as pa

    from airflow_saga.core.models import load_pyfunc_model

    frame = _read_dataset(settings, dataset)
    if frame.empty:
        raise InsufficientDataError(f"replay dataset {dataset!r} is empty")
    labels = None
    if target:
        if target not in frame.columns:
            raise DataError(f"replay dataset {dataset!r} has no target column {target!r}")
        labels = frame.pop(target).to_numpy()
        labels = labels.astype(float) if labels.dtype.kind in "biuf" else labels.astype(object)
    champion = load_pyfunc_model(settings, champion_uri)
    challenger = load_pyfunc_model(settings, challenger_uri)
    cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for i, start in enumerate(range(0, len(frame), batch_size)):
        batch = frame.iloc[start : start + batch_size]
        n = len(batch)
        t = time.perf_counter()
        try:
            pa_ = _predict_list(champion, batch)
        except Exception as exc:  # the champion must score the dataset, or the replay means nothing
            raise DataError(
                f"model {model_name!r}: champion {champion_uri} cannot score replay dataset {dataset!r} "
                f"(columns {list(frame.columns)[:8]}...): {type(exc).__name__}: {str(exc)[:400]}"
            ) from exc
        lat_a = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        try:
            pb: list[Any] = _predict_list(challenger, batch)
            error = None
        except Exception as exc:  # the model's own failure is data here, as in the gateway
            pb, error = [None] * n, f"{type(exc).__name__}: {exc}"[:500]
        lat_b = (time.perf_counter() - t) * 1000
        cols["inference_id"] += [f"replay-{i}"] * n
        cols["row"] += list(range(n))
        cols["variant"] += ["champion"] * n
        cols["model_version"] += [None] * n
        cols["prediction"] += pa_
        cols["latency_ms"] += [lat_a] * n
        cols["shadow_variant"] += ["challenger"] * n
        cols["shadow_model_version"] += [None] * n
        cols["shadow_prediction"] += pb
        cols["shadow_latency_ms"] += [lat_b] * n
        cols["shadow_error"] += [error] * n
    table = pa.table({k: pa.array(v) for k, v in cols.items()})
    for c in frame.columns:  # the inputs, as capture has them, so slices can cut replayed rows too
        table = table.append_column(FEATURE_PREFIX + str(c), pa.array(frame[c].to_numpy(), from_pandas=True))
    return table, labels if labels is None else np.asarray(labels)


def _predict_list(model: Any, batch: pd.DataFrame) -> list[Any]:
    import numpy as np

    out = np.asarray(model.predict(batch))
    if out.ndim > 1:
        out = out[:, 0] if out.shape[1] == 1 else out.argmax(axis=1)
    return out.tolist()


def _read_dataset(settings: MlflowSettings, dataset: str) -> pd.DataFrame:
    if dataset.startswith(("runs:/", "mlflow-artifacts:/", "models:/")):
        from airflow_saga.core.evaluation import load_frame

        return load_frame(settings, dataset)
    from airflow_saga.core.datasets import read_source

    return read_source(dataset)


# --- the use case -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class ShadowComparison:
    """What ``run_comparison`` found: the report (None when skipped) and, when skipped, why."""

    report: dict[str, Any] | None
    skipped: str = ""
    champion_version: str | None = None
    challenger_version: str | None = None


def evaluation_slices(client: MlflowClient, model_name: str, version: str) -> list[SliceSpec]:
    """The slice definitions of the version's evaluation report (with the held-out data's bin edges), so
    live traffic is cut into the same slices as the training gate's; [] when it has none."""
    import json
    import tempfile
    from pathlib import Path

    from airflow_saga.core import tags as T
    from airflow_saga.core.slices import SliceSpec

    mv = client.get_model_version(model_name, str(version))
    uri = (mv.tags or {}).get(T.EVAL_REPORT_URI)
    if not uri and mv.run_id:
        uri = client.get_run(mv.run_id).data.tags.get(T.EVAL_REPORT_URI)
    if not uri or not str(uri).startswith("runs:/"):
        return []
    run_id, path = str(uri).removeprefix("runs:/").split("/", 1)
    try:
        with tempfile.TemporaryDirectory(prefix="saga-eval-") as tmp:
            local = client.download_artifacts(run_id, path, tmp)
            report = json.loads(Path(local).read_text())
    except Exception as exc:  # an unreadable report: compare without slices, and say so
        log.warning("cannot read the evaluation report %s of %s v%s: %s", uri, model_name, version, exc)
        return []
    out = []
    for d in (report.get("slices") or {}).get("definitions") or []:
        if isinstance(d, dict) and d.get("column"):
            edges = d.get("resolved_edges") or d.get("edges") or ()
            data = {"column": d["column"], "name": d.get("name")}
            if edges:
                data["edges"] = list(edges)
            elif d.get("max_values"):
                data["max_values"] = d["max_values"]
            out.append(SliceSpec.from_data({k: v for k, v in data.items() if v is not None}))
    return out


def run_comparison(
    settings: MlflowSettings,
    client: MlflowClient,
    *,
    model_name: str,
    capture_root: str | None = None,
    start: Any = None,
    end: Any = None,
    window_source: str = "params",
    min_requests: int = 100,
    task: str = "auto",
    regression_tolerance: float = 0.01,
    replay_dataset: str | None = None,
    replay_target: str | None = None,
    slices: Any = None,
    slice_min_rows: int | None = None,
) -> ShadowComparison:
    """Champion vs challenger of ``model_name`` on the capture window [start, end) (or a replayed dataset):
    the decision-ready report, or a skip with the reason (no challenger, too little mirrored traffic).

    ``slices``: ``core.slices`` definitions (a list, or JSON text); None takes those of the challenger's
    evaluation report, so a slice means the same rows in the training gate and on live traffic.
    """
    from airflow_saga.core import tags as T
    from airflow_saga.core.registry import version_by_alias
    from airflow_saga.core.slices import parse_slices

    champion = version_by_alias(client, model_name, T.CHAMPION)
    challenger = version_by_alias(client, model_name, T.CHALLENGER)
    if challenger is None:
        return ShadowComparison(
            None, f"Model {model_name!r} has no {T.CHALLENGER!r} alias: nothing to shadow-test"
        )
    if champion is None:
        return ShadowComparison(
            None, f"Model {model_name!r} has no {T.CHAMPION!r} alias: nothing to compare with"
        )
    cv, hv = str(champion.version), str(challenger.version)
    specs = (
        parse_slices(slices) if slices not in (None, "", []) else evaluation_slices(client, model_name, hv)
    )
    filters: dict[str, Any] = {}
    if replay_dataset:
        window: dict[str, Any] = {"replay_dataset": str(replay_dataset)}
        table, labels = replay(
            settings,
            model_name=model_name,
            dataset=str(replay_dataset),
            target=str(replay_target) if replay_target else None,
            champion_uri=f"models:/{model_name}/{cv}",
            challenger_uri=f"models:/{model_name}/{hv}",
        )
    else:
        if not capture_root:
            raise DataError("the shadow comparison needs a capture directory or a replay dataset")
        window = {
            "start": None if start is None else start.isoformat(),
            "end": None if end is None else end.isoformat(),
            "source": window_source,
        }
        table, labels = read_window(capture_root, model_name, start, end, features=[s.column for s in specs])
        filters = {"challenger_version": hv}
    log.info(
        "Comparing champion v%s and challenger v%s of %r on %d rows (%s)",
        cv,
        hv,
        model_name,
        table.num_rows,
        window,
    )
    try:
        report = compare(
            table,
            model_name=model_name,
            task=task or "auto",
            min_requests=min_requests,
            regression_tolerance=regression_tolerance,
            labels=labels,
            window=window,
            mode="replay" if replay_dataset else "capture",
            slices=specs or None,
            slice_min_rows=slice_min_rows,
            **filters,
        )
    except InsufficientDataError as exc:
        return ShadowComparison(None, f"Not enough data to judge: {exc}", cv, hv)
    except ChallengerFailedError as exc:
        report = exc.report
        report["challenger_failed"] = str(exc)
    report["champion"]["version"] = cv
    report["candidate"]["version"] = hv
    return ShadowComparison(report, "", cv, hv)


# --- the gate: decide on a report, then act ---------------------------------------------------------------


def gate(
    client: MlflowClient,
    model_name: str,
    report: dict[str, Any],
    *,
    conditions: Any,
    on_pass: Any = "keep",
    on_fail: Any = "keep",
    by: str = "airflow-saga shadow gate",
    via: str = "airflow",
    where: str = "",
    policy: Any = None,
) -> dict[str, Any]:
    """Judge a shadow ``report`` (``run_comparison``) with the gate's condition language, log it on the
    challenger's run, and apply the action: ``promote`` (only if the champion it was compared with still
    holds the alias; Approved versions only), ``remove`` the challenger alias (only if it is still the
    version judged), or ``keep`` testing. The same use case the ``ShadowGateOperator`` runs, for a script or
    a notebook. ``where`` names the caller in the promotion history's reason (e.g. the DAG run).

    Returns ``{"action", "decision", "version", "run_id", "report_uri", "html_uri", "promotion"}``.
    Bad ``on_pass``/``on_fail`` values raise ``DataError`` before anything is logged or moved.
    ``policy``: the governance policy for the alias moves (None: ``core.policy.policy_for``).
    """
    from airflow_saga.core import tags as T
    from airflow_saga.core.conditions import evaluate
    from airflow_saga.core.errors import AliasMovedError
    from airflow_saga.core.monitoring import log_shadow_report
    from airflow_saga.core.outcomes import ShadowAction
    from airflow_saga.core.promotion import UNSET, promote, remove_alias

    passed_action = ShadowAction.parse(on_pass, "on_pass")
    failed_action = ShadowAction.parse(on_fail, "on_fail")
    try:
        version = str(report["candidate"]["version"])
    except (KeyError, TypeError):
        raise DataError(
            "the shadow report has no candidate.version: is it a run_comparison report?"
        ) from None
    if report.get("challenger_failed"):
        decision = {
            "passed": False,
            "expression": str(conditions),
            "checks": [],
            "reasons": [report["challenger_failed"]],
        }
    else:
        decision = evaluate(conditions, report)
    action = passed_action if decision["passed"] else failed_action
    decision["action"] = action.value
    reason = f"shadow comparison {'passed' if decision['passed'] else 'blocked'}"
    reason += f" in {where}" if where else ""
    reason += f": {decision['expression']}"
    if decision["reasons"]:
        reason += " (" + "; ".join(decision["reasons"])[:600] + ")"
    logged = log_shadow_report(client, model_name, version, report, decision)
    log.info("Shadow report of %r v%s logged on run %s: %s", model_name, version, logged["run_id"], reason)
    result: dict[str, Any] = {
        "action": action.value,
        "decision": decision,
        "version": version,
        **logged,
        "promotion": None,
    }
    if action is ShadowAction.PROMOTE:
        # The comparison was against this champion: promote only if it still holds the alias.
        compared = (report.get("champion") or {}).get("version")
        expect = UNSET if compared is None else str(compared)
        res = promote(
            client,
            model_name,
            version,
            T.CHAMPION,
            by=by,
            reason=reason,
            via=via,
            expect_holder=expect,
            policy=policy,
        )
        result["promotion"] = res.as_dict()
        log.info("Promoted %r v%s to champion (previous: %s)", model_name, version, res.previous)
    elif action is ShadowAction.REMOVE:
        # Inside the governance lock: drop the challenger only if it is still the version judged.
        try:
            res = remove_alias(
                client,
                model_name,
                T.CHALLENGER,
                by=by,
                reason=reason,
                via=via,
                expect_holder=version,
                policy=policy,
            )
        except AliasMovedError as exc:
            log.warning("Not removing the challenger: %s", exc)
        else:
            result["promotion"] = res.as_dict()
            log.info("Removed the challenger alias from %r v%s", model_name, version)
    else:
        log.info("Keeping v%s of %r as challenger: testing continues", version, model_name)
    return result
