"""Benchmark the training pipeline against plain references measured in the same run.

Prints three tables:
1. DAG parse time of each shipped DAG file vs a bare one-task DAG (fresh process each, median of N).
2. End-to-end pipeline (train -> evaluate -> gate -> register, via ``dag.test()``) vs a plain Python script
   doing the same train/evaluate/log/register with MLflow's fluent API against the same MLflow server, on a
   small dataset and on one whose training takes about a minute.
3. The train step on a cache hit vs uncached.

Run:  .venv/bin/python benchmarks/bench_pipeline.py [--repeat 3] [--big-rows 60000] [--skip-big] [--parse-only]
Note: this machine sets PYTHONDONTWRITEBYTECODE=1; run with PYTHONPYCACHEPREFIX set (as scripts/*.sh do)
or cold imports are ~2.5x slower than users see.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BARE_DAG = """
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG(dag_id="bare", schedule=None):
    EmptyOperator(task_id="noop")
"""

BARE_HITL_DAG = """
from datetime import timedelta
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
with DAG(dag_id="bare_hitl", schedule=None):
    EmptyOperator(task_id="noop") >> ApprovalOperator(
        task_id="approve", subject="ok?", response_timeout=timedelta(hours=1))
"""

PARSE = """
import sys, time
from airflow.dag_processing.dagbag import DagBag
import airflow.sdk
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
dt = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
print(dt)
"""


def parse_times(files: list[Path], repeat: int, env: dict) -> dict[str, float]:
    out = {}
    for f in files:
        samples = []
        for _ in range(repeat):
            r = subprocess.run(
                [sys.executable, "-c", PARSE, str(f)], capture_output=True, text=True, env=env, check=True
            )
            samples.append(float(r.stdout.strip().splitlines()[-1]))
        out[f.name] = statistics.median(samples)
    return out


PLAIN = """
import json, sys, time, math
import mlflow, mlflow.sklearn, mlflow.data
from mlflow import MlflowClient
import numpy as np, pandas as pd
from sklearn.model_selection import train_test_split
from sklearn import metrics as m
from importlib import import_module
from importlib.metadata import version
cfg = json.loads(sys.argv[1])
mlflow.set_tracking_uri(cfg["url"])
def load():
    if cfg["source"].startswith("sklearn:"):
        import sklearn.datasets as skd
        f = getattr(skd, "load_" + cfg["source"][8:])(as_frame=True).frame
        f.columns = [str(c).replace(" ", "_") for c in f.columns]
        return f
    return pd.read_parquet(cfg["source"])
def once(tag, case=None):
    global cfg
    if case:
        keep, cfg = cfg, {**cfg, **case}
        try:
            return once(tag)
        finally:
            cfg = keep
    t0 = time.perf_counter()
    frame = load()
    tr, te = train_test_split(frame, test_size=0.25, random_state=42, stratify=frame["target"])
    feats = [c for c in frame.columns if c != "target"]
    mod, _, cls = cfg["estimator"].rpartition(".")
    est = getattr(import_module(mod), cls)(**cfg["params"])
    mlflow.set_experiment("plain/" + cfg["name"])
    with mlflow.start_run() as run:
        mlflow.log_params(cfg["params"])
        mlflow.log_input(mlflow.data.from_pandas(tr, source=cfg["source"] if not cfg["source"].startswith("sklearn:") else None, targets="target"), context="training")
        est.fit(tr[feats], tr["target"])
        pred = est.predict(te[feats])
        mlflow.log_metrics({"accuracy": m.accuracy_score(te["target"], pred), "f1": m.f1_score(te["target"], pred)})
        info = mlflow.sklearn.log_model(est, name="model", input_example=tr[feats].head(5),
            pip_requirements=[f"scikit-learn=={version('scikit-learn')}"], serialization_format="cloudpickle")
    mlflow.register_model(info.model_uri, cfg["name"] + tag)
    return time.perf_counter() - t0
once("-warm", cfg.get("warm"))
print(json.dumps([once(f"-{i}") for i in range(cfg["repeat"])]))
"""

SAGA = """
import json, os, sys, time
cfg = json.loads(sys.argv[1])
sys.path.insert(0, cfg["repo"])
import tests.conftest  # isolated AIRFLOW_HOME, like the test suite
os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"] = json.dumps({"conn_type": "mlflow", "host": cfg["url"]})
from airflow.utils import db; db.initdb()
from airflow.dag_processing.dagbag import DagBag
def dag():
    return DagBag(dag_folder=cfg["repo"] + "/dags/saga_training_pipeline.py").get_dag("saga_training_pipeline")
