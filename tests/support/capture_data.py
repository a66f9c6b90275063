"""Synthetic capture windows written by ``core.capture.CaptureWriter`` (the gateway's own writer).

Used by monitoring unit tests and the benchmark: champion/challenger predictions, latencies, errors and
features with an optional injected shift, all through the real writer and file layout.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_saga.core.capture import CaptureEntry, CaptureWriter

if TYPE_CHECKING:
    from pathlib import Path


def features(n: int, n_features: int = 20, *, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    """Standard-normal features; ``shift`` (in standard deviations) is added to the first half of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features))
    if shift:
        x[:, : max(1, n_features // 2)] += shift
    return x


def write_capture(
    root: str | Path,
    model: str,
    x: np.ndarray,
    *,
    columns: list[str] | None = None,
    rows_per_request: int = 10,
    fmt: str = "jsonl",
    start_ts: float | None = None,
    spacing_s: float = 0.01,
    champion_version: str = "1",
    challenger_version: str | None = "2",
    challenger_error: str | None = None,
    challenger_flip: float = 0.05,
    regression: bool = False,
    seed: int = 0,
    id_prefix: str = "req",
) -> dict[str, Any]:
    """Write ``x`` as capture rows. Classification: champion predicts ``x0 > 0``; the challenger agrees
    except on a ``challenger_flip`` share of rows. Regression: champion ``x0 + x1``, challenger adds noise.
    Returns the truth labels (per row) and the window bounds."""
    rng = np.random.default_rng(seed)
    n, k = x.shape
    columns = columns or [f"f{i}" for i in range(k)]
    if regression:
        truth = x[:, 0] + x[:, 1] + rng.normal(scale=0.1, size=n)
        champ = x[:, 0] + x[:, 1]
        chall = champ + rng.normal(scale=0.05, size=n)
    else:
        truth = (x[:, 0] + rng.normal(scale=0.3, size=n) > 0).astype(int)
        champ = (x[:, 0] > 0).astype(int)
        flip = rng.random(n) < challenger_flip
        chall = np.where(flip, 1 - champ, champ)
    start_ts = start_ts if start_ts is not None else time.time() - 1800
    w = CaptureWriter(root, model, fmt=fmt, flush_interval=3600)
    ids = []
    values = x.tolist()
    champ_l, chall_l = champ.tolist(), chall.tolist()
    for r, i in enumerate(range(0, n, rows_per_request)):
        j = min(n, i + rows_per_request)
        iid = f"{id_prefix}-{r}"
        ids.append(iid)
        w.append(
            CaptureEntry(
                iid,
                start_ts + r * spacing_s,
                "champion",
                champion_version,
                columns,
                values[i:j],
                champ_l[i:j],
                float(rng.gamma(2.0, 2.0)),
                shadow_variant="challenger" if challenger_version else None,
                shadow_model_version=challenger_version,
                shadow_predictions=None if challenger_error or not challenger_version else chall_l[i:j],
                shadow_latency_ms=float(rng.gamma(2.0, 3.0)) if challenger_version else None,
                shadow_error=challenger_error,
            )
        )
        if len(w._entries) >= 20_000:
            w.flush()
    w.flush()
    end_ts = start_ts + (n // rows_per_request + 1) * spacing_s + 1
    return {"truth": truth, "ids": ids, "start": start_ts - 1, "end": end_ts, "writer": w}


def write_feedback(
    w: CaptureWriter, ids: list[str], truth: np.ndarray, rows_per_request: int, share: float = 1.0
) -> int:
    """Row-specific ground truth for the first ``share`` of requests."""
    n_req = int(len(ids) * share)
    now = time.time()
    count = 0
    for r in range(n_req):
        for row in range(rows_per_request):
            idx = r * rows_per_request + row
            if idx >= len(truth):
                break
            w.append_feedback(ids[r], truth[idx].item(), row, now)
            count += 1
    w.flush()
    return count
