"""Credentials never reach a message, and the gateway's secrets come from files or the environment."""

from __future__ import annotations

import os

import pytest

from airflow_saga.core.errors import MlflowConfigError, ServingError
from airflow_saga.core.mlflow_client import MlflowSettings, settings_from_env
from airflow_saga.core.redaction import MASK, redact, register_secret, split_userinfo
from airflow_saga.serving.auth import read_secret_file, resolve_secret


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("API request to http://alice:s3cr3t-pw@mlflow:5000/api failed", "s3cr3t-pw"),
        ("https://tok3n-only@host/x", "tok3n-only"),
        ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
        ("headers={'Authorization': 'Basic YWxpY2U6cHc='}", "YWxpY2U6cHc="),
        ("password=hunter22&user=bob", "hunter22"),
        ('{"token": "t0k3n-value", "x": 1}', "t0k3n-value"),
        ("webhook_secret: whs3cret", "whs3cret"),
        ("postgresql://airflow:dbpass@pg:5432/airflow", "dbpass"),
    ],
)
def test_redact_removes_credentials_in_every_shape(text, secret):
    out = redact(text)
    assert secret not in out and MASK in out


def test_registered_secrets_are_masked_anywhere_but_short_ones_only_in_known_shapes():
    register_secret("standalone-Secret-42")
    assert redact("the server said standalone-Secret-42 is wrong") == f"the server said {MASK} is wrong"
    register_secret("pw")  # too short to mask as a bare word: it would mask ordinary text
    assert redact("pwned by pwd") == "pwned by pwd"
    assert redact("http://u:pw@h") == f"http://{MASK}@h"


def test_redact_leaves_plain_urls_and_messages_alone():
    text = "MLflow at http://127.0.0.1:5000 is unreachable: GET /api/2.0/mlflow/runs/get failed"
    assert redact(text) == text


def test_credentials_in_a_tracking_uri_move_into_the_settings():
    assert split_userinfo("http://al%40ice:p%3Aw@h:1/x") == ("http://h:1/x", "al@ice", "p:w")
    s = MlflowSettings("http://alice:pw-in-uri@127.0.0.1:5000/")
    assert (s.tracking_uri, s.username, s.password) == ("http://127.0.0.1:5000", "alice", "pw-in-uri")
    assert "pw-in-uri" not in repr(s)
    explicit = MlflowSettings("http://alice:from-uri@h:1", username="bob", password="explicit")
    assert (explicit.username, explicit.password) == ("bob", "explicit")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("call_timeout", 0),
        ("call_timeout", -1),
        ("connect_timeout", "5"),
        ("max_retries", 1.5),
        ("read_timeout", 0),
    ],
)
def test_bad_bounds_are_refused_naming_the_field(field, value):
    with pytest.raises(MlflowConfigError, match=field):
        MlflowSettings("http://h:1", **{field: value})


def test_cli_bounds_from_the_environment(monkeypatch):
    monkeypatch.setenv("SAGA_MLFLOW_CALL_TIMEOUT", "4.5")
    monkeypatch.setenv("SAGA_MLFLOW_MAX_RETRIES", "0")
    s = settings_from_env("http://h:1")
    assert (s.call_timeout, s.max_retries) == (4.5, 0)
    monkeypatch.setenv("SAGA_MLFLOW_CALL_TIMEOUT", "soon")
    with pytest.raises(MlflowConfigError, match=r"SAGA_MLFLOW_CALL_TIMEOUT.*'soon'"):
        settings_from_env("http://h:1")


def _secret_file(tmp_path, text, mode=0o600):
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_secret_sources_in_order_with_a_warning_for_the_command_line(tmp_path, monkeypatch, capsys):
    for var in ("SAGA_SERVE_TOKEN", "SAGA_SERVE_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    kw = {"flag_name": "--auth-token", "env_name": "SAGA_SERVE_TOKEN", "what": "bearer token"}
    assert resolve_secret(flag=None, file=None, **kw) is None
    monkeypatch.setenv("SAGA_SERVE_TOKEN_FILE", _secret_file(tmp_path, "from-env-file\n"))
    assert resolve_secret(flag=None, file=None, **kw) == "from-env-file"
    monkeypatch.setenv("SAGA_SERVE_TOKEN", "from-env")
    assert resolve_secret(flag=None, file=None, **kw) == "from-env"
    other = tmp_path / "flagfile"
    other.write_text("  from-flag-file \n")
    other.chmod(0o600)
    assert resolve_secret(flag=None, file=str(other), **kw) == "from-flag-file"
    assert capsys.readouterr().err == ""  # no warning for any of these
    assert resolve_secret(flag="on-the-command-line", file=str(other), **kw) == "on-the-command-line"
    err = capsys.readouterr().err
    assert "warning: --auth-token on the command line is visible" in err and "on-the-command-line" not in err


def test_secret_files_that_cannot_serve_are_refused_or_warned(tmp_path, capsys):
    with pytest.raises(ServingError, match="empty"):
        read_secret_file(_secret_file(tmp_path, "\n"), "bearer token")
    with pytest.raises(ServingError, match="cannot read the webhook secret file"):
        read_secret_file(str(tmp_path / "missing"), "webhook secret")
    assert read_secret_file(_secret_file(tmp_path, "loose", 0o644), "bearer token") == "loose"
    assert "readable by other users (mode 644)" in capsys.readouterr().err


def test_tail_of_a_devstack_log_is_redacted(tmp_path):
    from airflow_saga.devstack.procs import tail

    log = tmp_path / "x.log"
    log.write_text("connecting to postgresql://airflow:dbpass-123@pg/airflow\n")
    assert "dbpass-123" not in tail(log) and os.path.exists(log)


def test_log_records_are_redacted_by_the_gateways_filter():
    import io
    import logging

    from airflow_saga.core.redaction import install_log_redaction

    stream = io.StringIO()
    logger = logging.getLogger("saga-test-redaction")
    logger.propagate = False
    logger.addHandler(logging.StreamHandler(stream))
    install_log_redaction(logger)
    try:
        raise RuntimeError("GET http://bob:l0g-secret@mlflow:5000/api failed")
    except RuntimeError:
        logger.exception("cannot load from %s", "http://bob:l0g-secret@mlflow:5000")
    text = stream.getvalue()
    assert "l0g-secret" not in text and text.count(MASK) >= 2 and "RuntimeError" in text
