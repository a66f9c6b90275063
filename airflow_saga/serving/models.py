"""Load registered model versions and swap them atomically when an alias moves.

A :class:`Slot` per alias holds a reference to a fully loaded, warmed-up :class:`LoadedModel`. A swap
replaces that one reference, so a request (which reads ``slot.current`` once) sees either the old model or
the new one, never a half-loaded one. A version that fails to load leaves the old one serving and records
the error for ``/health`` and ``/metrics``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_saga.core.errors import SagaError, ServingError
from airflow_saga.serving.protocol import Batch, InputSpec, jsonable

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_saga.core.mlflow_client import MlflowSettings

log = logging.getLogger(__name__)
CACHE_PREFIX = "saga-serve-"

# Fitted-with-DataFrame estimators warn on every ndarray predict; the fast path passes columns in signature
# order, which is exactly what the names would enforce.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


def freeze_heap() -> None:
    """Collect startup garbage, then move every object alive now out of the cyclic GC's reach.

    A serving process holds a few hundred thousand long-lived objects (MLflow, pandas, sklearn, uvicorn,
    the loaded models); a full (generation 2) collection walks all of them and holds the GIL for 100-250 ms
    on a 2-core machine. Capture entries and shadow copies live for up to a flush interval, so they survive
    the young generations and trigger such collections every several seconds under load: a stall of every
    in-flight request, which showed up as ~150 ms maxima only in the capture scenarios of the benchmark.
    After freezing, a full collection walks only what was allocated since. Frozen objects are still freed
    by reference counting; what is lost is the collection of *cyclic* garbage among them, i.e. a model
    loaded at startup that is later swapped out and holds reference cycles stays in memory (once per
    alias: models loaded later are not frozen). Call once, before serving.
    """
    import gc

    gc.collect()
    gc.freeze()


@dataclass
class LoadedModel:
    """One model version, ready to predict. ``fast`` is the raw estimator method when proven equivalent."""

    alias: str
    version: str
    pyfunc: Any
    spec: InputSpec
    fast: Callable[[np.ndarray], Any] | None
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    path: str | None = None  # the local model copy: the large-request lane loads it in its own process

    def predict_batch(self, batch: Batch) -> list[Any]:
        """Predict synchronously; ndarray fast path when available, else pyfunc on a DataFrame."""
        if self.fast is not None and batch.array is not None and self.spec.columns == tuple(batch.columns):
            return self.fast(batch.array).tolist()
        return jsonable(self.pyfunc.predict(self.frame(batch)))

    def frame(self, batch: Batch) -> Any:
        if batch.frame is not None:
            return batch.frame
        import pandas as pd

        return pd.DataFrame(batch.rows, columns=batch.columns)


def fast_method(pyfunc: Any) -> Callable[[np.ndarray], Any] | None:
    """The estimator method pyfunc would call, for MLflow's sklearn flavor; None for anything else."""
    from airflow_saga.core.compat import sklearn_estimator_of

    estimator = sklearn_estimator_of(pyfunc)
    if estimator is None:
        return None
    fn_name = pyfunc.metadata.flavors.get("python_function", {}).get("predict_fn", "predict")
    return getattr(estimator, fn_name, None)


def _prove_fast_path(pyfunc: Any, spec: InputSpec, fast: Callable[[np.ndarray], Any]) -> bool:
    """Compare fast and pyfunc predictions on a probe input; any doubt disables the fast path."""
    import pandas as pd

    assert spec.columns is not None
    try:
        example = pyfunc.input_example
    except Exception:
        example = None
    if isinstance(example, pd.DataFrame) and list(example.columns) == list(spec.columns):
        probe = example.astype("float64")
    else:
        probe = pd.DataFrame(np.zeros((2, len(spec.columns))), columns=list(spec.columns))
    try:
        expected = np.asarray(pyfunc.predict(probe))
        got = np.asarray(fast(probe.to_numpy(dtype=np.float64)))
        return expected.shape == got.shape and bool(np.all(expected == got))
    except Exception as exc:
        log.info("fast path disabled: probe prediction failed: %s", exc)
        return False


