"""Adaptive micro-batching with a real fitted estimator: concurrent requests share one predict call, each
gets its own rows back, a bad request fails alone, and batches never exceed the maximum size."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from airflow_saga.core.errors import ServingError
from airflow_saga.serving import config
from airflow_saga.serving.batching import MicroBatcher
from airflow_saga.serving.models import LoadedModel
from airflow_saga.serving.protocol import InputSpec
from tests.support import models


@pytest.fixture(scope="module")
def model():
    est = models.fit()
    cols = tuple(models.columns())
    return LoadedModel("champion", "1", None, InputSpec(cols, ("double",) * 30, None), est.predict)


def test_concurrent_requests_share_one_call(model):
    X = np.array(models.sample_rows(40))
    expected = model.fast(X).tolist()
    batcher = MicroBatcher(max_size=64, max_wait=0.05)

    async def main():
        return await asyncio.gather(*(batcher.predict(model, X[i : i + 2]) for i in range(0, 40, 2)))

    got = asyncio.run(main())
    assert [p for part in got for p in part] == expected
    assert batcher.requests == 20 and batcher.calls == 1


def test_max_size_bounds_a_batch_and_a_lone_request_is_not_delayed(model):
    X = np.array(models.sample_rows(40))
    batcher = MicroBatcher(max_size=8, max_wait=0.05)

    async def main():
        return await asyncio.gather(*(batcher.predict(model, X[i : i + 1]) for i in range(40)))

    assert [p for part in asyncio.run(main()) for p in part] == model.fast(X).tolist()
    assert batcher.calls == 5  # 40 one-row requests, at most 8 rows per call
    lone = MicroBatcher(max_size=64, max_wait=5.0)  # a long max wait is not waited for without company

    async def one():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await lone.predict(model, X[:1])
        return loop.time() - t0

    assert asyncio.run(one()) < 5.0 and lone.calls == 1


def test_a_request_the_model_cannot_score_fails_alone(model):
    batcher = MicroBatcher(max_size=64, max_wait=0.05)
    good = np.array(models.sample_rows(2))
    bad = np.ones((1, 3))  # three columns: the estimator refuses it

    async def main():
        return await asyncio.gather(
            batcher.predict(model, good), batcher.predict(model, bad), return_exceptions=True
        )

    ok, err = asyncio.run(main())
    assert ok == model.fast(good).tolist()
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"batch_max_size": 0}, "batch_max_size must be an integer in [1, 4096]"),
        ({"batch_max_size": 5000}, "batch_max_size must be an integer in [1, 4096]"),
        ({"batch_max_size": 2.5}, "batch_max_size must be an integer"),
        ({"batch_max_wait_ms": -1}, "batch_max_wait_ms must be a number of milliseconds in [0, 100]"),
        ({"batch_max_wait_ms": 1000}, "batch_max_wait_ms must be a number of milliseconds in [0, 100]"),
        ({"batch_max_wait_ms": "2"}, "batch_max_wait_ms must be a number"),
        ({"batching": "yes"}, "batching must be true or false"),
        ({"shadow_mode": "thread"}, "the thread mode was removed"),
    ],
)
def test_out_of_range_batching_config_is_refused(kwargs, needle):
    with pytest.raises(ServingError) as err:
        config.GatewayConfig(model="m", **{"batching": True, **kwargs})
    assert needle in str(err.value)
