"""A real gateway process logs an alias moved outside saga (by hand in MLflow) when it loads that version."""

from __future__ import annotations

import time
import uuid

import pytest

from airflow_saga.core import promotion, tags
from tests.support import models

pytestmark = pytest.mark.integration


def _serving(gw, version: str, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        champ = next(s for s in gw.health()["slots"] if s["alias"] == tags.CHAMPION)
        if champ["version"] == version:
            return True
        time.sleep(0.2)
    return False


def test_hand_moved_champion_is_logged_as_unrecorded(gateway_factory, mlflow_client):
    name = f"unrec-{uuid.uuid4().hex[:6]}"
    v1 = models.register_sklearn(mlflow_client, name)
    v2 = models.register_sklearn(mlflow_client, name, models.fit("tree"))
    promotion.promote(mlflow_client, name, v1, tags.CHAMPION, by="alice", reason="first")
    gw = gateway_factory(name, "--poll-interval", "0.5")
    assert _serving(gw, v1)
    assert "UNRECORDED" not in gw.log.read_text()  # promoted through saga: recorded
    mlflow_client.set_registered_model_alias(name, tags.CHAMPION, v2)  # as in the MLflow UI
    assert _serving(gw, v2)
    deadline = time.monotonic() + 30
    while "UNRECORDED CHANGE" not in gw.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (
        f"UNRECORDED CHANGE: serving it anyway: @champion of model {name!r} is on v{v2} in the registry, "
        f"but saga's history says v{v1} (entry #1"
    ) in gw.log.read_text()