conf = {"data_source": cfg["source"], "estimator": cfg["estimator"], "hyperparameters": cfg["params"],
        "conditions": "accuracy >= 0.5", "approval_mode": "auto"}
def once(tag, case=None):
    d = dag()
    run_conf = {**conf, "model_name": cfg["name"] + tag}
    if case:  # warm-up on another (small) dataset: same code paths, seconds instead of a minute
        run_conf.update(data_source=case["source"], estimator=case["estimator"], hyperparameters=case["params"])
    t0 = time.perf_counter()
    dr = d.test(run_conf=run_conf, logical_date=None)
    assert dr.state == "success", dr.state
    return time.perf_counter() - t0
once("-warm", cfg.get("warm"))
print(json.dumps([once(f"-{i}") for i in range(cfg["repeat"])]))
"""

#: The decorator path: the user's own training function (``@task.saga_train``) fitting the same estimator,
#: then the shipped pipeline's evaluate -> gate -> register (auto-approved) -> promote operators. It lacks
#: the shipped DAG's approval-route branch (two no-op tasks), a fraction of a second.
DECORATED_DAG = """
from airflow.sdk import DAG, Param, task
from airflow_saga.operators.evaluate import EvaluateModelOperator
from airflow_saga.operators.gate import QualityGateOperator
from airflow_saga.operators.promote import PromoteModelOperator
from airflow_saga.operators.register import RegisterModelOperator

with DAG(dag_id="bench_decorated", schedule=None, params={"model_name": Param("bench", type="string"),
         "data_source": Param("", type="string"), "estimator": Param("", type="string"),
         "hyperparameters": Param({}, type="object")}):

    @task.saga_train(model_name="{{ params.model_name }}", data_source="{{ params.data_source }}",
                     target="target", hyperparameters="{{ params.hyperparameters }}")
    def train(X, y, hyperparameters, params):
        from importlib import import_module

        module, _, cls = params["estimator"].rpartition(".")
        return getattr(import_module(module), cls)(**hyperparameters).fit(X, y)

    training = train()
    evaluate = EvaluateModelOperator(task_id="evaluate", model_name="{{ params.model_name }}", training=training)
    gate = QualityGateOperator(task_id="quality_gate", conditions="accuracy >= 0.5", report=evaluate.output)
    register = RegisterModelOperator(task_id="register", model_name="{{ params.model_name }}",
        training=training, report=evaluate.output, decision=gate.output["decision"], auto_approve=True)
    promote = PromoteModelOperator(task_id="promote", model_name="{{ params.model_name }}",
        version="{{ ti.xcom_pull(task_ids='register', key='version') }}", alias="auto", reason="benchmark")
    register >> promote
"""

DECORATED = """
import json, os, sys, time
cfg = json.loads(sys.argv[1])
sys.path.insert(0, cfg["repo"])
import tests.conftest  # isolated AIRFLOW_HOME, like the test suite
os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"] = json.dumps({"conn_type": "mlflow", "host": cfg["url"]})
from airflow.utils import db; db.initdb()
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
DagBundlesManager().sync_bundles_to_db()
def dag():
    bag = DagBag(dag_folder=cfg["dag_file"])
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)  # dag.test() serialises DAGs from a bundle
    return bag.get_dag("bench_decorated")
conf = {"data_source": cfg["source"], "estimator": cfg["estimator"], "hyperparameters": cfg["params"]}
def once(tag, case=None):
    d = dag()
    run_conf = {**conf, "model_name": cfg["name"] + tag}
    if case:  # warm-up on another (small) dataset: same code paths, seconds instead of a minute
        run_conf.update(data_source=case["source"], estimator=case["estimator"], hyperparameters=case["params"])
    t0 = time.perf_counter()
    dr = d.test(run_conf=run_conf, logical_date=None)
    assert dr.state == "success", dr.state
    return time.perf_counter() - t0
once("-warm", cfg.get("warm"))
print(json.dumps([once(f"-{i}") for i in range(cfg["repeat"])]))
"""

CACHE = """
import json, sys, time
cfg = json.loads(sys.argv[1])
from airflow_saga.core.mlflow_client import MlflowSettings, build_client
from airflow_saga.core.training import TrainSpec, train
c = build_client(MlflowSettings(cfg["url"]))
spec = TrainSpec(model_name=cfg["name"], estimator=cfg["estimator"], data_source=cfg["source"], target="target",
                 hyperparameters=cfg["params"], cache_enabled=True)
