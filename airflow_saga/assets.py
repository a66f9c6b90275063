"""Airflow Assets that connect monitoring to retraining.

Each model has its own drift asset, ``saga://drift/<model>``, so a training DAG is scheduled on the drift
of exactly the model it trains (an asset-triggered run has no conf: its Params take their defaults, so
the asset and the DAG's default ``model_name`` must name the same model). The drift monitor DAG serves
any model from one file, so its task cannot list a model's asset at parse time; it declares the alias
``saga-drift`` as its outlet and attaches the model's asset to the alias at run time. Airflow then records
an event for ``saga://drift/<model>`` and queues every DAG scheduled on it.
"""

from __future__ import annotations

from urllib.parse import quote

from airflow.sdk import Asset, AssetAlias

DRIFT_ALIAS_NAME = "saga-drift"
DRIFT_GROUP = "saga-drift"


def drift_alias() -> AssetAlias:
    return AssetAlias(DRIFT_ALIAS_NAME)


def drift_asset(model_name: str) -> Asset:
    """The asset whose events mean "traffic of ``model_name`` drifted from its baseline"."""
    return Asset(
        uri=f"saga://drift/{quote(model_name, safe='')}",
        name=f"saga-drift-{model_name}",
        group=DRIFT_GROUP,
    )
