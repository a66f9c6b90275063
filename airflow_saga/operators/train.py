"""Training operators: an estimator named by import path, or the user's own training function.

``TrainModelOperator`` fits a scikit-learn estimator spec; ``TrainFunctionOperator`` (and its TaskFlow form
``@task.saga_train``, see ``airflow_saga.decorators``) runs a function the user wrote. Both log the same run
(params, dataset inputs with content digest, model with signature, input example and pinned requirements,
held-out and reference data, Airflow lineage tags) and return the same training summary, which
``EvaluateModelOperator`` and ``RegisterModelOperator`` take as an XComArg (``train.output``) or a template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_saga.links import MlflowRunLink, mlflow_run_url, set_mlflow_links
from airflow_saga.openlineage import OpenLineageMixin
from airflow_saga.operators._util import as_bool, as_dict, as_float, as_int, as_value, saga_errors
from airflow_saga.operators.base import SagaBaseOperator, airflow_facts

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

    from airflow.sdk import Context

# Data-source fields shared by both operators, templated.
_DATA_FIELDS = ("data_source", "target", "hyperparameters", "test_size", "random_state")
_CACHE_FIELDS = ("model_name", "experiment_name", "cache", "cache_expire_after")


class _TrainingOperator(OpenLineageMixin, SagaBaseOperator):
    """What both training operators share: data-source policy, cache settings, and publishing the result."""

    operator_extra_links = (MlflowRunLink(),)
    template_fields_renderers = {"hyperparameters": "json", "data_source": "json"}
    ui_color = "#d5e8f7"

    def __init__(
        self,
        *,
        model_name: str,
        data_source: Any = None,
        target: str | None = None,
        hyperparameters: dict[str, Any] | str | None = None,
        test_size: float | str = 0.25,
        random_state: int | str = 42,
        experiment_name: str | None = None,
        cache: bool | str = False,
        cache_expire_after: str | int | None = "P30D",
        allowed_source_prefixes: Sequence[str] = (),
        allowed_sql_conn_ids: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.data_source = data_source
        self.target = target
        self.hyperparameters = hyperparameters
        self.test_size = test_size
        self.random_state = random_state
        self.experiment_name = experiment_name
        self.cache = cache
        self.cache_expire_after = cache_expire_after
        self.allowed_source_prefixes = tuple(allowed_source_prefixes)
        self.allowed_sql_conn_ids = tuple(allowed_sql_conn_ids)

    def _common(self, hyperparameters: Any = None) -> dict[str, Any]:
        """The rendered, validated settings both core entry points take."""
        source = as_value(self.data_source, "data_source")
        hp = self.hyperparameters if hyperparameters is None else hyperparameters
        return {
            "model_name": str(self.model_name),
            "data_source": source if source not in ("", "None") else None,
            "hyperparameters": as_dict(hp, "hyperparameters"),
            "test_size": as_float(self.test_size, "test_size"),
            "random_state": as_int(self.random_state, "random_state"),
            "experiment_name": str(self.experiment_name) if self.experiment_name else None,
            "cache_enabled": as_bool(self.cache, "cache"),
            "cache_expire_after": self.cache_expire_after or None,
            "allowed_source_prefixes": self.allowed_source_prefixes,
            "allowed_sql_conn_ids": self.allowed_sql_conn_ids,
        }

    def _publish(self, context: Context, result: dict[str, Any], what: str) -> dict[str, Any]:
        ti = context["ti"]
        ti.xcom_push(key="run_id", value=result["run_id"])
        ti.xcom_push(key="model_uri", value=result["model_uri"])
        ds = result["dataset"]
        self.log.info(
            "Trained %s (%s flavour) on %s (digest %s, %d rows): run %s, model %s%s",
            what,
            result.get("flavor"),
            ds["source"],
            ds["digest"],
            ds["rows"],
            result["run_id"],
            result["model_uri"],
            f" [cache hit: fitted by run {result['cache_source_run_id']}]" if result["cache_hit"] else "",
        )
        set_mlflow_links(
            self,
            context,
            run_url=mlflow_run_url(self.hook.settings.browser_url, result["experiment_id"], result["run_id"]),
        )
        return result

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: the data source (with its content digest) in; the logged model out."""
        from airflow_saga import openlineage as ol

        if not result:
            source = _safe_source(self.data_source)
            return ([ol.source_dataset(source)] if source else []), []
        ds, ns = result.get("dataset") or {}, self.saga_namespace()
        data = ol.source_dataset(
            ds.get("source") or _safe_source(self.data_source) or "<unknown>",
            digest=ds.get("digest"),
            rows=ds.get("rows"),
            target=ds.get("target"),
        )
        model = ol.artifact_dataset(ns, result.get("model_uri"), kind="MODEL", run_id=result.get("run_id"))
        return [data], [model]