t0 = time.perf_counter(); a = train(c, spec); t1 = time.perf_counter(); b = train(c, spec); t2 = time.perf_counter()
assert not a["cache_hit"] and b["cache_hit"]
print(json.dumps([t1 - t0, t2 - t1, a["fit_seconds"]]))
"""


def run_json(code: str, cfg: dict, env: dict) -> list[float]:
    r = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True, env=env, cwd=REPO
    )
    if r.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-rows", type=int, default=60_000)
    ap.add_argument("--big-trees", type=int, default=200)  # a fit of about a minute on a quiet 2-core machine
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--parse-only", action="store_true")
    args = ap.parse_args()

    from airflow_saga.devstack.mlflow_server import MlflowServer

    env = {
        **os.environ,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    tmp = Path(tempfile.mkdtemp(prefix="saga-bench-"))

    # 1. parse time
    bare = tmp / "bare_dag.py"
    bare.write_text(textwrap.dedent(BARE_DAG))
    bare_hitl = tmp / "bare_dag_with_airflow_hitl.py"
    bare_hitl.write_text(textwrap.dedent(BARE_HITL_DAG))
    files = [bare, bare_hitl, *sorted((REPO / "dags").glob("*.py"))]
    pt = parse_times(files, max(args.repeat, 5), env)
    ref, ref_hitl = pt["bare_dag.py"], pt["bare_dag_with_airflow_hitl.py"]
    rows = [[n, f"{sec * 1000:.1f}", f"{sec / ref:.2f}x", f"{sec / ref_hitl:.2f}x"] for n, sec in pt.items()]
    table(
        "DAG parse time (DagBag of one file in a fresh process, airflow already imported; median)",
        ["file", "ms", "vs bare DAG", "vs bare DAG + Airflow's ApprovalOperator"],
        rows,
    )
    if args.parse_only:
        return

    server = MlflowServer(tmp / "mlflow").start()
    try:
        cases = [
            ("small", "sklearn:breast_cancer", "sklearn.linear_model.LogisticRegression", {"max_iter": 5000})
        ]
        if not args.skip_big:
            import numpy as np
            import pandas as pd
            from sklearn.datasets import make_classification

            X, y = make_classification(
                n_samples=args.big_rows, n_features=30, n_informative=12, random_state=0
            )
            big = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])]).astype(np.float64)
            big["target"] = y
            path = tmp / "big.parquet"
            big.to_parquet(path)
            cases.append(
                (
                    "one-minute",
                    str(path),
                    "sklearn.ensemble.RandomForestClassifier",
                    {"n_estimators": args.big_trees, "random_state": 0},
                )
            )
        deco_dag = tmp / "bench_decorated.py"
        deco_dag.write_text(textwrap.dedent(DECORATED_DAG))
        rows = []
        cache_rows = []
        for label, source, estimator, params in cases:
            cfg = {
                "url": server.url,
                "source": source,
                "estimator": estimator,
                "params": params,
                "repeat": args.repeat if label == "small" else 1,
                "repo": str(REPO),
                "dag_file": str(deco_dag),
            }
            if label != "small":  # warm up (imports, connections, first requests) on the small case
                small = cases[0]
                cfg["warm"] = {"source": small[1], "estimator": small[2], "params": small[3]}
            plain = run_json(PLAIN, {**cfg, "name": f"plain-{label}"}, env)
            saga = run_json(SAGA, {**cfg, "name": f"saga-{label}"}, env)
            deco = run_json(DECORATED, {**cfg, "name": f"deco-{label}"}, env)
            p, s, d = statistics.median(plain), statistics.median(saga), statistics.median(deco)
            rows.append(
                [
                    label,
                    estimator.rsplit(".", 1)[1],
                    f"{p:.2f}",
                    f"{s:.2f}",
                    f"{s / p:.2f}x",
                    f"{d:.2f}",
                    f"{d / p:.2f}x",
                ]
            )
            hit = run_json(CACHE, {**cfg, "name": f"cache-{label}"}, env)
            cache_rows.append(
                [label, f"{hit[0]:.2f}", f"{hit[2]:.2f}", f"{hit[1]:.2f}", f"{hit[1] / hit[0]:.1%}"]
            )
        table(
            "End-to-end train/evaluate/gate/register: saga DAG (dag.test) vs plain MLflow script, seconds (median)",
            ["dataset", "estimator", "plain script", "operator path", "ratio", "decorator path", "ratio"],
            rows,
        )
        table(
            "Train step with caching: uncached vs cache hit, seconds",
            ["dataset", "uncached step", "of which fit", "cache hit", "hit / uncached"],
            cache_rows,
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
