"""Upgrade tripwires: every private internal that ``airflow_saga.core.compat`` relies on, checked for real.

Each test exercises one compat function against the installed MLflow / Evidently (no mocks), so an upgrade
that moves or changes an internal fails here, by name, rather than in a user's task or in the gateway.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pandas as pd
import pytest

from airflow_saga.core import compat


@pytest.mark.parametrize("module", compat.MLFLOW_HTTP_REQUEST_MODULES)
def test_each_http_request_module_binds_http_request(module):
    mod = importlib.import_module(module)
    fn = getattr(mod, "http_request", None)
    assert callable(fn), f"{module} no longer binds http_request: update MLFLOW_HTTP_REQUEST_MODULES"
    original = getattr(fn, compat.WRAPPED_MARK, fn)
    params = list(inspect.signature(original).parameters)
    assert params[:3] == ["host_creds", "endpoint", "method"], params
    for kw in ("max_retries", "backoff_factor", "timeout"):
        assert kw in params, f"http_request lost its {kw!r} argument"


def test_rest_store_calls_http_request_through_the_module_name():
    """The wrapper only sees requests made through the module-level name, so check the callers use it."""
    from mlflow.utils import rest_utils

    src = inspect.getsource(rest_utils.call_endpoint)
    assert "http_request(" in src


def test_install_wrapper_is_idempotent_and_marks_the_original():
    from airflow_saga.core import mlflow_client

    mlflow_client._install()  # what every bounded call does first

    def foreign(original):  # pragma: no cover - must never be installed over ours
        raise AssertionError("a second wrapper was installed")

    assert compat.install_http_request_wrapper(foreign) == []
    assert compat.install_cloud_request_wrapper(foreign) == []
    assert compat.install_context_propagating_artifact_pools() is False
    assert compat.install_bounded_multipart_upload_part() is False
    from mlflow.utils import rest_utils

    assert hasattr(rest_utils.http_request, compat.WRAPPED_MARK)


@pytest.mark.parametrize("module", compat.MLFLOW_CLOUD_REQUEST_MODULES)
def test_each_cloud_request_module_binds_the_bounded_cloud_storage_request(module):
    from airflow_saga.core import mlflow_client

    mlflow_client._install()
    mod = importlib.import_module(module)  # imported after install: binds the wrapper by name
    fn = getattr(mod, "cloud_storage_http_request", None)
    assert callable(fn), f"{module} no longer binds cloud_storage_http_request: update the module list"
    assert hasattr(fn, compat.WRAPPED_MARK), f"{module}.cloud_storage_http_request is not wrapped"
    params = list(inspect.signature(getattr(fn, compat.WRAPPED_MARK)).parameters)
    assert params[:2] == ["method", "url"], params
    for kw in ("max_retries", "backoff_factor", "timeout", "retry_codes"):
        assert kw in params, f"cloud_storage_http_request lost its {kw!r} argument"


def test_presigned_downloads_call_cloud_storage_request_through_the_module_name():
    from mlflow.utils import file_utils, request_utils

    assert "cloud_storage_http_request(" in inspect.getsource(request_utils.download_chunk)
    assert "cloud_storage_http_request(" in inspect.getsource(file_utils.download_file_using_http_uri)
    params = inspect.signature(request_utils._get_http_response_with_retries).parameters
    assert "raise_on_status" in params  # the wrapper passes raise_on_status=False through **kwargs


def test_artifact_thread_pools_run_work_in_the_submitters_context(tmp_path):
    import contextvars

    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from airflow_saga.core import mlflow_client

    mlflow_client._install()
    var = contextvars.ContextVar("probe", default="unset")
    var.set("caller")
    repo = LocalArtifactRepository(str(tmp_path))
    assert repo.thread_pool.submit(var.get).result(timeout=10) == "caller"


def test_multipart_upload_part_is_replaced_with_the_same_signature():
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

    from airflow_saga.core import mlflow_client

    mlflow_client._install()
    current = HttpArtifactRepository.__dict__["_upload_part"]
    original = getattr(current.__func__, compat.WRAPPED_MARK)
    assert list(inspect.signature(original.__func__).parameters) == [
        "credential",
        "local_file",
        "size",
        "start_byte",
    ]
    assert "requests.put(" in inspect.getsource(original.__func__)  # what we replace: no timeout at all


def test_host_creds_carrying_keeps_mlflows_fields_and_carries_the_payload():
    from mlflow.utils.rest_utils import MlflowHostCreds

    creds = compat.host_creds_carrying("payload", "http://h:1", username="u", password="p", token=None)
    assert isinstance(creds, MlflowHostCreds)
    assert (creds.host, creds.username, creds.password, creds.token) == ("http://h:1", "u", "p", None)
    assert creds.verify is True  # a property MLflow's http_request reads
    assert compat.payload_of(creds) == "payload"
    assert compat.payload_of(MlflowHostCreds("http://h:1")) is None


def test_bind_rest_stores_gives_each_client_its_own_stores_and_credentials():
    from mlflow import MlflowClient

    clients = []
    for user in ("alice", "bob"):
        client = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")

        def creds(user=user):
            return compat.host_creds_carrying(user, "http://127.0.0.1:9", username=user, password="pw")

        compat.bind_rest_stores(client, creds, creds)
        clients.append(client)
    a, b = clients
    for which in ("tracking", "registry"):
        sa, sb = compat.store_of(a, which), compat.store_of(b, which)
        assert sa is not sb
        assert (sa.get_host_creds().username, sb.get_host_creds().username) == ("alice", "bob")
    assert type(a._tracking_client).__mro__[1].__name__ == "TrackingServiceClient"


def test_http_request_reports_transport_errors_in_the_shapes_the_bounds_rely_on():
    """A refused connection and a read timeout, as MLflow's own ``http_request`` raises them under
    ``max_retries=0`` (real sockets): the bounds tell them apart by walking the exception chain."""
    import socket

    from mlflow.exceptions import MlflowException
    from mlflow.utils import rest_utils

    from airflow_saga.core import mlflow_client

    original = getattr(rest_utils.http_request, compat.WRAPPED_MARK, rest_utils.http_request)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    creds = compat.mlflow_host_creds(host=f"http://127.0.0.1:{port}")
    with pytest.raises(MlflowException) as refused:
        original(creds, "/api/2.0/mlflow/experiments/search", "GET", max_retries=0, timeout=(1, 1))
    cause = mlflow_client._transport_error(refused.value)
    assert cause is not None and not mlflow_client._is_read_timeout(cause)

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        creds = compat.mlflow_host_creds(host=f"http://127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(MlflowException) as timed_out:
            original(creds, "/api/2.0/mlflow/experiments/search", "GET", max_retries=0, timeout=(1, 0.3))
        cause = mlflow_client._transport_error(timed_out.value)
        assert cause is not None and mlflow_client._is_read_timeout(cause)
    finally:
        silent.close()


def _saved_sklearn_pyfunc(tmp_path, estimator):
    import mlflow.pyfunc
    import mlflow.sklearn

    path = tmp_path / "m"
    mlflow.sklearn.save_model(estimator, str(path), serialization_format="cloudpickle")
    return mlflow.pyfunc.load_model(str(path))


def test_sklearn_estimator_of_finds_the_estimator_and_refuses_other_flavors(tmp_path):
    import mlflow.pyfunc
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 1.0]})
    est = LinearRegression().fit(X, [0.0, 1.0, 2.0])
    pyfunc = _saved_sklearn_pyfunc(tmp_path, est)
    inner = compat.sklearn_estimator_of(pyfunc)
    assert isinstance(inner, LinearRegression)
    np.testing.assert_allclose(inner.predict(X.to_numpy()), pyfunc.predict(X))
    assert compat.pyfunc_implementation(pyfunc) is not None

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [1] * len(model_input)

    path = tmp_path / "p"
    mlflow.pyfunc.save_model(str(path), python_model=Constant(), pip_requirements=["mlflow"])
    assert compat.sklearn_estimator_of(mlflow.pyfunc.load_model(str(path))) is None


def test_jsonable_shapes_like_the_scoring_server():
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert compat.jsonable(frame) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert compat.jsonable(np.array([1.5, 2.5])) == [1.5, 2.5]


def test_dataset_entity_carries_digest_and_source():
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import Dataset

    ds = mlflow.data.from_pandas(
        pd.DataFrame({"x": [1.0, 2.0]}), source=CodeDatasetSource(tags={}), name="n", digest="abc123"
    )
    entity = compat.dataset_entity(ds)
    assert isinstance(entity, Dataset)
    assert (entity.name, entity.digest) == ("n", "abc123")


def test_end_run_sets_status_and_end_time_in_one_store_call(tmp_path, capsys):
    """A real (SQLite) store: the run ends FINISHED at the given time, and nothing is printed."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.create_experiment("compat-end-run")
    run = client.create_run(exp, start_time=1_000)
    compat.end_run(client, run.info.run_id, "FINISHED", 1_000)
    info = client.get_run(run.info.run_id).info
    assert (info.status, info.end_time) == ("FINISHED", 1_000)
    assert "View run" not in capsys.readouterr().out


