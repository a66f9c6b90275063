"""Plain-Python lifecycle logic. Nothing in this package imports Airflow, so it runs and tests alone."""
