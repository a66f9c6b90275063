#!/usr/bin/env bash
# The whole test suite: unit, integration (real MLflow server + dag.test) and end-to-end (real Airflow
# processes over REST). Installs what it needs first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
# Bytecode goes to a private cache: PYTHONDONTWRITEBYTECODE=1 would make every Airflow/MLflow process
# start ~2.5x slower.
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$PWD/.saga/pycache}"
export SAGA_PYCACHE="$PYTHONPYCACHEPREFIX"
unset PYTHONDONTWRITEBYTECODE
unset MLFLOW_TRACKING_URI
exec .venv/bin/python -m pytest -p no:cacheprovider tests "$@"