def test_registry_writer_has_every_write_governance_uses(tmp_path):
    """Real (SQLite) registry: each write works through the registry client, with the expected arguments."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'r.db'}")
    writer = compat.registry_writer(client)
    for method, params in compat.REGISTRY_WRITES.items():
        assert list(inspect.signature(getattr(writer, method)).parameters)[: len(params)] == list(params), (
            method
        )
    client.create_registered_model("m")
    run = client.create_run("0")
    client.create_model_version("m", "runs:/x/model", run_id=run.info.run_id)
    writer.set_registered_model_tag("m", "k", "v")
    writer.set_registered_model_alias("m", "champion", "1")
    writer.set_model_version_tag("m", "1", "k", "v")
    model = client.get_registered_model("m")
    assert (model.tags, {k: str(v) for k, v in model.aliases.items()}) == ({"k": "v"}, {"champion": "1"})
    assert client.get_model_version("m", "1").tags == {"k": "v"}
    writer.delete_model_version_tag("m", "1", "k")
    writer.delete_registered_model_alias("m", "champion")
    writer.delete_registered_model_tag("m", "k")
    model = client.get_registered_model("m")
    assert (model.tags, model.aliases, client.get_model_version("m", "1").tags) == ({}, {}, {})
    writer.delete_registered_model("m")
    assert client.search_registered_models() == []


@pytest.mark.parametrize("numerical", [True, False])
def test_evidently_stattest_default_selection_and_call(numerical):
    rng = np.random.default_rng(0)
    if numerical:
        ref, cur = pd.Series(rng.normal(size=2000)), pd.Series(rng.normal(1.0, size=2000))
    else:
        ref = pd.Series(rng.choice(["a", "b"], size=2000))
        cur = pd.Series(rng.choice(["a", "b"], p=[0.9, 0.1], size=2000))
    ctype = compat.evidently_column_type(numerical)
    test = compat.evidently_stattest(ref, cur, ctype, None)
    assert isinstance(test.name, str) and test.display_name
    result = test(ref, cur, ctype, None)
    assert result.drifted is True or bool(result.drifted) is True
    assert np.isfinite(float(result.drift_score)) and np.isfinite(float(result.actual_threshold))
    explicit = compat.evidently_stattest(ref, cur, ctype, "psi")
    assert explicit.name == "psi"
