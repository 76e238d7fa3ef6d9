"""The interface flows use to reach backend systems (CRM, order system, billing).

The HTTP implementation lives in `flows/backends.py`; flow tests use a scripted one.
Every failure is one of the errors below so a flow can branch on it: a timeout gets a
holding line or a callback offer, never silence and never a blind escalation.
"""

from __future__ import annotations

from typing import Any, Protocol


class BackendError(Exception):
    """A backend call failed. `kind` is the metrics label: timeout, unavailable, bad_status, bad_response."""

    kind = "error"

    def __init__(self, backend: str, operation: str, message: str) -> None:
        super().__init__(f"{backend}.{operation}: {message}")
        self.backend = backend
        self.operation = operation


class BackendTimeout(BackendError):
    kind = "timeout"


class BackendUnavailable(BackendError):
    """The circuit breaker is open: we do not even try."""

    kind = "unavailable"


class BackendBadStatus(BackendError):
    kind = "bad_status"


class BackendBadResponse(BackendError):
    """The backend answered with something we cannot use (not JSON, wrong shape)."""

    kind = "bad_response"


class BackendGateway(Protocol):
    async def call(self, backend: str, operation: str, params: dict[str, Any], *, call_sid: str) -> dict[str, Any]:
        """Run a named operation on a named backend. Raises BackendError subclasses."""
        ...
