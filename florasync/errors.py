"""The florasync error tree: every failure a caller branches on, each saying when it is raised.

Owns the exception types and their exit codes, nothing else. ``str()`` of any of them is safe to
show a user: it never holds the API key.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes users and systemd rely on (PRODUCT.md)."""

    OK = 0
    FAILED = 1  # some files failed permanently; the rest were synced
    USAGE = 2  # bad usage or bad configuration
    CREDENTIALS = 3  # the API refused the key or the workspace


class FlorasyncError(Exception):
    """Base of every error florasync raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED


class ConfigError(FlorasyncError):
    """The configuration (or a command-line value) is wrong; ``key`` names the offending path."""

    exit_code = ExitCode.USAGE

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class InsecureTransportError(ConfigError):
    """A plain ``http://`` URL points at a non-loopback host (PRODUCT.md, "Nothing leaks")."""


class AlreadyRunningError(FlorasyncError):
    """Another ``florasync run`` holds the lock on the same state directory."""

    exit_code = ExitCode.USAGE

    def __init__(self, pid: int | None, lock_path: str) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"florasync is already running ({who}) on this state dir ({lock_path})")


class HostIdInUseError(AlreadyRunningError):
    """Another process holds this ``host_id`` on a shared journal (a configuration error)."""

    def __init__(self, host_id: str, where: str) -> None:
        self.pid = None
        FlorasyncError.__init__(
            self,
            f"host_id: another florasync process is already running as {host_id!r} on the "
            f"journal database {where}; give each host of a fleet its own host_id",
        )


class JournalError(FlorasyncError):
    """The journal cannot be opened or migrated (corrupt file, newer schema, permissions).

    ``retryable``: its database is away (refused, timed out, starting up) and may come back,
    as opposed to a wrong URL, password or database name.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ClaimedElsewhereError(FlorasyncError):
    """Another live host of the fleet works on this content now (issue 14): wait, then look."""

    def __init__(self, digest: str, host_id: str) -> None:
        self.digest = digest
        self.host_id = host_id
        super().__init__(f"content {digest[:12]} is being synced by host {host_id!r}")


class LeaseLostError(FlorasyncError):
    """This host's claim on a content is gone (it was paused or cut off past its lease and
    another host took the work over): stop working on it before the next request."""

    def __init__(self, digest: str, why: str) -> None:
        self.digest = digest
        super().__init__(f"lost the claim on content {digest[:12]}: {why}")


class StoppedError(FlorasyncError):
    """The stop event was set (SIGTERM/SIGINT): the work in hand is left for the next start."""


class PausedError(FlorasyncError):
    """A pause began (``on_pause: stop``) while this upload was in flight: it was cut off before
    its last byte; the job waits for the resume and the journal's intent takes it on from there."""


class LocalFileError(FlorasyncError):
    """A file cannot be used (vanished, unreadable, escaping symlink): it fails, others go on."""

    def __init__(self, path: str, message: str, *, code: str = "local_error") -> None:
        self.path = path
        self.code = code
        self.message = message
        super().__init__(f"{path}: {message}")


class FileChangedError(LocalFileError):
    """The file changed between the moments we looked at it: drop the attempt, let it settle."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "file changed while it was being synced", code="file_changed")


class ProjectUnavailableError(FlorasyncError):
    """A project mapped by name cannot be used: none has the name (and ``create`` is off), two
    have it, or the key may not create it. Its files fail with this message; others go on."""

    def __init__(self, name: str, message: str, *, code: str) -> None:
        self.name = name
        self.code = code
        self.message = message
        super().__init__(message)


class ApiError(FlorasyncError):
    """The FLORA API (or the upload target) answered with an error, or could not be reached.

    ``status`` is the HTTP status (None when no response arrived), ``code`` and ``message`` come
    from the error envelope, ``request_id`` from the ``request-id`` header, ``retry_after`` (in
    seconds, already parsed) from ``Retry-After``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        method: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.method = method
        self.endpoint = endpoint
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.method} {self.endpoint}: " if self.method and self.endpoint else ""
        status = f"HTTP {self.status} " if self.status is not None else ""
        code = f"{self.code}: " if self.code else ""
        rid = f" (request-id {self.request_id})" if self.request_id else ""
        return f"{where}{status}{code}{self.message}{rid}"


class TransientError(ApiError):
    """Worth trying again later: 5xx, 429, a dropped connection or a timeout."""


class ServerError(TransientError):
    """The server answered 5xx."""


class NetworkError(TransientError):
    """No usable answer: connection refused or reset, timeout, truncated response."""


class MalformedResponseError(TransientError):
    """A 2xx that is not what the API documents (not JSON, not an object, a field missing) or a
    redirect: most likely a proxy or a truncated body. Retried, but only a few times."""


class RateLimitedError(TransientError):
    """429 ``rate_limited``; ``retry_after`` is the announced window, None when not announced."""


class RejectedError(ApiError):
    """A 4xx: do not send this again as it is; a per-file failure unless a subclass says more."""


class InvalidRequestError(RejectedError):
    """400 ``input_validation_error`` / ``invalid_json``."""


class CredentialsError(RejectedError):
    """401: the key is missing, malformed, unknown or revoked. Fatal for the whole process."""

    exit_code = ExitCode.CREDENTIALS


class PaymentRequiredError(RejectedError):
    """402 ``insufficient_credits``: uploads pause until the workspace has credits again."""


class ForbiddenError(RejectedError):
    """403 ``forbidden``: fatal when it is the workspace, per-project otherwise."""


class NotFoundError(RejectedError):
    """404 ``not_found``: the id is unknown or not accessible to this key (FLORA does not say)."""


class IdempotencyDuplicateError(RejectedError):
    """409 ``idempotency_duplicate``: an earlier request with this key was accepted; look it up."""


class ConflictError(RejectedError):
    """409 with another code: a lifecycle conflict; GET the resource and act on its real state."""


class IdempotencyConflictError(RejectedError):
    """422 ``idempotency_conflict``: the key was used with another body (a florasync bug)."""


class UploadRejectedError(ApiError):
    """The upload target refused the signed instructions (any 4xx): get fresh ones (``/retry``)."""


class UploadUncertainError(TransientError):
    """The upload target failed (5xx, dropped connection): the bytes may or may not have landed."""
