#!/usr/bin/env bash
# Fresh machine -> working demo: install, start MLflow + Airflow on 127.0.0.1, run the lifecycle through
# Airflow's REST API, print the outcome and the UI URLs. Pass --keep-running to keep the stack up.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$PWD/.saga/pycache}"
export SAGA_PYCACHE="$PYTHONPYCACHEPREFIX"
unset PYTHONDONTWRITEBYTECODE
exec .venv/bin/saga demo "$@"
