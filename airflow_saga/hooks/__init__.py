"""Airflow hooks: connections -> clients."""
