"""OpenLineage for saga operators, through Airflow's OpenLineage provider (``airflow-saga[openlineage]``).

Lineage backends (Marquez, DataHub, ...) should see the chain a reviewer asks about: data (source and
content digest) -> training run -> model -> evaluation report -> gate decision -> model version ->
approval -> alias (what is deployed) -> shadow and drift reports. Each saga operator declares its part of
that chain in one small method, ``openlineage_io(result)``, returning plain ``LineageDataset`` values built
from what the task just did (its return value and rendered fields); ``OpenLineageMixin`` turns them into the
provider's ``OperatorLineage`` when the task completes. Nothing here talks to MLflow or re-reads XCom: the
provider calls ``get_openlineage_facets_on_complete`` in the worker right after ``execute``, on the same
operator object, so the result is captured in memory (``__init_subclass__`` wraps ``execute`` and
``execute_complete``).

Light at parse time: this module imports only the standard library; ``openlineage`` is imported when the
provider asks for facets, which only happens when the provider is installed and configured.

Dataset naming follows the OpenLineage naming spec where one exists: local files are namespace ``file``
with the absolute path as name, ``s3://bucket/key`` is namespace ``s3://bucket`` and name ``key`` (likewise
``gs``, ``abfss``, ``hdfs``). Things that live in MLflow are named under the tracking server's URI as
namespace: ``models/<name>/versions/<n>`` (a registered model version), ``models/<name>@<alias>`` (what an
alias serves: the deployment), ``runs/<run_id>/<artifact path>`` (reports, held-out data, logged models)
and ``models/<model id>`` (a logged model). Bundled datasets are ``sklearn`` / ``<name>``. The content
digest of a data source is its ``version`` facet (``datasetVersion``), and a ``saga`` facet carries the
rest (rows, target, model name and version, approval status, alias).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

SAGA_FACET = "saga"
SCHEMA_URL = "https://github.com/airflow-saga/airflow-saga/blob/main/docs/openlineage-saga-facet.json"
RESULT_ATTR = "_saga_ol_result"
CAPTURED = ("execute", "execute_complete")


@dataclasses.dataclass(frozen=True)
class LineageDataset:
    """One OpenLineage dataset as plain data: namespace, name, and the facets saga attaches."""

    namespace: str
    name: str
    version: str | None = None  # the ``version`` facet: content digest of data, or a model version
    kind: str | None = None  # the ``datasetType`` facet: DATA, MODEL, MODEL_VERSION, DEPLOYMENT, REPORT
    saga: dict[str, Any] = dataclasses.field(default_factory=dict)
    columns: tuple[str, ...] = ()  # the ``schema`` facet, when known
    rows: int | None = None  # ``outputStatistics.rowCount`` on outputs


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None and v != ""}


# --- naming -----------------------------------------------------------------------------------------


def mlflow_namespace(tracking_uri: str | None) -> str:
    """The namespace of everything in one MLflow server: its tracking URI (``mlflow`` when unknown)."""
    if not tracking_uri:
        return "mlflow"
    return tracking_uri.rstrip("/")


def source_dataset(source: str, *, digest: str | None = None, **saga: Any) -> LineageDataset:
    """A data source string (path, URI or ``sklearn:<name>``) as an OpenLineage dataset."""
    text = str(source).strip()
    parsed = urlparse(text)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and text[1:3] in (":\\", ":/")):
        path = parsed.path if parsed.scheme == "file" else text
        namespace, name = "file", os.path.abspath(path)
    elif parsed.scheme == "sklearn" or (parsed.scheme and not parsed.netloc and "/" not in parsed.path):
        namespace, name = parsed.scheme, parsed.path or parsed.netloc
    elif parsed.netloc:
        namespace, name = f"{parsed.scheme}://{parsed.netloc}", parsed.path.lstrip("/") or "/"
    else:
        namespace, name = parsed.scheme, parsed.path
    return LineageDataset(
        namespace, name, version=digest, kind="DATA", saga={"source": text, **_present(saga)}
    )


def artifact_dataset(
    namespace: str, uri: str | None, *, kind: str = "REPORT", **saga: Any
) -> LineageDataset | None:
    """An MLflow artifact or model URI (``runs:/run/path``, ``models:/m-id``, ``models:/name/3``)."""
    if not uri:
        return None
    text = str(uri)
    if text.startswith("runs:/"):
        name = "runs/" + text[len("runs:/") :].strip("/")
    elif text.startswith("models:/"):
        name = "models/" + text[len("models:/") :].strip("/")
    else:
        return source_dataset(text, **saga)
    return LineageDataset(namespace, name, kind=kind, saga={"uri": text, **_present(saga)})


def model_version_dataset(namespace: str, model: str, version: str | int, **saga: Any) -> LineageDataset:
    return LineageDataset(
        namespace,
        f"models/{model}/versions/{version}",
        version=str(version),
        kind="MODEL_VERSION",
        saga={"model_name": model, "model_version": str(version), **_present(saga)},
    )


def alias_dataset(
    namespace: str, model: str, alias: str, version: str | int | None, **saga: Any
) -> LineageDataset:
    """What ``models:/<model>@<alias>`` serves: the deployment a gateway loads."""
    return LineageDataset(
        namespace,
        f"models/{model}@{alias}",
        version=None if version is None else str(version),
        kind="DEPLOYMENT",
        saga={
            "model_name": model,
            "alias": alias,
            "model_version": version,
            **_present(saga),
        },
    )


# --- conversion to the provider's types -------------------------------------------------------------


def _facets(ds: LineageDataset, *, output: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    from openlineage.client.event_v2 import set_producer  # noqa: F401  (ensures the v2 client is present)
    from openlineage.client.facet_v2 import (
        dataset_type_dataset,
        dataset_version_dataset,
        output_statistics_output_dataset,
        schema_dataset,
    )

    facets: dict[str, Any] = {}
    if ds.version:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(ds.version))
    if ds.kind:
        facets["datasetType"] = dataset_type_dataset.DatasetTypeDatasetFacet(datasetType=ds.kind)
    if ds.columns:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=c) for c in ds.columns]
        )
    if ds.saga:
        facets[SAGA_FACET] = saga_facet(ds.saga)
    io_facets: dict[str, Any] = {}
    if output and ds.rows is not None:
        io_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=int(ds.rows)
        )
    return facets, io_facets


#: Fields of the custom ``saga`` dataset facet (all optional strings; absent ones are omitted).
SAGA_FIELDS = (
    "source",
    "uri",
    "rows",
    "target",
    "model_name",
    "model_version",
    "alias",
    "previous_version",
    "approval_status",
    "run_id",
    "decision",
    "window",
)


@functools.cache
def _saga_facet_class() -> type:
    import attr
    from openlineage.client.facet_v2 import DatasetFacet

    attrs = {f: attr.field(default=None) for f in SAGA_FIELDS}

    def _get_schema() -> str:
        return SCHEMA_URL

    cls = attr.make_class("SagaDatasetFacet", attrs, bases=(DatasetFacet,))
    cls._get_schema = staticmethod(_get_schema)
    return cls


def saga_facet(fields: dict[str, Any]) -> Any:
    """The custom ``saga`` dataset facet: saga's own fields (model version, alias, status, ...)."""
    unknown = sorted(set(fields) - set(SAGA_FIELDS))
    if unknown:
        raise ValueError(f"unknown saga lineage facet field(s): {unknown}; known: {SAGA_FIELDS}")
    values = {k: (None if v is None else str(v)) for k, v in fields.items()}
    return _saga_facet_class()(**values)


