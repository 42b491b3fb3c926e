"""The exception hierarchy, grouped by what the caller does next.

- ConfigError: the user's spec is wrong; not retried until the object changes, shown as
  Ready=False and a Warning event.
- ScalerError: an event source failed; `transient` says whether it counts towards fallback.
- KubeError: the Kubernetes API refused or failed a request.

Messages never carry secret values: scalers translate library exceptions at their boundary.
"""

from __future__ import annotations


class AutoscaleError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(AutoscaleError):
    """An invalid ScaledObject, trigger or authentication spec; the message names the field."""


class UnknownScalerTypeError(ConfigError):
    """A trigger `type` that no registered scaler handles."""


class ScalerError(AutoscaleError):
    """An event source could not be read."""

    transient: bool = True


class ScalerUnavailableError(ScalerError):
    """Connection refused, timed out or reset: the source may come back."""

    transient = True


class ScalerQueryError(ScalerError):
    """The source answered, but not with something we can scale on (missing queue, bad query)."""

    transient = False


class KubeError(AutoscaleError):
    """A Kubernetes API request failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TargetNotFoundError(KubeError):
    """The scale target, or its /scale subresource, does not exist."""


class ConflictError(KubeError):
    """HTTP 409: the object changed under us; re-read and retry."""
