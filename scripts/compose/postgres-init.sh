#!/usr/bin/env bash
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d): MLflow gets its
# own database and user next to Airflow's, so either can be backed up, restored or moved alone.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -v mlflow_pw="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE USER mlflow WITH PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;
SQL
