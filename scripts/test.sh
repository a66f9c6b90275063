#!/usr/bin/env bash
# The whole test suite: unit, integration (real MLflow server + dag.test) and end-to-end (real Airflow
# processes over REST). Installs what it needs first. Arguments, if any, replace the test selection.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
scripts/install-browser.sh  # Debian Chromium for the Playwright check, when missing
# Bytecode goes to a private cache: PYTHONDONTWRITEBYTECODE=1 would make every Airflow/MLflow process
# start ~2.5x slower.
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$PWD/.saga/pycache}"
export SAGA_PYCACHE="$PYTHONPYCACHEPREFIX"
unset PYTHONDONTWRITEBYTECODE
unset MLFLOW_TRACKING_URI
# With no arguments: the whole suite. Arguments replace the default selection (e.g. tests/unit -q).
if [ "$#" -eq 0 ]; then set -- tests; fi
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
