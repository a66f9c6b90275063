"""The inference gateway: MLflow-protocol serving with weighted variants, shadow mirroring and data capture.

Modules, one job each: ``config`` (settings), ``protocol`` (payload parsing/validation), ``models`` (loading
and hot swap), ``shadow`` (mirroring), ``metrics`` (Prometheus), ``auth`` (bearer and webhook HMAC),
``app`` (the ASGI app), ``server`` (uvicorn). Capture files are written by ``airflow_saga.core.capture``.
"""
