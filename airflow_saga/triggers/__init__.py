"""Triggers: async, non-blocking waits run by the Airflow triggerer."""