def _safe_source(spec: Any) -> str | None:
    """A data-source spec as lineage may show it (no credentials), or None when there is none."""
    from airflow_saga.core.sources import parse_source

    if spec in (None, "", "None"):
        return None
    try:
        return parse_source(as_value(spec, "data_source")).description
    except Exception:  # a malformed spec fails the task itself; lineage just says nothing about it
        return None


class TrainModelOperator(_TrainingOperator):
    """Train a scikit-learn estimator and record it in MLflow (SageMaker's TrainingStep).

    Logs a run with the params, the training and held-out data as MLflow dataset inputs (content digest and
    source), the model with signature, input example and pinned requirements, and tags naming the Airflow
    DAG, run, task and try. Pushes ``run_id`` and ``model_uri`` to XCom; the return value is the full
    training summary that ``EvaluateModelOperator`` and ``RegisterModelOperator`` take.

    :param model_name: registered model this training feeds (names the experiment ``saga/<model_name>``).
    :param estimator: import path of an estimator/Pipeline class or a ``module:factory`` callable.
    :param hyperparameters: passed to ``set_params``; unknown names fail the task.
    :param data_source: any data-source spec: CSV/Parquet path or URI, ``sklearn:<bundled dataset>``, a
        ``module:function`` returning a DataFrame, or SQL (``"sql:<conn_id>:<query>"`` or
        ``{"sql": ..., "conn_id": ...}``); see ``airflow_saga.core.sources``.
    :param target: target column name.
    :param test_size: held-out fraction for evaluation.
    :param cache: opt-in step caching keyed on spec + dataset content digest + package version.
    :param cache_expire_after: ISO-8601 duration (``P30D``) or seconds.
    :param allowed_estimator_prefixes: modules estimators may be imported from (UI params are untrusted).
    :param allowed_source_prefixes: modules a callable data source may come from (default: none).
    :param allowed_sql_conn_ids: connections a SQL data source may query (default: none).
    """

    template_fields: Sequence[str] = ("estimator", *_DATA_FIELDS, *_CACHE_FIELDS)

    def __init__(
        self,
        *,
        model_name: str,
        estimator: str,
        data_source: Any,
        target: str,
        allowed_estimator_prefixes: Sequence[str] = ("sklearn.",),
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name=model_name, data_source=data_source, target=target, **kwargs)
        self.estimator = estimator
        self.allowed_estimator_prefixes = tuple(allowed_estimator_prefixes)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core.training import TrainSpec, train
        from airflow_saga.hooks.sql import read_sql

        with saga_errors():
            spec = TrainSpec(
                estimator=str(self.estimator),
                target=str(self.target),
                allowed_prefixes=self.allowed_estimator_prefixes,
                **self._common(),
            )
            result = train(
                self.hook.client, spec, airflow=airflow_facts(context), log=self.log, sql_loader=read_sql
            )
        return self._publish(context, result, spec.estimator)


