# airflow-saga on the official Airflow image: every Airflow component, MLflow and the gateway run from it.
# Built by docker-compose.yaml (`docker compose build`); the install uses the same pinned constraints as
# scripts/install.sh, so containers run the versions CI tested.
FROM apache/airflow:3.3.2-python3.11

USER root
# Volumes mounted here inherit this ownership when compose creates them.
RUN mkdir -p /opt/saga/capture /opt/saga/spool \
    && chown -R airflow:0 /opt/saga
USER airflow

COPY --chown=airflow:0 requirements/constraints.txt /opt/saga/constraints.txt
COPY --chown=airflow:0 pyproject.toml README.md /opt/saga/src/
COPY --chown=airflow:0 airflow_saga /opt/saga/src/airflow_saga
# Pinning apache-airflow keeps pip from touching the image's Airflow; [celery] brings the celery and
# postgres providers, psycopg2 (MLflow's PostgreSQL store) and redis; [s3] boto3 (MLflow's S3 artifacts).
RUN pip install --no-cache-dir --constraint /opt/saga/constraints.txt \
    "apache-airflow==3.3.2" "/opt/saga/src[celery,s3]"
