"""Reliability section, gateway part of the fuzz counts: hostile bodies through the real ASGI app.

The cases of ``tests/integration/serving/test_fuzz_bodies.py`` (``tests.support.fuzz_bodies``): valid and
mutated payloads of every format (MLflow's four JSON formats, CSV, V2 tensors flat, nested, per column and
binary, feedback), deep nesting, huge numbers, bad UTF-8 and odd routes, sent to a gateway serving a real
sklearn model and a pyfunc with a mixed signature (MLflow's parser path) from a private MLflow server on
127.0.0.1. Outcomes: ok (2xx), package error (4xx with the package's error body), foreign error (any other
4xx body), 5xx, hang (over 1 s twice), and code-execution events seen by an audit hook.

    .venv/bin/python -m benchmarks.reliability.fuzz_gateway [--quick] [--cases 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "fuzz"


def measure(quick: bool = False, cases: int | None = None, seed: int = 20261202) -> list[dict]:
    import pandas as pd

    from airflow_saga.core.mlflow_client import MlflowSettings, build_client
    from airflow_saga.serving.app import Gateway
    from airflow_saga.serving.config import GatewayConfig
    from tests.integration.serving.test_fuzz_bodies import MIXED
    from tests.support import fuzz_bodies, models
    from tests.support.procs import MlflowServer

    n = cases or (2000 if quick else 10_000)
    work = Path(tempfile.mkdtemp(prefix="saga-fuzz-"))
    server = MlflowServer(work / "mlflow").start()
    try:
        client = build_client(MlflowSettings(tracking_uri=server.url))
        models.register_sklearn(client, "fuzz", aliases=("champion",))
        mixed = models.SlowOrFailingModel(value=3)
        models.register_pyfunc(client, "fuzz", mixed, aliases=("mixed",), example=pd.DataFrame(MIXED))
        cfg = GatewayConfig(
            model="fuzz",
            tracking_uri=server.url,
            variants={"champion": 100.0, "mixed": 0.0},
            capture_dir=str(work / "capture"),
            max_body_bytes=400_000,
            poll_interval=3600,
        )
        gw = Gateway(cfg)
        gw.start()
        try:
            all_cases = fuzz_bodies.cases(seed, n, "fuzz", models.columns(), models.sample_rows(60), MIXED)
            fuzz_bodies.run(gw, [c for c in all_cases if c.valid][:50])  # warm lazy imports
            res = fuzz_bodies.run(gw, all_cases, allow_open=(str(work / "capture"),))
        finally:
            gw.stop()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)  # the MLflow store, models and capture of this run

    for failure in res.failures[:20]:  # name the bodies, so a failure in the report can be reproduced
        print(f"fuzz_gateway failure: {failure}", file=sys.stderr)

    def row(measure: str, value: object, target: str | None, met: bool | None) -> dict:
        return {"section": SECTION, "measure": measure, "value": str(value), "target": target, "met": met}

    return [
        row(
            "gateway bodies: cases",
            res.cases,
            ">= 10,000",
            res.cases >= 10_000,
        ),
        row("gateway bodies: ok (2xx)", res.ok, None, None),
        row("gateway bodies: package error (4xx)", res.package_error, None, None),
        row("gateway bodies: foreign error", res.foreign_error, "0", res.foreign_error == 0),
        row("gateway bodies: 5xx", res.server_error, "0", res.server_error == 0),
        row("gateway bodies: hang over 1 s", res.hang, "0", res.hang == 0),
        row("gateway bodies: code execution events", len(res.audit_events), "0", not res.audit_events),
        row("gateway bodies: valid payloads not answered 2xx", res.valid_not_ok, "0", res.valid_not_ok == 0),
        row("gateway bodies: slowest answer", f"{res.slowest_s * 1000:.0f} ms", "< 1 s", res.slowest_s < 1.0),
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", type=int)
    ap.add_argument("--seed", type=int, default=20261202)
    a = ap.parse_args()
    print("| measure | value | target | met |")
    print("|---|---:|---|---|")
    for r in measure(a.quick, a.cases, a.seed):
        print(
            f"| {r['measure']} | {r['value']} | {r['target'] or '-'} | {r['met'] if r['met'] is not None else '-'} |"
        )