class Loader:
    """Resolve ``alias`` -> version through MLflow and load that version into memory."""

    def __init__(self, settings: MlflowSettings, model: str, fast_path: bool = True) -> None:
        from airflow_saga.core.mlflow_client import build_client

        self.settings = settings
        self.model = model
        self.fast_path = fast_path
        from airflow_saga.serving import tempdirs

        self.client = build_client(settings, check=False)
        tempdirs.clean_stale(CACHE_PREFIX)  # model copies of gateways that were killed
        self.cache_dir = str(tempdirs.make(CACHE_PREFIX))

    def resolve(self, alias: str) -> str:
        try:
            return str(self.client.get_model_version_by_alias(self.model, alias).version)
        except Exception as exc:
            raise ServingError(
                f"cannot resolve alias {alias!r} of model {self.model!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def check_recorded(self, alias: str, version: str) -> None:
        """Refuse a version put on ``alias`` outside saga when the model's policy says so (ServingError).

        Only when the version changes (not per poll); the policy is ``core.policy.policy_for`` (the
        gateway's ``$SAGA_GOVERNANCE_POLICY``) with ``refuse_unrecorded_serving``.
        """
        from airflow_saga.core.alias_history import unrecorded_aliases
        from airflow_saga.core.policy import policy_for

        try:
            policy = policy_for(self.model)
            if not getattr(policy, "refuse_unrecorded_serving", False):
                return
            found = [u for u in unrecorded_aliases(self.client, self.model) if u.alias == alias]
        except SagaError as exc:
            raise ServingError(
                f"cannot check @{alias} of model {self.model!r} against its policy: {exc}"
            ) from exc
        if found and found[0].registry == version:
            u = found[0]
            raise ServingError(
                f"refusing to serve @{alias} of model {self.model!r}: version {version} was put there "
                f"outside saga (its history says {u.recorded or 'nobody'}, entry #{u.seq}); policy "
                f"{getattr(policy, 'name', '?')!r} has refuse_unrecorded_serving (promote it with saga)"
            )

    def load(self, alias: str, version: str) -> LoadedModel:
        import mlflow.pyfunc

        from airflow_saga.core.mlflow_client import download_artifacts

        t0 = time.perf_counter()
        dst = tempfile.mkdtemp(prefix=f"v{version}-", dir=self.cache_dir)
        try:
            # Resolve the artifact location through our client: a ``models:/`` URI would be resolved
            # against MLflow's process-global registry URI instead of this gateway's server.
            source = self.client.get_model_version_download_uri(self.model, version)
            local = download_artifacts(self.settings, source, dst)
            pyfunc = mlflow.pyfunc.load_model(local)
        except Exception as exc:
            shutil.rmtree(dst, ignore_errors=True)
            raise ServingError(
                f"cannot load model {self.model!r} version {version} ({alias}): {type(exc).__name__}: {exc}"
            ) from exc
        spec = InputSpec.from_pyfunc(pyfunc)
        fast = fast_method(pyfunc) if self.fast_path and spec.numeric else None
        if fast is not None and not _prove_fast_path(pyfunc, spec, fast):
            fast = None
        return LoadedModel(
            alias, version, pyfunc, spec, fast, load_seconds=time.perf_counter() - t0, path=str(local)
        )

    def close(self) -> None:
        shutil.rmtree(self.cache_dir, ignore_errors=True)


@dataclass
class Slot:
    """The model currently served for one alias, plus what went wrong last time we tried to change it."""

    alias: str
    role: str  # "variant" | "shadow"
    current: LoadedModel | None = None
    error: str | None = None
    error_at: float | None = None
    checked_at: float | None = None
    swaps: int = 0
    failures: int = 0

    def status(self) -> dict[str, Any]:
        cur = self.current
        return {
            "alias": self.alias,
            "role": self.role,
            "version": cur.version if cur else None,
            "fast_path": bool(cur and cur.fast),
            "loaded_at": cur.loaded_at if cur else None,
            "error": self.error,
            "checked_at": self.checked_at,
            "swaps": self.swaps,
        }


class ModelManager:
    """Owns the slots and the poller thread that follows alias moves."""

    def __init__(self, loader: Loader, variants: list[str], shadow: str | None, poll_interval: float) -> None:
        self.loader = loader
        self.slots: dict[str, Slot] = {a: Slot(a, "variant") for a in variants}
        if shadow:
            self.slots[shadow] = Slot(shadow, "shadow")
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._refresh_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.on_swap: list[Callable[[Slot], None]] = []
        # alias -> loader used instead of ``loader.load`` (the shadow process loads its own model)
        self.loaders: dict[str, Callable[[str, str], LoadedModel]] = {}

    def refresh(self, alias: str) -> bool:
        """Load the alias's version if it moved; True when a swap happened. Never raises."""
        slot = self.slots[alias]
        slot.checked_at = time.time()
        try:
            version = self.loader.resolve(alias)
            if slot.current is not None and slot.current.version == version:
                slot.error = None
                return False
            self.loader.check_recorded(alias, version)
            model = self.loaders.get(alias, self.loader.load)(alias, version)
        except SagaError as exc:  # ServingError, or MlflowUnreachableError: keep serving what we have
            slot.error, slot.error_at = str(exc), time.time()
            slot.failures += 1
            log.warning("%s; still serving version %s", exc, slot.current.version if slot.current else None)
            return False
        old = slot.current
        slot.current = model  # the atomic swap: one reference assignment
        slot.error = None
        slot.swaps += 1
        log.warning(
            "alias %s of %s now serves version %s (was %s)",
            alias,
            self.loader.model,
            model.version,
            old.version if old else None,
        )
        self._warn_unrecorded(alias)
        for cb in self.on_swap:
            cb(slot)
        return True

    def _warn_unrecorded(self, alias: str) -> None:
        """Log when the version just loaded for a governed alias got there outside saga (story WP hunk).

        One history search per governed alias, on loads and swaps only (never per request); a failed
        check is logged and changes nothing about serving.
        """
        from airflow_saga.core import alias_history

        if alias not in alias_history.ALIASES:
            return
        try:
            moved = alias_history.unrecorded_aliases(self.loader.client, self.loader.model)
        except Exception as exc:
            log.warning("could not check the promotion history of %s: %s", self.loader.model, exc)
            return
        for u in moved:
            if u.alias == alias:
                log.warning("UNRECORDED CHANGE: serving it anyway: %s", u.message())

    def refresh_all(self) -> None:
        with self._refresh_lock:
            for alias in self.slots:
                self.refresh(alias)

    def start(self) -> None:
        """Load every alias once; refuse to start unless at least one production variant loaded."""
        self.refresh_all()
        variants = [s for s in self.slots.values() if s.role == "variant"]
        if not any(s.current for s in variants):
            errors = "; ".join(s.error or f"{s.alias}: not loaded" for s in variants)
            raise ServingError(
                f"no production variant of model {self.loader.model!r} could be loaded: {errors}"
            )
        self._thread = threading.Thread(target=self._poll, name="saga-alias-poller", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Check aliases now (a webhook said something moved)."""
        self._wake.set()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh_all()
            except Exception:  # pragma: no cover - refresh never raises, but the poller must not die
                log.exception("alias poll failed")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.loader.close()
