"""Seeded fuzz of gateway bodies through the real ASGI app, serving real MLflow models.

Thousands of mutated and hostile requests of every format and route: each must get a 2xx, or a 4xx with
the package's error body; never a 5xx, never over a second, and no code execution (an audit hook watches
for exec/compile/process/pickle events while the requests run). The cases are in ``tests.support.
fuzz_bodies`` (shared with ``benchmarks/reliability/fuzz.py``).
"""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from airflow_saga.core import tags
from tests.support import fuzz_bodies, models

pytestmark = pytest.mark.integration
N_CASES = 6000
SEED = 20261202
MIXED = {
    "name": ["a", "b", "c,d", "\u00e9"],
    "count": [1, 2, 3, 4],
    "score": [0.5, 1.5, -2.0, 3.25],
    "flag": [True, False, True, False],
}


@pytest.fixture(scope="module")
def app(tmp_path_factory, mlflow_server, mlflow_client):
    from airflow_saga.serving.app import Gateway
    from airflow_saga.serving.config import GatewayConfig

    name = f"fuzz-{uuid.uuid4().hex[:6]}"
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    models.register_pyfunc(
        mlflow_client,
        name,
        models.SlowOrFailingModel(value=3),
        aliases=("mixed",),
        example=pd.DataFrame(MIXED),
    )
    root = tmp_path_factory.mktemp("fuzz")
    cfg = GatewayConfig(
        model=name,
        tracking_uri=mlflow_server.url,
        variants={tags.CHAMPION: 100.0, "mixed": 0.0},  # "mixed" only by X-Saga-Target-Variant
        capture_dir=str(root / "capture"),
        max_body_bytes=400_000,
        # low thresholds, so that bodies over 2 KiB or 20 rows are fuzzed through the large-request lane
        large_body_bytes=2048,
        large_rows=20,
        poll_interval=3600,
    )
    gw = Gateway(cfg)
    gw.start()
    gw.capture_root = str(root / "capture")  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def test_gateway_bodies_fuzz(app):
    cases = fuzz_bodies.cases(SEED, N_CASES, app.cfg.model, models.columns(), models.sample_rows(60), MIXED)
    # warm every lazy import (pandas CSV, MLflow's parser) outside the audited window
    fuzz_bodies.run(app, [c for c in cases if c.valid][:50])
    res = fuzz_bodies.run(app, cases, allow_open=(app.capture_root,))
    assert res.cases == N_CASES
    assert res.server_error == 0, res.failures[:10]
    assert res.foreign_error == 0, res.failures[:10]
    assert res.hang == 0, res.failures[:10]
    assert res.valid_not_ok == 0, res.failures[:10]
    assert res.audit_events == [], res.audit_events[:10]
    # the fuzz reaches both outcomes in numbers, so it is not all rejected at the door
    assert res.ok > N_CASES // 20 and res.package_error > N_CASES // 2, res
    assert app.lane.completed > N_CASES // 10, app.lane.status()  # the lane's decoder was fuzzed too