class TrainFunctionOperator(_TrainingOperator):
    """Run your own training function and record it exactly like ``TrainModelOperator`` does.

    ``python_callable`` returns a fitted model of any supported flavour: a scikit-learn-API estimator
    (including XGBoost's ``XGBClassifier``/``XGBRegressor`` and LightGBM's ``LGBMClassifier``/
    ``LGBMRegressor``), a native ``xgboost.Booster`` or ``lightgbm.Booster``, or an
    ``mlflow.pyfunc.PythonModel``; or a ``TrainedModel`` that also names the data it loaded itself.

    It is called with what it asks for by parameter name. With a ``data_source`` (loaded, checked and split
    here): ``train`` (training rows, target included), ``X``, ``y``, ``hyperparameters``, ``target``,
    ``features``; always: ``op_kwargs`` entries, and Airflow context values (``ti``, ``params``, ...).
    Without one it loads its own data and returns ``TrainedModel(model, train=..., target=..., holdout=...,
    source=...)``. Code defined in the DAG file is pickled by value into the model, so the gateway needs
    no DAG file. The result is the training summary, with ``flavor``, ``origin`` and
    ``training_function`` added.

    :param python_callable: the training function.
    :param op_args: positional arguments for it (templated).
    :param op_kwargs: keyword arguments for it (templated); logged as ``arg.<name>`` params and part of the
        cache key.
    :param problem_type: ``classification`` or ``regression``; inferred from the model (or target) when unset.
    :param pip_requirements: extra requirements for serving the model (``["my-lib==1.2"]``).

    The other parameters are ``TrainModelOperator``'s (``data_source``, ``target``, ``hyperparameters``,
    ``test_size``, ``random_state``, ``cache``, ``cache_expire_after``, ``allowed_source_prefixes``,
    ``allowed_sql_conn_ids``).
    """

    template_fields: Sequence[str] = ("op_args", "op_kwargs", "problem_type", *_DATA_FIELDS, *_CACHE_FIELDS)
    template_fields_renderers = {**_TrainingOperator.template_fields_renderers, "op_kwargs": "py"}
    shallow_copy_attrs: Sequence[str] = ("python_callable",)

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        model_name: str,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        problem_type: str | None = None,
        pip_requirements: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        if not callable(python_callable):
            raise TypeError(f"python_callable must be callable, got {type(python_callable).__name__}")
        super().__init__(model_name=model_name, **kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.problem_type = problem_type
        self.pip_requirements = tuple(pip_requirements)
        _check_signature(python_callable, self.op_args, self.op_kwargs, has_data=self.data_source is not None)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core.training import INJECTED, FunctionSpec, function_id, train_function
        from airflow_saga.hooks.sql import read_sql

        op_kwargs = dict(self.op_kwargs)
        call_hp = op_kwargs.pop("hyperparameters", None)  # a call-site value wins over the operator's
        with saga_errors():
            common = self._common(call_hp)
            spec = FunctionSpec(
                target=str(self.target) if self.target not in (None, "", "None") else None,
                arguments={k: v for k, v in op_kwargs.items() if k not in INJECTED},
                task=str(self.problem_type) if self.problem_type not in (None, "", "None") else None,
                extra_requirements=self.pip_requirements,
                **common,
            )
            injected_overrides = {k: v for k, v in op_kwargs.items() if k in INJECTED}
            result = train_function(
                self.hook.client,
                self.python_callable,
                spec,
                args=self.op_args,
                runtime_kwargs={**_context_kwargs(self.python_callable, context), **injected_overrides},
                airflow=airflow_facts(context),
                log=self.log,
                sql_loader=read_sql,
            )
        return self._publish(context, result, function_id(self.python_callable))


def _context_kwargs(fn: Callable[..., Any], context: Context) -> dict[str, Any]:
    """The Airflow context values ``fn`` asks for by name (``ti``, ``params``, ``dag_run``, ...)."""
    import inspect

    wanted = set(inspect.signature(fn).parameters)
    return {k: v for k, v in context.items() if k in wanted}


def _check_signature(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], *, has_data: bool
) -> None:
    """Fail at parse time when the function needs an argument nobody will supply."""
    import inspect

    from airflow.sdk.definitions.context import KNOWN_CONTEXT_KEYS

    data_names = {"train", "X", "y", "target", "features"} if has_data else {"target"}
    supplied = data_names | {"hyperparameters"} | set(KNOWN_CONTEXT_KEYS) | set(kwargs)
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    taken = {p.name for p in positional[: len(args)]}
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in taken | supplied
    ]
    if missing:
        hint = "" if has_data else " (no data_source is set, so train/X/y are not available)"
        raise TypeError(
            f"training function {getattr(fn, '__qualname__', fn)!r} needs {missing}, which nothing supplies"
            f"{hint}; pass them as arguments of the call / op_kwargs"
        )
