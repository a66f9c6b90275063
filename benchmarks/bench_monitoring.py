"""Benchmark: drift (ours vs raw Evidently DataDriftPreset defaults) and shadow comparison over 1M rows.

Usage: python benchmarks/bench_monitoring.py [--rows 1000000] [--features 20] [--fmt parquet|jsonl]

Capture is written by the gateway's own writer (core.capture). Every measured step runs in a fresh child
process, so wall time includes imports and reading the capture, and peak RSS (ru_maxrss of the child) is
that step's alone (measured by /usr/bin/time -f %M around the child). Reference: 50k rows (training's bounded sample), standard normal; "shift" moves half of
the features by 0.3 sigma (the size PSI missed in our notes), "no shift" is a fresh draw.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
t0 = time.perf_counter()
kind, root, n_features = {kind!r}, {root!r}, {n_features}
import numpy as np, pandas as pd
ref = pd.read_parquet(root + "/reference.parquet")
out = {{}}
if kind == "raw":
    from airflow_saga.core.drift import read_current
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset
    cur = read_current(root, "m", None, None)
    t1 = time.perf_counter()
    snap = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur), Dataset.from_pandas(ref))
    out["compute_s"] = time.perf_counter() - t1
    for m in snap.dict()["metrics"]:
        if isinstance(m["value"], dict) and "share" in m["value"]:
            out["drift"] = bool(m["value"]["share"] >= 0.5); out["share"] = m["value"]["share"]
elif kind == "ours":
    from airflow_saga.core import baselines, drift
    cur = drift.read_current(root, "m", None, None)
    t1 = time.perf_counter()
    bl = baselines.Baseline("m", "1", "x", "y", baselines.compute_stats(ref), ref)
    res, snap = drift.compute_drift(bl, cur)
    snap.save_html(root + "/ours.html")
    out["compute_s"] = time.perf_counter() - t1
    out["drift"], out["share"] = res["dataset_drift"], res["drift_share"]
else:
    from airflow_saga.core import shadow
    table, labels = shadow.read_window(root, "m", None, None)
    t1 = time.perf_counter()
    rep = shadow.compare(table, model_name="m", labels=labels)
    out["compute_s"] = time.perf_counter() - t1
    out["agreement"] = rep["comparison"]["agreement"]
out["wall_s"] = time.perf_counter() - t0
print("RESULT " + json.dumps(out))
"""


def child(kind: str, root: str, n_features: int) -> dict:
    code = CHILD.format(repo=str(REPO), kind=kind, root=root, n_features=n_features)
    t = time.perf_counter()
    # /usr/bin/time measures the grandchild it forks itself: Linux keeps ru_maxrss across execve, so a child
    # forked straight from this (large) process would report this process's peak as its own.
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB %M", sys.executable, "-c", code]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    res = json.loads(line[7:])
    rss = [x for x in proc.stderr.splitlines() if x.startswith("MAXRSS_KB ")]
    res["rss_mb"] = int(rss[-1].split()[1]) / 1024
    res["process_s"] = time.perf_counter() - t
    return res


def make(root: Path, rows: int, n_features: int, shift: float, fmt: str) -> None:
    import pandas as pd

    from tests.support.capture_data import features, write_capture

    sys.path.insert(0, str(REPO))
    pd.DataFrame(
        features(50_000, n_features, seed=1), columns=[f"f{i}" for i in range(n_features)]
    ).to_parquet(root / "reference.parquet")
    write_capture(root, "m", features(rows, n_features, shift=shift, seed=2), fmt=fmt, rows_per_request=10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--fmt", default="parquet", choices=["parquet", "jsonl"])
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    rows = []
    with tempfile.TemporaryDirectory(prefix="saga-bench-mon-") as tmp:
        for label, shift in (("shift 0.3 sigma", 0.3), ("no shift", 0.0)):
            root = Path(tmp) / label.replace(" ", "_")
            root.mkdir()
            t = time.perf_counter()
            make(root, args.rows, args.features, shift, args.fmt)
            print(
                f"[{label}] wrote {args.rows} rows ({args.fmt}) in {time.perf_counter() - t:.1f}s", flush=True
            )
            raw = child("raw", str(root), args.features)
            ours = child("ours", str(root), args.features)
            rows.append((label, raw, ours))
            print(f"[{label}] raw={raw} ours={ours}", flush=True)
        shadow = child("shadow", str(Path(tmp) / "no_shift"), args.features)
    print(f"\nDrift, {args.rows:,} captured rows x {args.features} features ({args.fmt}), reference 50k rows")
    print(
        f"{'case':<16} {'':<6} {'wall s':>8} {'compute s':>10} {'peak RSS MB':>12} {'drift':>6} {'share':>6}"
    )
    for label, raw, ours in rows:
        for name, r in (("raw", raw), ("ours", ours)):
            print(
                f"{label:<16} {name:<6} {r['process_s']:>8.1f} {r['compute_s']:>10.1f} {r['rss_mb']:>12.0f} "
                f"{r['drift']!s:>6} {r['share']:>6.2f}"
            )
        print(
            f"{label:<16} {'ratio':<6} {ours['process_s'] / raw['process_s']:>8.2f} "
            f"{ours['compute_s'] / raw['compute_s']:>10.2f}   same verdict: {ours['drift'] == raw['drift']}"
        )
    print(
        f"\nShadow comparison, {args.rows:,} rows: process {shadow['process_s']:.1f}s (read+compare "
        f"{shadow['wall_s']:.1f}s, compare {shadow['compute_s']:.2f}s), peak RSS {shadow['rss_mb']:.0f} MB, "
        f"agreement {shadow['agreement']:.4f}"
    )
    print(f"load average at end: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
