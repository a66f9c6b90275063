"""Bearer and webhook signature checks, and config validation."""

from __future__ import annotations

import json
import time

import pytest

from airflow_saga.core.errors import ServingError
from airflow_saga.serving import config
from airflow_saga.serving.auth import bearer_ok, webhook_ok, webhook_signature


def test_bearer():
    assert bearer_ok(b"Bearer s3cret", "s3cret")
    assert bearer_ok(b"bearer s3cret", "s3cret")
    assert not bearer_ok(b"Bearer wrong", "s3cret")
    assert not bearer_ok(b"Basic s3cret", "s3cret")
    assert not bearer_ok(None, "s3cret")


def test_webhook_signature_matches_mlflow():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    body = json.dumps({"entity": "model_version_alias", "action": "created", "data": {"name": "m"}})
    ours = webhook_signature("k", "d-1", "1700000000", body.encode())
    assert ours == _generate_hmac_signature("k", "d-1", "1700000000", body)


def test_webhook_checks():
    now = int(time.time())
    body = b'{"data": {}}'
    sig = webhook_signature("k", "d", str(now), body)
    assert webhook_ok("k", "d", str(now), sig, body)[0]
    assert webhook_ok("other", "d", str(now), sig, body) == (False, "bad signature")
    assert webhook_ok("k", "d", str(now), sig, body + b" ") == (False, "bad signature")
    old = str(now - 3600)
    assert webhook_ok("k", "d", old, webhook_signature("k", "d", old, body), body) == (
        False,
        "stale webhook delivery",
    )
    assert not webhook_ok("k", None, str(now), sig, body)[0]


def test_variants_and_file_config(tmp_path):
    assert config.parse_variants("champion=90, challenger=10") == {"champion": 90.0, "challenger": 10.0}
    toml = tmp_path / "serve.toml"
    toml.write_text(
        '[serve]\nmodel = "m"\nvariants = "champion=50,challenger=50"\nshadow = "shadowed"\nport = 7000\n'
    )
    cfg = config.build(str(toml), port=7001)
    assert cfg.variants == {"champion": 50.0, "challenger": 50.0}
    assert cfg.port == 7001 and cfg.shadow == "shadowed"
    js = tmp_path / "serve.json"
    js.write_text(json.dumps({"model": "m", "capture_sample": 10}))
    assert config.build(str(js)).capture_sample == 10
    assert config.GatewayConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variants": {}},
        {"variants": {"champion": -1}},
        {"variants": {"champion": 0}},
        {"shadow": "champion"},
        {"shadow_sample": 101},
        {"capture_format": "csv"},
        {"flush_interval": 0},
        {"max_body_bytes": 0},
    ],
)
def test_invalid_config_is_refused(kwargs):
    with pytest.raises(ServingError):
        config.GatewayConfig(model="m", **kwargs)


def test_unknown_file_keys_are_refused(tmp_path):
    js = tmp_path / "c.json"
    js.write_text('{"model": "m", "shadw": "x"}')
    with pytest.raises(ServingError, match="shadw"):
        config.build(str(js))
