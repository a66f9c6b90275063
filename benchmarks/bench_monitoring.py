"""Benchmark: drift (ours, streamed, vs raw Evidently DataDriftPreset and vs the exact full-window tests) and
the shadow comparison, at 1M captured rows; and our streamed drift at 10M rows.

Usage: python benchmarks/bench_monitoring.py [--rows 1000000] [--big-rows 10000000] [--features 20]
       [--fmt parquet|jsonl] [--skip-raw]

Capture at ``--rows`` is written by the gateway's own writer (core.capture). The ``--big-rows`` window is
written in bulk with pyarrow in exactly the writer's Parquet schema and hive layout (the writer's per-request
Python path would take ~25 min for 10M rows here); the reader cannot tell them apart. Every measured step
runs in a fresh child process, so wall time includes imports and reading the capture, and peak RSS is that
step's alone (``/usr/bin/time -f %M`` around the child). Reference: 50k rows (training's bounded sample),
standard normal; "shift" moves half of the features by 0.3 sigma (the size PSI missed in our notes), "no
shift" is a fresh draw. "exact" runs Evidently's registered stat test on every full column (the previous
implementation: the window as one DataFrame), the reference verdict the streamed one must match; at
``--big-rows`` the window does not fit that way, so "exact" reads one feature's full column at a time
(all 10M values) and runs the same test on it.
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
CASES = (("shift", "shift 0.3 sigma", 0.3), ("no-shift", "no shift", 0.0))

CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
t0 = time.perf_counter()
kind, root = {kind!r}, {root!r}
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
elif kind == "exact":
    from airflow_saga.core.drift import read_current
    from airflow_saga.core.drift_stream import evidently_test
    cur = read_current(root, "m", None, None)
    t1 = time.perf_counter()
    scores, drifted = {{}}, 0
    for c in ref.columns:
        r = evidently_test(ref[c], cur[c], "numerical", None, None)
        scores[c] = r["score"]; drifted += r["drifted"]
    out["compute_s"] = time.perf_counter() - t1
    out["share"] = drifted / len(ref.columns); out["drift"] = out["share"] >= 0.5; out["scores"] = scores
elif kind == "exact_cols":
    # the exact full-window test for windows too large to hold at once: one feature's column at a time
    import glob
    import pyarrow as pa, pyarrow.parquet as pq
    from airflow_saga.core.drift_stream import evidently_test
    files = sorted(glob.glob(root + "/m/**/*.parquet", recursive=True))
    t1 = time.perf_counter()
    scores, drifted = {{}}, 0
    for c in ref.columns:
        parts = []
        for f in files:
            t = pq.read_table(f, columns=["features." + c]).flatten()
            parts.append(t.column(t.num_columns - 1).to_numpy())
        cur = pd.Series(np.concatenate(parts))
        del parts
        r = evidently_test(ref[c], cur, "numerical", None, None)
        scores[c] = r["score"]; drifted += r["drifted"]
        del cur
    out["compute_s"] = time.perf_counter() - t1
    out["share"] = drifted / len(ref.columns); out["drift"] = out["share"] >= 0.5; out["scores"] = scores
elif kind == "ours":
    from airflow_saga.core import baselines, drift
    from airflow_saga.core.capture_scan import iter_capture
    bl = baselines.Baseline("m", "1", "x", "y", baselines.compute_stats(ref), ref)
    acc = drift.WindowDrift(bl, drift.DriftConfig(), seed=1)
    seen = drift.VersionRows("1")
    chunks = iter_capture(root, "m", None, None, drift.META_COLUMNS, features=True)
    for t in drift.version_chunks(chunks, "1", seen):
        acc.update(t)
    t1 = time.perf_counter()
    res, snap = acc.result(model_name="m")
    snap.save_html(root + "/ours.html")
    out["compute_s"] = time.perf_counter() - t1
    out["drift"], out["share"] = res["dataset_drift"], res["drift_share"]
    out["rows"] = res["window"]["rows"]
    out["scores"] = {{c: r["score"] for c, r in res["features"].items()}}
    out["max_error_bound"] = max(r.get("error_bound", 0.0) for r in res["features"].values())
    out["verdict_exact"] = res["verdict_exact"]
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


def child(kind: str, root: str) -> dict:
    code = CHILD.format(repo=str(REPO), kind=kind, root=root)
    t = time.perf_counter()
    # /usr/bin/time measures the grandchild it forks itself: Linux keeps ru_maxrss across execve, so a child
    # forked straight from this (large) process would report this process's peak as its own.
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB %M", sys.executable, "-c", code]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if proc.returncode:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    res = json.loads(line[7:])
    rss = [x for x in proc.stderr.splitlines() if x.startswith("MAXRSS_KB ")]
    res["rss_mb"] = int(rss[-1].split()[1]) / 1024
    res["process_s"] = time.perf_counter() - t
    return res


def _reference(root: Path, n_features: int) -> None:
    import pandas as pd

    from tests.support.capture_data import features

    pd.DataFrame(
        features(50_000, n_features, seed=1), columns=[f"f{i}" for i in range(n_features)]
    ).to_parquet(root / "reference.parquet")


def make(root: Path, rows: int, n_features: int, shift: float, fmt: str) -> None:
    from tests.support.capture_data import features, write_capture

    _reference(root, n_features)
    write_capture(root, "m", features(rows, n_features, shift=shift, seed=2), fmt=fmt, rows_per_request=10)


def make_bulk(root: Path, rows: int, n_features: int, shift: float, per_file: int = 500_000) -> None:
    """``rows`` capture rows in the writer's Parquet schema and layout, one hour partition, 500k per file."""
    import datetime as dt

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    _reference(root, n_features)
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    part = root / "m" / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
    part.mkdir(parents=True)
    rng = np.random.default_rng(2)
    names = [f"f{i}" for i in range(n_features)]
    for k, off in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - off)
        x = rng.normal(size=(n, n_features))
        x[:, : n_features // 2] += shift
        req = (off + np.arange(n)) // 10
        stamp = [
            (hour + dt.timedelta(seconds=3599 * (off + i) / rows)).isoformat(timespec="microseconds")
            for i in range(0, n, 10)
        ]
        ts = pa.array(np.repeat(np.asarray(stamp, dtype=object), 10)[:n], pa.string())
        pred = (x[:, 0] > 0).astype(np.int64)
        table = pa.table(
            {
                "inference_id": pa.array(np.char.add("req-", req.astype(str)), pa.string()),
                "row": pa.array((off + np.arange(n)) % 10, pa.int64()),
                "timestamp": ts,
                "model_name": pa.array(np.full(n, "m", dtype=object), pa.string()),
                "variant": pa.array(np.full(n, "champion", dtype=object), pa.string()),
                "model_version": pa.array(np.full(n, "1", dtype=object), pa.string()),
                "features": pa.StructArray.from_arrays([pa.array(x[:, i]) for i in range(n_features)], names),
                "prediction": pa.array(pred),
                "latency_ms": pa.array(rng.gamma(2.0, 2.0, n)),
                "shadow_variant": pa.array(np.full(n, "challenger", dtype=object), pa.string()),
                "shadow_model_version": pa.array(np.full(n, "2", dtype=object), pa.string()),
                "shadow_prediction": pa.array(pred),
                "shadow_latency_ms": pa.array(rng.gamma(2.0, 3.0, n)),
                "shadow_error": pa.nulls(n),
            }
        )
        pq.write_table(table, part / f"bulk-{k:06d}.parquet")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big-rows", type=int, default=10_000_000, help="0 to skip the big window")
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--fmt", default="parquet", choices=["parquet", "jsonl"])
    ap.add_argument("--skip-raw", action="store_true", help="skip raw Evidently (the slowest step)")
    ap.add_argument(
        "--cases",
        default="shift,no-shift",
        help="which cases to run (comma-separated: shift, no-shift); --rows 0 runs only the big window",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    rows = []
    wanted = {c.strip() for c in args.cases.split(",")}
    cases = [(label, shift) for key, label, shift in CASES if key in wanted]
    shadow = None
    with tempfile.TemporaryDirectory(prefix="saga-bench-mon-") as tmp:
        for label, shift in cases if args.rows else ():
            root = Path(tmp) / label.replace(" ", "_")
            root.mkdir()
            t = time.perf_counter()
            make(root, args.rows, args.features, shift, args.fmt)
            print(
                f"[{label}] wrote {args.rows} rows ({args.fmt}) in {time.perf_counter() - t:.1f}s", flush=True
            )
            raw = None if args.skip_raw else child("raw", str(root))
            exact = child("exact", str(root))
            ours = child("ours", str(root))
            rows.append((label, args.rows, raw, exact, ours))
            print(f"[{label}] raw={raw} exact={exact} ours={ours}", flush=True)
        if rows:
            shadow = child("shadow", str(Path(tmp) / rows[-1][0].replace(" ", "_")))
        big = []
        if args.big_rows:
            for label, shift in cases:
                root = Path(tmp) / ("big_" + label.replace(" ", "_"))
                root.mkdir()
                t = time.perf_counter()
                make_bulk(root, args.big_rows, args.features, shift)
                print(
                    f"[big {label}] wrote {args.big_rows} rows in {time.perf_counter() - t:.1f}s", flush=True
                )
                res = child("ours", str(root))
                ex = child("exact_cols", str(root))
                big.append((label, res, ex))
                print(f"[big {label}] ours={res} exact={ex}", flush=True)
    if rows:
        print(f"\nDrift, {args.rows:,} captured rows x {args.features} features ({args.fmt}), reference 50k")
        print(
            f"{'case':<16} {'':<6} {'wall s':>8} {'compute s':>10} {'peak RSS MB':>12} {'drift':>6} {'share':>6}"
        )
    for label, _n, raw, exact, ours in rows:
        for name, r in (("raw", raw), ("exact", exact), ("ours", ours)):
            if r is None:
                continue
            print(
                f"{label:<16} {name:<6} {r['process_s']:>8.1f} {r['compute_s']:>10.1f} {r['rss_mb']:>12.0f} "
                f"{r['drift']!s:>6} {r['share']:>6.2f}"
            )
        gap = max(abs(ours["scores"][c] - exact["scores"][c]) for c in exact["scores"])
        ratio = f"vs raw {ours['process_s'] / raw['process_s']:.2f}x, " if raw else ""
        print(
            f"{label:<16} {'ours':<6} {ratio}vs exact {ours['process_s'] / exact['process_s']:.2f}x; same verdict "
            f"as exact: {ours['drift'] == exact['drift']}, as raw: {raw is None or ours['drift'] == raw['drift']}; "
            f"max |score - exact| {gap:.2e} (bound {ours['max_error_bound']:.2e})"
        )
    if big:
        print(
            f"\nDrift, {args.big_rows:,} rows x {args.features} features (Parquet, bulk-written), reference 50k"
        )
    for label, r, ex in big:
        gap = max(abs(r["scores"][c] - ex["scores"][c]) for c in ex["scores"])
        print(
            f"{label:<16} ours:  wall {r['process_s']:.1f}s, peak RSS {r['rss_mb']:.0f} MB, drift {r['drift']} "
            f"(share {r['share']:.2f}), rows judged {r['rows']:,}, max error bound {r['max_error_bound']:.2e}, "
            f"verdict exact {r['verdict_exact']}"
        )
        print(
            f"{label:<16} exact (one full column at a time): wall {ex['process_s']:.1f}s, peak RSS "
            f"{ex['rss_mb']:.0f} MB, drift {ex['drift']} (share {ex['share']:.2f}); same verdict: "
            f"{r['drift'] == ex['drift']}, max |score - exact| {gap:.2e}; ours/exact time "
            f"{r['process_s'] / ex['process_s']:.2f}x"
        )
    if shadow:
        print(
            f"\nShadow comparison, {args.rows:,} rows: process {shadow['process_s']:.1f}s (read+compare "
            f"{shadow['wall_s']:.1f}s, compare {shadow['compute_s']:.2f}s), peak RSS {shadow['rss_mb']:.0f} MB, "
            f"agreement {shadow['agreement']:.4f}"
        )
    print(f"load average at end: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
