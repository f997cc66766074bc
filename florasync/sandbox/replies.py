"""What the API answers: the ``Reply`` value, ``Drop``, ``Garbled``, FLORA's error envelope.

Owns the envelope ``{"error": {"code", "message", "fields"?}}`` (CONTRACT §3) with the example
messages of the spec, the default code for each status, and ``ApiFailure``, which endpoints
raise to answer with an error. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

MESSAGES: Final = {
    "unauthorized": "Missing or malformed Authorization header.",
    "invalid_api_key": "Invalid API key.",
    "insufficient_credits": "Insufficient credits.",
    "forbidden": "Forbidden.",
    "not_found": "Not found.",
    "invalid_json": "Request body is not valid JSON.",
    "idempotency_duplicate": "Duplicate idempotency key.",
    "idempotency_conflict": "Idempotency key was already used with a different request body.",
    "conflict": "Invalid state transition.",
    "lifecycle_error": "Invalid lifecycle transition.",
    "rate_limited": "Rate limit exceeded.",
    "unknown_error": "An unknown error occurred.",
    "service_unavailable": "Service unavailable.",
}
"""The spec's example messages (CONTRACT §3.1, seeds 001-003) and ours for the rest."""

_CODE_BY_STATUS: Final = {
    400: "input_validation_error",
    401: "unauthorized",
    402: "insufficient_credits",
    403: "forbidden",
    404: "not_found",
    409: "idempotency_duplicate",
    422: "idempotency_conflict",
    429: "rate_limited",
    500: "unknown_error",
    503: "service_unavailable",
}


@dataclass(frozen=True, slots=True)
class Reply:
    """A JSON answer: status, body (any JSON value) and extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_replay(self) -> bool:
        return self.headers.get("idempotent-replayed") == "true"


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without an answer; ``stored`` says whether side effects happened."""

    stored: bool = False


@dataclass(frozen=True, slots=True)
class Garbled:
    """Raw bytes sent in place of the handled answer ``real`` (the malformed fault).

    ``content_length`` is what the header announces; when it exceeds ``len(body)`` the answer
    is cut short and the connection closed after it.
    """

    kind: str
    status: int
    headers: dict[str, str]
    body: bytes
    content_length: int
    real: Reply

    @property
    def is_truncated(self) -> bool:
        return self.content_length > len(self.body)


Outcome = Reply | Drop | Garbled


class ApiFailure(Exception):
    """Raised by an endpoint to answer with the error envelope instead of a result."""

    def __init__(
        self,
        status: int,
        code: str | None = None,
        message: str | None = None,
        *,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code or default_code(status)
        self.message = message or MESSAGES.get(self.code, MESSAGES["unknown_error"])
        self.fields = fields
        self.headers = headers or {}
        super().__init__(f"{status} {self.code}: {self.message}")

    def reply(self) -> Reply:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return Reply(self.status, {"error": error}, dict(self.headers))


def invalid(field_name: str, problem: str) -> ApiFailure:
    """400 input_validation_error naming the field, as ``"<field>: <problem>"`` (CONTRACT §3)."""
    return ApiFailure(
        400,
        "input_validation_error",
        f"{field_name}: {problem}",
        fields=[{"field": field_name, "message": problem}],
    )


def error_reply(status: int, code: str | None = None, message: str | None = None) -> Reply:
    return ApiFailure(status, code, message).reply()


def default_code(status: int) -> str:
    """The envelope code used for ``status`` when none is given (CONTRACT §3.1)."""
    if status in _CODE_BY_STATUS:
        return _CODE_BY_STATUS[status]
    return "unknown_error" if status >= 500 else "input_validation_error"
