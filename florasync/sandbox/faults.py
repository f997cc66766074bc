"""The sandbox's fault knobs: ``Faults`` fields, scripted ``fail_next`` faults, the rate limiter.

Owns what can go wrong on purpose and how it is configured (docs/design.md, "The sandbox"):
validated, thread-safe updates from Python, from the control endpoint and from CLI options.
Knows nothing of HTTP; the dispatcher and the upload target ask it what to do.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from florasync.sandbox.ratelimit import RateLimiter

MB = 1_000_000
GIB = 1 << 30

UPLOAD_ROUTE = "POST /upload"
FILES_ROUTE = "GET /files"
"""The file server of ready assets' ``url`` (HEAD too); ``drop="after"`` cuts the body halfway."""
API_ROUTES = (
    "GET /workspaces",
    "GET /projects",
    "POST /projects",
    "GET /projects/{id}",
    "GET /projects/{id}/nodes",
    "POST /projects/{id}/assets/{id}/attach",
    "POST /assets",
    "GET /assets",
    "GET /assets/{id}",
    "POST /assets/{id}/complete",
    "POST /assets/{id}/retry",
)
"""Route names as they appear in ``fail_next`` and in the request log."""

OTHER_ROUTES = (UPLOAD_ROUTE, FILES_ROUTE)
"""Routes outside the API: ``fail_next`` takes them by name; ``"*"`` does not cover them."""

_N = TypeVar("_N", int, float)

ANY_API_ROUTE = "*"
DROP_MODES = ("before", "after")
MALFORMED_KINDS = ("not_json", "array", "missing_field", "truncated", "redirect")
"""What a malformed answer looks like (docs/design.md, "Malformed answers")."""

_CHOICES: dict[str, tuple[str, ...]] = {
    "idempotency": ("duplicate", "replay"),
    "upload_spelling": ("snake", "camel", "both"),
    "attach_mode": ("duplicate_node", "existing"),
    "complete_without_bytes": ("repeat", "lifecycle_error"),
}
_RATES = frozenset(
    {
        "error_rate",
        "drop_before_rate",
        "drop_after_rate",
        "malformed_rate",
        "upload_error_rate",
        "upload_drop_rate",
        "upload_lose_response_rate",
        "upload_cut_rate",
    }
)

FIELD_HELP: dict[str, str] = {
    "error_rate": "fraction of API requests answered 500/502/503 before the handler runs",
    "drop_before_rate": "fraction of API requests whose connection is closed unanswered",
    "drop_after_rate": "fraction of API requests handled, then closed without an answer",
    "malformed_rate": "fraction of handled 2xx API answers replaced by a malformed one",
    "latency_seconds": "delay added to every request",
    "rate_limit_rps": "token bucket refill rate per API key (unset: no rate limit)",
    "rate_limit_burst": "token bucket size per API key",
    "retry_after_header": "send Retry-After on 429 answers",
    "rate_limit_uploads": "the token bucket also covers the upload target",
    "expire_uploads": "issue every upload reservation already expired",
    "expire_next_uploads": "issue the next N upload reservations already expired",
    "upload_ttl_seconds": "upload reservation lifetime",
    "complete_pending_seconds": "after complete, the asset stays pending_upload this long",
    "revoked": "every API call is refused with 401 invalid_api_key",
    "forbidden_projects": "project ids whose GET, nodes and attach answer 403",
    "read_only": "every mutating API call answers 403 forbidden",
    "forbid_project_create": "POST /projects answers 403 forbidden (the key may not create)",
    "create_project_delay_seconds": "POST /projects creates the project, then answers this late",
    "idempotency": "duplicate (409 on a reused key) or replay (first answer replayed)",
    "replay_errors": "replay mode also remembers and replays 4xx answers (but 429)",
    "idempotency_window_seconds": "how long a key is remembered (default 2 h; replay 24 h)",
    "upload_spelling": "spelling of the upload object: snake, camel or both",
    "attach_mode": "attaching an asset twice: duplicate_node or existing",
    "lifecycle_conflict": "complete/retry on a ready asset answer 409 conflict",
    "complete_without_bytes": (
        "complete before any bytes arrived: repeat (200, upload repeated) or lifecycle_error (409)"
    ),
    "reject_at_reservation": "refuse a disallowed content type at POST /assets (400)",
    "max_image_bytes": "largest accepted image, audio or pdf upload",
    "max_video_bytes": "largest accepted video upload",
    "upload_error_rate": "fraction of uploads answered 500/502/503",
    "upload_drop_rate": "fraction of uploads whose connection is closed before storing",
    "upload_lose_response_rate": "fraction of uploads stored, then closed without an answer",
    "upload_cut_rate": "fraction of uploads whose connection is closed mid-body, nothing stored",
    "seed": "seed of the fault dice: the same sequence of rolls on every run (unset: random)",
}


