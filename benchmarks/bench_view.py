"""Benchmark: the Models view for a model with 200 versions and 1,000 history entries, on a real stack.

Usage: python benchmarks/bench_view.py [--versions 200] [--history 1000] [--repeat 5]

Starts an MLflow server (SQLite) and Airflow's API server (with the saga plugin, SimpleAuthManager), seeds one
model through saga's own calls (``register_version`` with lineage and metric tags and approvals, and the
promotion history through ``core.promotion``, so it is stored however ``core.promotion`` stores it),
then times the view's endpoints over HTTP with a bearer token. Every history entry is a real
``promotion.promote`` (the challenger moving through the versions).

* cold: the first request of each endpoint after the API server started (builds the app, imports MLflow and
  Jinja, compiles templates, builds the MLflow client);
* warm: the median of ``--repeat`` later requests.

Reference, measured in the same run against the same server: the registry reads the model page cannot avoid
(``get_registered_model`` + every page of ``search_model_versions`` + ``promotion.history``), done with a
plain ``MlflowClient`` in this process. Also: the alias timeline drawn by ``airflow_saga.ui.svg`` against
matplotlib's SVG backend drawing the same bars (why the view draws its own SVG).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def seed(client, name: str, n_versions: int, n_history: int) -> None:
    from airflow_saga.core import promotion
    from airflow_saga.core import tags as T
    from airflow_saga.core.registry import register_version

    exp = client.create_experiment(f"bench-{name}")
    t0 = time.perf_counter()
    for i in range(1, n_versions + 1):
        run = client.create_run(exp)
        tags = {
            T.metric_tag("accuracy"): repr(0.9 + (i % 50) / 1000),
            T.metric_tag("f1"): repr(0.88 + (i % 40) / 1000),
            T.GATE_DECISION: "passed",
            T.DATASET_DIGEST: f"{i:016x}",
            T.DATASET_SOURCE: "sklearn:breast_cancer",
            T.AIRFLOW_DAG_ID: "saga_training_pipeline",
            T.AIRFLOW_RUN_ID: f"manual__{i}",
            T.AIRFLOW_RUN_URL: f"http://127.0.0.1:8080/dags/saga_training_pipeline/runs/manual__{i}",
        }
        register_version(
            client,
            name,
            model_uri=f"runs:/{run.info.run_id}/model",
            run_id=run.info.run_id,
            tags=tags,
            approval_status=T.APPROVED,
            approved_by=f"user{i % 7}",
        )
    print(f"  {n_versions} versions in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    promotion.promote(client, name, "1", T.CHAMPION, by="bench", reason="first champion")
    promotion.promote(client, name, "2", T.CHALLENGER, by="bench", reason="candidate 2")
    written, holder = 2, 2
    while written < n_history:
        holder = holder % n_versions + 1
        holder = 2 if holder == 1 else holder
        res = promotion.promote(
            client, name, str(holder), T.CHALLENGER, by=f"user{holder % 7}", reason="next"
        )
        written += len(res.entries)
        if written % 50 == 0:
            print(f"  {written} history entries ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"  {written} history entries in {time.perf_counter() - t0:.0f} s", flush=True)


def timed(fn, repeat: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return first, statistics.median(runs)


def matplotlib_timeline(tl: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from airflow_saga.core.model_story import parse_iso

    fig, ax = plt.subplots(figsize=(11, 1.6))
    for lane, (alias, holdings) in enumerate(tl["lanes"].items()):
        bars = []
        for h in holdings:
            a = parse_iso(h["from"]).timestamp()
            b = parse_iso(h["to"]).timestamp() if h["to"] else parse_iso(tl["end"]).timestamp()
            bars.append((a, max(b - a, 1)))
        ax.broken_barh(bars, (lane, 0.8))
        ax.text(0, lane, alias)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return buf.getvalue()


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers we started on SIGTERM too
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", type=int, default=200)
    ap.add_argument("--history", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import requests

    from airflow_saga.core import model_story, promotion
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client
    from airflow_saga.devstack.airflow import AirflowStack
    from airflow_saga.devstack.mlflow_server import MlflowServer
    from airflow_saga.devstack.procs import spawn, stop, wait_http
    from airflow_saga.ui import svg

    root = Path(tempfile.mkdtemp(prefix="saga-bench-view-"))
    print(f"load average at start: {os.getloadavg()}", flush=True)
    mlflow = MlflowServer(root / "mlflow").start()
    api = None
    try:
        client = build_client(MlflowSettings(mlflow.url))
        name = "bench-view"
        print(f"seeding {args.versions} versions and {args.history} history entries ...", flush=True)
        seed(client, name, args.versions, args.history)
        conn = json.dumps({"conn_type": "mlflow", "host": mlflow.url})
        stack = AirflowStack(root / "airflow", REPO / "dags", extra_env={"AIRFLOW_CONN_MLFLOW_DEFAULT": conn})
        res = stack.airflow("db", "migrate")
        assert res.returncode == 0, res.stderr[-2000:]
        api = spawn(
            [
                str(Path(sys.executable).parent / "airflow"),
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(stack.port),
            ],
            stack.home / "logs" / "api-server.log",
            stack.env,
        )
        wait_http(f"{stack.url}/api/v2/version", 240, api, stack.home / "logs" / "api-server.log", ok=(200,))
        token = requests.post(
            f"{stack.url}/auth/token", json={"username": "admin", "password": "admin"}, timeout=60
        ).json()["access_token"]
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"

        def get(path: str):
            def call() -> None:
                r = s.get(f"{stack.url}/saga{path}", timeout=300)
                assert r.status_code == 200, (path, r.status_code, r.text[:500])

            return call

        def reference() -> None:
            client.get_registered_model(name)
            model_story.search_versions(client, name)
            promotion.history(client, name)

        rows = []
        ref_cold, ref_warm = timed(reference, args.repeat)
        rows.append(("reference: registry reads (model + all versions + history)", ref_cold, ref_warm))
        for label, path in (
            ("GET /saga/models/{name} (HTML: tables, timeline, charts)", f"/models/{name}"),
            ("GET /saga/api/models/{name} (JSON story)", f"/api/models/{name}"),
            ("GET /saga/models/ (model list)", "/models/"),
            (
                f"GET /saga/models/{{name}}/versions/{args.versions} (version page)",
                f"/models/{name}/versions/{args.versions}",
            ),
        ):
            cold, warm = timed(get(path), args.repeat)
            rows.append((label, cold, warm))
        story = model_story.model_story(client, name)
        n_hist = len(story["history"])
        svg_cold, svg_warm = timed(lambda: svg.timeline(story["timeline"]), args.repeat)
        mpl_cold, mpl_warm = timed(lambda: matplotlib_timeline(story["timeline"]), args.repeat)
        page_bytes = len(s.get(f"{stack.url}/saga/models/{name}", timeout=300).content)

        print()
        print(
            f"model: {len(story['versions'])} versions, {n_hist} history entries; HTML page {page_bytes / 1e6:.2f} MB"
        )
        print(f"{'endpoint':<72} {'cold s':>8} {'warm s':>8} {'warm vs ref':>12}")
        for label, cold, warm in rows:
            print(f"{label:<72} {cold:>8.3f} {warm:>8.3f} {warm / ref_warm:>11.2f}x")
        print()
        print(
            f"{'alias timeline, ' + str(n_hist) + ' entries':<72} {'first s':>8} {'median s':>8} {'ratio':>12}"
        )
        print(f"{'matplotlib SVG backend (reference)':<72} {mpl_cold:>8.3f} {mpl_warm:>8.4f} {1:>11.2f}x")
        print(
            f"{'airflow_saga.ui.svg.timeline':<72} {svg_cold:>8.3f} {svg_warm:>8.4f} {svg_warm / mpl_warm:>11.3f}x"
        )
        print(f"\nload average at end: {os.getloadavg()}")
    finally:
        if api is not None:
            stop(api)
        mlflow.stop()


if __name__ == "__main__":
    main()
