"""docker-compose.yaml, checked without a Docker engine (none runs in this project's CI).

Three layers, because no single one is enough:
1. the compose specification's own JSON schema (vendored: ``data/compose-spec.json`` is the copy that
   check-jsonschema 0.39.0 ships, Apache-2.0, see ``data/LICENSE.compose-spec``; it cannot be downloaded at
   test time), so a typo in a key fails here rather than at a user's ``docker compose up``;
2. structure the spec cannot express: the services of Airflow's official 3.x compose file, health checks,
   images, mounted DAGs, and no secret literal anywhere;
3. consistency with the process topology that ``tests/e2e/test_scaleout_celery.py`` really runs: the same
   Airflow subcommands, only ``AIRFLOW__*`` keys that test also sets, the same MLflow server flags and
   allowed hosts, and ``saga serve`` flags that the CLI parses.
"""

from __future__ import annotations

import fnmatch
import json
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
SAGA_IMAGE_SERVICES = {
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "airflow-worker", "mlflow", "saga-gateway",
}  # fmt: skip
STORAGE_SERVICES = {"minio", "minio-init"}  # S3-compatible object storage for artifacts and capture
ONE_SHOT = {"airflow-init", "minio-init"}  # dependents wait for service_completed_successfully
# compose service -> the process name AirflowStack.process_commands() uses
AIRFLOW_PROCESSES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery-worker",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$|REDISCLI_AUTH")
# ${VAR}, ${VAR:-default}, ${VAR:?error}; "$${X}" is an escaped "$" for the container's shell
VAR_REF = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def process_topology(tmp_path_factory):
    """The process topology of the scale-out e2e test, built but not started."""
    from airflow_saga.devstack.mlflow_server import MlflowServer
    from tests.e2e import test_scaleout_celery as e2e

    root = tmp_path_factory.mktemp("topology")
    stack = e2e.build_airflow_stack(
        root / "airflow", "http://127.0.0.1:5000",
        sql_alchemy_conn="postgresql+psycopg2://postgres@127.0.0.1:5432/x", celery_broker_url="redis://127.0.0.1/1",
    )  # fmt: skip
    mlflow = MlflowServer(root / "mlflow", backend_uri="postgresql://postgres@127.0.0.1/x",
                          allowed_hosts=e2e.MLFLOW_ALLOWED_HOSTS)  # fmt: skip
    gateway = e2e.Gateway(root / "gw", "m", "http://127.0.0.1:5000")
    return {"airflow": stack, "mlflow": mlflow, "gateway": gateway, "allowed_hosts": e2e.MLFLOW_ALLOWED_HOSTS}


def _command(svc: dict) -> list[str]:
    cmd = svc.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _positional(args: list[str]) -> list[str]:
    """Leading arguments up to the first flag: the (sub)command."""
    out = []
    for a in args:
        if a.startswith("-"):
            break
        out.append(a)
    return out


def _flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def _flag_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _env(svc: dict) -> dict[str, str]:
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


# --- 1. schema -------------------------------------------------------------------------------------------
def test_compose_file_is_valid_against_the_compose_spec(compose):
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_mistakes(compose):
    """Guard against a schema that accepts anything (e.g. a wrong draft or an empty file)."""
    import copy

    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    bad = copy.deepcopy(compose)
    bad["services"]["redis"]["healthchek"] = {"test": ["CMD", "true"]}  # typo
    assert not validator.is_valid(bad)
    bad = copy.deepcopy(compose)
    bad["services"]["redis"]["depends_on"] = {"postgres": {"condition": "service_happy"}}
    assert not validator.is_valid(bad)


# --- 2. structure ----------------------------------------------------------------------------------------
def test_services_follow_the_official_airflow_compose_file_plus_mlflow_and_gateway(services):
    assert set(services) == {"postgres", "redis", *SAGA_IMAGE_SERVICES, *STORAGE_SERVICES}


def test_every_long_running_service_has_a_health_check(services):
    for name, svc in services.items():
        if name in ONE_SHOT:  # dependents wait for service_completed_successfully
            assert "healthcheck" not in svc
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        assert not svc["healthcheck"].get("disable"), name


