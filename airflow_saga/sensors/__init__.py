"""Sensors: wait for decisions recorded in MLflow."""
