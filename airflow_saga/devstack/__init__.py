"""Run the embedded stack (MLflow + Airflow + gateway) as local processes bound to 127.0.0.1.

Used by ``saga demo`` / ``saga up`` and by the end-to-end tests, so what a newcomer runs is what CI tests.
"""