def test_dependencies_wait_for_health_and_init(services):
    for name in AIRFLOW_PROCESSES:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["saga-gateway"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("mlflow", "saga-gateway"):  # the bucket exists before anyone writes to it
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_images_and_dockerfile(services):
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    # pinned MinIO releases (no floating "latest"); the MinIO image ships `mc` for its health check
    assert re.fullmatch(r"minio/minio:RELEASE\.[0-9T-]+Z", services["minio"]["image"])
    assert re.fullmatch(r"minio/mc:RELEASE\.[0-9T-]+Z", services["minio-init"]["image"])
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert "[celery,s3]" in DOCKERFILE.read_text()  # boto3: MLflow's S3 artifact store
    images = {services[n]["image"] for n in SAGA_IMAGE_SERVICES}
    assert len(images) == 1, images  # one image, built from this repo
    assert all(services[n]["build"] == "." for n in SAGA_IMAGE_SERVICES)
    docker = DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+(\S+)", docker, re.M).group(1)
    airflow_version = version("apache-airflow")
    assert base == f"apache/airflow:{airflow_version}-python3.11", (base, airflow_version)
    assert "--constraint /opt/saga/constraints.txt" in docker
    assert "COPY --chown=airflow:0 requirements/constraints.txt" in docker
    pinned = (REPO / "requirements" / "constraints.txt").read_text()
    assert f"apache-airflow=={airflow_version}\n" in pinned
    assert f'"apache-airflow=={airflow_version}"' in docker


def test_dags_are_mounted_where_airflow_reads_them(compose, services):
    common = compose["x-airflow-common"]
    assert "./dags:/opt/airflow/dags" in common["volumes"]
    assert common["environment"]["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"
    for name in (*AIRFLOW_PROCESSES, "airflow-init"):
        assert "./dags:/opt/airflow/dags" in services[name]["volumes"], name
    assert (REPO / "scripts" / "compose" / "postgres-init.sh").exists()


def test_no_secret_literal_in_the_compose_file(services):
    text = COMPOSE.read_text()
    for name, svc in services.items():
        for key, value in _env(svc).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):  # a path to a secret is no secret
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", value), (
                    f"{name}: {key} must be ${{VAR:?...}}"
                )
    # URLs with credentials take the password from a variable
    for m in re.finditer(r"://([^:/@\s]*):([^@\s]*)@", text):
        assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", m.group(2)), m.group(0)
    # secret variables never have a default that would become a shared literal
    for var, op, _ in VAR_REF.findall(text):
        if SECRET_NAME.search(var):
            assert op == ":?", f"${{{var}}} must be required (:?), not defaulted"
    # and none of the example values leaks in
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            value = line.split("=", 1)[1]
            if SECRET_NAME.search(line.split("=", 1)[0]):
                assert value not in text


def test_every_variable_the_compose_file_reads_is_documented_in_env_example():
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))
    used = {var for var, _, _ in VAR_REF.findall(COMPOSE.read_text())}
    assert used - documented == set()


def test_env_generator_covers_every_required_variable():
    required = {var for var, op, _ in VAR_REF.findall(COMPOSE.read_text()) if op == ":?"}
    script = (REPO / "scripts" / "compose-env.sh").read_text()
    assert all(f"{var}=" in script for var in required), required


