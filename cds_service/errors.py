"""The errors the service answers with, by type (never by message).

Every one becomes a JSON body `{"error": ..., "details": [...]}` in `api.py`; `details` is
omitted when empty. Messages name what was wrong, never patient data or tokens.
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    error = "internal error"

    def __init__(self, error: str | None = None, details: list[str] | None = None) -> None:
        super().__init__(error or self.error)
        if error:
            self.error = error
        self.details = list(details or [])

    def body(self) -> dict:
        out: dict = {"error": self.error}
        if self.details:
            out["details"] = self.details
        return out


class BadRequest(ApiError):
    status = 400
    error = "bad request"


class Unauthorized(ApiError):
    status = 401
    error = "unauthorized"


class NotFound(ApiError):
    status = 404
    error = "not found"


class UnsupportedMediaType(ApiError):
    status = 415
    error = "unsupported media type: send application/json"


class PreconditionFailed(ApiError):
    """CDS Hooks 2.0: required data could be had neither from prefetch nor from fhirServer."""

    status = 412
    error = "required data is unavailable"


class ServiceBusy(ApiError):
    """The call waited for a thread past its time budget: refused before any work starts."""

    status = 503
    error = "the service is busy, retry later"