@dataclass(frozen=True, slots=True)
class ScriptedFault:
    """One pending ``fail_next`` entry: answer ``status``, drop, or garble the answer
    (``malformed``), ``remaining`` more times."""

    route: str
    status: int | None
    code: str | None
    retry_after: int | None
    drop: str | None
    malformed: str | None
    remaining: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Faults:
    """Every fault knob of the sandbox; safe to change from any thread while it serves."""

    error_rate: float = 0.0
    drop_before_rate: float = 0.0
    drop_after_rate: float = 0.0
    malformed_rate: float = 0.0
    latency_seconds: float = 0.0
    rate_limit_rps: float | None = None
    rate_limit_burst: int = 10
    retry_after_header: bool = True
    rate_limit_uploads: bool = False
    expire_uploads: bool = False
    expire_next_uploads: int = 0
    upload_ttl_seconds: float = 3600.0
    complete_pending_seconds: float = 0.0
    revoked: bool = False
    forbidden_projects: list[str] = field(default_factory=list)
    read_only: bool = False
    forbid_project_create: bool = False
    create_project_delay_seconds: float = 0.0
    idempotency: str = "duplicate"
    idempotency_window_seconds: float | None = None
    replay_errors: bool = False
    upload_spelling: str = "snake"
    attach_mode: str = "duplicate_node"
    lifecycle_conflict: bool = False
    complete_without_bytes: str = "repeat"
    reject_at_reservation: bool = False
    max_image_bytes: int = 50 * MB
    max_video_bytes: int = 2 * GIB
    upload_error_rate: float = 0.0
    upload_drop_rate: float = 0.0
    upload_lose_response_rate: float = 0.0
    upload_cut_rate: float = 0.0
    seed: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _scripted: list[ScriptedFault] = field(default_factory=list, repr=False, compare=False)
    _limiter: RateLimiter = field(default_factory=RateLimiter, repr=False, compare=False)
    _dice: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in field_names():
            object.__setattr__(self, name, _checked(name, getattr(self, name)))
        if self.seed is not None:
            self._dice.seed(self.seed)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None, /, **more: Any) -> Faults:
        """Build from CLI-style options: strings are converted, ``None`` values are skipped.

        ``Faults.from_options(vars(args))`` and ``Faults.from_options(error_rate="0.3")`` both
        work; names are the field names.

        Raises:
            ValueError: an unknown name or a value that does not convert.
            TypeError: a value of the wrong type.
        """
        merged = {**(options or {}), **more}
        values = {k: _from_text(k, v) for k, v in merged.items() if v is not None}
        _require_known(values)
        return cls(**values)

    def update(self, **values: Any) -> None:
        """Change some fields at once, all or none; a ``seed`` restarts the dice from it.

        Raises:
            ValueError: an unknown field name or a value out of range.
            TypeError: a value of the wrong type.
        """
        _require_known(values)
        checked = {name: _checked(name, value) for name, value in values.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self, name, value)
            if checked.get("seed") is not None:
                self._dice.seed(checked["seed"])

    def fail_next(
        self,
        route: str,
        *,
        status: int | None = None,
        times: int = 1,
        code: str | None = None,
        retry_after: int | None = None,
        drop: str | None = None,
        malformed: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests on ``route`` with ``status``, drop or garble them.

        ``drop="before"`` closes the connection without running the handler; ``"after"`` runs
        it (side effects happen) and closes without answering. ``malformed`` (one of
        ``MALFORMED_KINDS``, API routes only) runs it and sends a malformed answer in place of
        a 2xx one. Without ``status``, ``drop`` or ``malformed`` the requests get a 500. On
        ``FILES_ROUTE`` (an asset's ``url``), ``drop="after"`` sends the headers and half the
        bytes, then closes the connection.

        Raises:
            ValueError: unknown route, more than one of ``status``, ``drop`` and ``malformed``,
                or a bad value.
        """
        fault = _scripted(
            route,
            status=status,
            times=times,
            code=code,
            retry_after=retry_after,
            drop=drop,
            malformed=malformed,
        )
        with self._lock:
            self._scripted.append(fault)

    def expire_next_upload(self, count: int = 1) -> None:
        """Issue the next ``count`` upload reservations already expired."""
        with self._lock:
            self.expire_next_uploads += count

    def reset(self) -> None:
        """Back to the defaults: no faults, no scripted failures, full token buckets."""
        defaults = Faults()
        with self._lock:
            for name in field_names():
                setattr(self, name, getattr(defaults, name))
            self._scripted.clear()
            self._limiter.clear()

    def to_dict(self) -> dict[str, Any]:
        """Every field plus the pending scripted faults (``fail_next``), as plain JSON values."""
        with self._lock:
            values = {name: _plain(getattr(self, name)) for name in field_names()}
            values["fail_next"] = [f.to_dict() for f in self._scripted]
        return values

    def take_scripted(self, route: str) -> ScriptedFault | None:
        """The first pending scripted fault for ``route`` (``"*"`` covers API routes), used once."""
        with self._lock:
            for index, fault in enumerate(self._scripted):
                if fault.route == route or (fault.route == ANY_API_ROUTE and route in API_ROUTES):
                    self._consume(index, fault)
                    return fault
        return None

    def take_expired_issue(self) -> bool:
        """Whether the reservation being issued now must be born expired."""
        with self._lock:
            if self.expire_uploads:
                return True
            if self.expire_next_uploads > 0:
                self.expire_next_uploads -= 1
                return True
        return False

    def roll(self, rate: float) -> bool:
        """True with probability ``rate`` (the fault dice)."""
        return rate > 0 and self._dice.random() < rate

    def pick_server_error(self) -> int:
        return self._dice.choice((500, 502, 503))

    def roll_malformed(self) -> str | None:
        """A malformed kind with probability ``malformed_rate`` (each kind alike), else None."""
        if not self.roll(self.malformed_rate):
            return None
        return self._dice.choice(MALFORMED_KINDS)

    def rate_limit_wait(self, key: str) -> float:
        """Seconds until ``key`` may send again (0.0 = go ahead and a token was taken)."""
        rps = self.rate_limit_rps
        if rps is None:
            return 0.0
        return self._limiter.acquire(key, rps, self.rate_limit_burst)

    def idempotency_window(self) -> float:
        """The effective window: the configured one, else 2 h (duplicate) or 24 h (replay)."""
        if self.idempotency_window_seconds is not None:
            return self.idempotency_window_seconds
        return 86400.0 if self.idempotency == "replay" else 7200.0

    def _consume(self, index: int, fault: ScriptedFault) -> None:
        if fault.remaining <= 1:
            del self._scripted[index]
        else:
            self._scripted[index] = dataclasses.replace(fault, remaining=fault.remaining - 1)


def field_names() -> tuple[str, ...]:
    """The public fault fields, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(Faults) if not f.name.startswith("_"))


def _require_known(values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(field_names()))
    if unknown:
        raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")


def _checked(name: str, value: Any) -> Any:
    """``value`` if it suits field ``name``; raises TypeError/ValueError naming the field."""
    default = _defaults()[name]
    if name in ("rate_limit_rps", "idempotency_window_seconds", "seed"):
        return None if value is None else _checked_optional(name, value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{name}: must be true or false")
        return value
    if isinstance(default, int):
        return _non_negative(name, _integer(name, value))
    if isinstance(default, float):
        return _checked_float(name, value)
    if isinstance(default, list):
        return _string_list(name, value)
    return _choice(name, value)


def _checked_optional(name: str, value: Any) -> float | int:
    """A set optional field: the seed is an integer, the others numbers; none negative."""
    if name == "seed":
        return _non_negative(name, _integer(name, value))
    return _non_negative(name, _number(name, value))


def _checked_float(name: str, value: Any) -> float:
    number = _non_negative(name, _number(name, value))
    if name in _RATES and number > 1.0:
        raise ValueError(f"{name}: must be between 0 and 1")
    return number


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: must be a number")
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite")
    return float(value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: must be an integer")
    return value


def _non_negative(name: str, value: _N) -> _N:
    if value < 0:
        raise ValueError(f"{name}: must not be negative")
    return value


def _string_list(name: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name}: must be a list of strings")
    return list(value)


def _choice(name: str, value: Any) -> str:
    choices = _CHOICES[name]
    if value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(choices)}")
    return str(value)


def _from_text(name: str, value: Any) -> Any:
    """Convert a CLI string to the field's type; other values pass through to validation."""
    if not isinstance(value, str) or name not in field_names():
        return value
    default = _defaults()[name]
    try:
        if isinstance(default, bool):
            return _parse_bool(name, value)
        if isinstance(default, int) or name == "seed":
            return int(value)
        if isinstance(default, float) or default is None:
            return float(value)
    except ValueError:
        raise ValueError(f"{name}: not a number: {value!r}") from None
    if isinstance(default, list):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: not a boolean: {text!r}")


def _scripted(
    route: str,
    *,
    status: int | None,
    times: int,
    code: str | None,
    retry_after: int | None,
    drop: str | None,
    malformed: str | None,
) -> ScriptedFault:
    if route != ANY_API_ROUTE and route not in API_ROUTES and route not in OTHER_ROUTES:
        raise ValueError(f"fail_next: unknown route {route!r}")
    if sum(v is not None for v in (status, drop, malformed)) > 1:
        raise ValueError("fail_next: give only one of status, drop and malformed")
    if drop is not None and drop not in DROP_MODES:
        raise ValueError("fail_next: drop must be 'before' or 'after'")
    _check_malformed(route, malformed)
    if status is not None and (isinstance(status, bool) or not 400 <= status <= 599):
        raise ValueError("fail_next: status must be an HTTP error status (400-599)")
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError("fail_next: times must be a positive integer")
    if retry_after is not None and (isinstance(retry_after, bool) or retry_after < 0):
        raise ValueError("fail_next: retry_after must be a non-negative integer")
    if status is None and drop is None and malformed is None:
        status = 500
    return ScriptedFault(route, status, code, retry_after, drop, malformed, times)


def _check_malformed(route: str, malformed: str | None) -> None:
    if malformed is None:
        return
    if malformed not in MALFORMED_KINDS:
        raise ValueError(f"fail_next: malformed must be one of {', '.join(MALFORMED_KINDS)}")
    if route in OTHER_ROUTES:
        raise ValueError(f"fail_next: malformed answers are for API routes, not {route}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


@functools.cache
def _defaults() -> dict[str, Any]:
    """Each public field's default value (the factory's result for list fields)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Faults):
        if f.name.startswith("_"):
            continue
        values[f.name] = [] if f.default is dataclasses.MISSING else f.default
    return values
