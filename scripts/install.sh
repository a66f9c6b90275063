#!/usr/bin/env bash
# Create .venv and install airflow-saga with every dependency pinned by requirements/constraints.txt.
# Idempotent: a second run only checks that the environment matches.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
UV_VERSION=0.13.9
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  # uv resolves and installs the ~250 pinned packages in seconds where pip takes minutes.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
fi
.venv/bin/uv pip install --quiet --python .venv/bin/python \
  --constraint requirements/constraints.txt --editable ".[dev,celery,frameworks,openlineage,s3]"