# --- 3. consistency with the process topology ------------------------------------------------------------
def test_airflow_env_keys_are_ones_the_process_test_sets(compose, services, process_topology):
    process_env = process_topology["airflow"].env
    compose_keys = set(_env(compose["x-airflow-common"]))
    for name in (*AIRFLOW_PROCESSES, "airflow-init"):
        compose_keys |= set(_env(services[name]))
    airflow_keys = {
        k for k in compose_keys if k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "SAGA_", "MLFLOW_"))
    }
    assert airflow_keys, compose_keys
    # The Celery process test shares a local capture directory; S3 capture is covered by test_capture_s3.
    assert airflow_keys - set(process_env) - {"SAGA_CAPTURE_DIR"} == set()
    # the settings that make a Celery deployment work, on both sides
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND",
                "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW_CONN_MLFLOW_DEFAULT"):  # fmt: skip
        assert key in airflow_keys and key in process_env, key
    assert process_env["AIRFLOW__CORE__EXECUTOR"] == compose["x-airflow-common"]["environment"][
        "AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"  # fmt: skip


def test_airflow_commands_match_the_processes(services, process_topology):
    processes = process_topology["airflow"].process_commands()
    assert set(processes) == set(AIRFLOW_PROCESSES.values())
    for svc, proc in AIRFLOW_PROCESSES.items():
        compose_cmd, process_cmd = _command(services[svc]), processes[proc]
        assert _positional(compose_cmd) == _positional(process_cmd), svc
        assert _flags(compose_cmd) <= _flags(process_cmd), svc


def test_execution_api_url_points_at_the_api_server(compose, services):
    url = compose["x-airflow-common"]["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    port = _flag_value(_command(services["airflow-apiserver"]), "--port")
    assert url == f"http://airflow-apiserver:{port}/execution/"


def test_mlflow_server_flags_match_the_process_and_allow_its_service_name(services, process_topology):
    compose_cmd = _command(services["mlflow"])
    process_cmd = process_topology["mlflow"].command()
    assert _positional(compose_cmd) == ["mlflow", "server"]
    assert Path(process_cmd[0]).name == "mlflow" and process_cmd[1] == "server"
    assert _flags(compose_cmd) == _flags(process_cmd)
    assert "--default-artifact-root" not in compose_cmd  # artifacts are proxied
    assert _flag_value(compose_cmd, "--backend-store-uri").startswith("postgresql://")
    allowed = _flag_value(compose_cmd, "--allowed-hosts")
    assert allowed == process_topology["allowed_hosts"]
    port = _flag_value(compose_cmd, "--port")
    patterns = allowed.split(",")
    # the Host headers MLflow will see: other containers, the health check, the published port
    for host in (f"mlflow:{port}", f"localhost:{port}", f"127.0.0.1:{port}"):
        assert any(fnmatch.fnmatch(host, p) for p in patterns), host


def test_mlflow_clients_use_the_service_name(compose, services):
    port = _flag_value(_command(services["mlflow"]), "--port")
    conn = json.loads(compose["x-airflow-common"]["environment"]["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    assert conn == {"conn_type": "mlflow", "host": f"http://mlflow:{port}"}
    assert _flag_value(_command(services["saga-gateway"]), "--tracking-uri") == f"http://mlflow:{port}"


def _expand(value: str) -> str:
    """A compose value with ``${VAR:-default}`` replaced by its default."""
    return VAR_REF.sub(lambda m: m.group(3) if m.group(2) == ":-" else f"<{m.group(1)}>", value)


def test_gateway_command_parses_and_matches_the_process(compose, services, process_topology):
    from airflow_saga.cli import build_parser
    from tests.integration.serving import test_capture_s3

    compose_cmd = _command(services["saga-gateway"])
    assert _positional(compose_cmd)[:2] == ["saga", "serve"]
    args = build_parser().parse_args([_expand(a) for a in compose_cmd[1:]])  # SystemExit on an unknown flag
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8000
    # capture goes to the object store, durably, through a spool on a volume of the gateway's own
    assert args.capture_dir == "s3://saga/capture" and args.capture_durability == "durable"
    volumes = services["saga-gateway"]["volumes"]
    spool_mounts = [v for v in volumes if v.endswith(f":{args.capture_spool_dir}")]
    assert spool_mounts and spool_mounts[0].split(":")[0] in compose["volumes"]
    process_cmd = process_topology["gateway"].cmd
    assert Path(process_cmd[0]).name == "saga" and process_cmd[1] == "serve"
    # flags the Celery process test runs, or the S3 capture test (same flags, on moto's S3 server)
    assert _flags(compose_cmd) <= _flags(process_cmd) | test_capture_s3.GATEWAY_FLAGS


def test_capture_and_artifacts_share_one_object_store(compose, services):
    common = _env(compose["x-airflow-common"])
    gateway, mlflow = _env(services["saga-gateway"]), _env(services["mlflow"])
    capture_dir = _expand(_flag_value(_command(services["saga-gateway"]), "--capture-dir"))
    assert _expand(common["SAGA_CAPTURE_DIR"]) == capture_dir  # the monitors read where the gateway writes
    artifacts = _expand(_flag_value(_command(services["mlflow"]), "--artifacts-destination"))
    assert artifacts.startswith("s3://saga/") and capture_dir.startswith("s3://saga/")
    minio = _env(services["minio"])
    for env in (common, gateway, mlflow):  # one set of keys, from .env, for every S3 client
        assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert common["AWS_ENDPOINT_URL"] == gateway["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "9000:9000" not in str(services["minio"].get("ports"))  # the S3 API stays inside the network
