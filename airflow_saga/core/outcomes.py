"""What a monitor or a gate decided, as values code can switch on instead of strings it re-parses.

They are ``StrEnum``s, so they serialise as their plain value in XCom, MLflow tags and JSON reports
(``"drift"``, ``"promote"``) and compare equal to those strings: old reports and tags still read the same.
"""

from __future__ import annotations

import enum


class MonitorOutcome(enum.StrEnum):
    """A drift monitor run's verdict (tag ``saga.drift.verdict``)."""

    DRIFT = "drift"  # the input distribution moved (Evidently's dataset verdict)
    DEGRADED = "degraded"  # no data drift, but estimated or realised quality crossed a threshold
    NO_DRIFT = "no_drift"
    SKIPPED = "skipped"  # too little traffic to judge

    @property
    def retrain(self) -> bool:
        """Whether this outcome emits the drift Asset (which schedules retraining) and alerts."""
        return self in (MonitorOutcome.DRIFT, MonitorOutcome.DEGRADED)


class ShadowAction(enum.StrEnum):
    """What the shadow gate does with the challenger."""

    PROMOTE = "promote"
    KEEP = "keep"
    REMOVE = "remove"

    @classmethod
    def parse(cls, value: object, field: str) -> ShadowAction:
        from airflow_saga.core.errors import DataError

        try:
            return cls(str(value))
        except ValueError:
            raise DataError(f"{field} must be one of {[a.value for a in cls]}, got {value!r}") from None