def to_operator_lineage(
    inputs: Sequence[LineageDataset | None], outputs: Sequence[LineageDataset | None]
) -> Any:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import InputDataset, OutputDataset

    ins, outs = [], []
    for ds in inputs:
        if ds is not None:
            facets, _ = _facets(ds, output=False)
            ins.append(InputDataset(namespace=ds.namespace, name=ds.name, facets=facets))
    for ds in outputs:
        if ds is not None:
            facets, io = _facets(ds, output=True)
            outs.append(OutputDataset(namespace=ds.namespace, name=ds.name, facets=facets, outputFacets=io))
    return OperatorLineage(inputs=ins, outputs=outs)


# --- the mixin --------------------------------------------------------------------------------------


def _capture(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = fn(self, *args, **kwargs)
        with contextlib.suppress(Exception):  # lineage must never break a task
            object.__setattr__(self, RESULT_ATTR, result)
        return result

    wrapper.__saga_ol_captured__ = True  # type: ignore[attr-defined]
    return wrapper


class OpenLineageMixin:
    """Give an operator OpenLineage facets from its ``openlineage_io(result)`` (see module docstring).

    Put it first in the bases (``class MyOperator(OpenLineageMixin, SagaBaseOperator)``) and define
    ``openlineage_io(self, result) -> tuple[list[LineageDataset | None], list[LineageDataset | None]]``.
    ``result`` is what ``execute`` (or ``execute_complete`` after a deferral) returned, or None.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in CAPTURED:
            fn = cls.__dict__.get(name)
            if callable(fn) and not getattr(fn, "__saga_ol_captured__", False):
                setattr(cls, name, _capture(fn))

    def openlineage_io(self, result: Any) -> tuple[list[LineageDataset | None], list[LineageDataset | None]]:
        return [], []

    def get_openlineage_facets_on_start(self) -> Any:
        return None  # inputs are known only once the task ran (digests, versions); complete carries them

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        try:
            inputs, outputs = self.openlineage_io(getattr(self, RESULT_ATTR, None))
        except Exception:  # lineage must never fail a task; say why in the task log
            log.warning("airflow-saga: could not build OpenLineage facets", exc_info=True)
            return None
        return to_operator_lineage(inputs, outputs)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self.get_openlineage_facets_on_complete(task_instance)

    def saga_namespace(self) -> str:
        """The MLflow namespace of this operator's connection (no network call; settings only)."""
        try:
            return mlflow_namespace(self.hook.settings.tracking_uri)  # type: ignore[attr-defined]
        except Exception:
            return "mlflow"


def as_mapping(value: Any) -> dict[str, Any]:
    """A rendered template field that holds a dict, or a JSON string of one (non-native rendering)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        import json

        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def alias_promotion_io(namespace: str, model: str, result: dict[str, Any] | None) -> tuple[list, list]:
    """A promotion or rollback (``PromotionResult.as_dict()``): version in, alias (deployment) out."""
    if not result or not result.get("version"):
        return [], []
    version = model_version_dataset(namespace, model, result["version"])
    alias = alias_dataset(
        namespace, model, str(result.get("alias")), result["version"], previous_version=result.get("previous")
    )
    return [version], [alias]
