"""The FLORA API client and the upload-target client: the only module that imports requests.

Owns HTTP: one ``requests.Session`` per client with Bearer auth, timeouts on every call, the
error envelope mapped onto the ``errors`` tree (CONTRACT.md §3), pagination (§6), and the
streamed multipart upload to the signed target (§8, §10), which has its own session and never
sees the API key. Retry decisions come from ``retrying``; journal and lifecycle live elsewhere.
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeVar
from urllib.parse import quote

import requests
from requests_toolbelt import MultipartEncoder

from florasync import __version__, errors
from florasync.flora import models, retrying, urls
from florasync.flora.secret import Secret

log = logging.getLogger(__name__)

T = TypeVar("T")

USER_AGENT = f"florasync/{__version__}"
PAGE_SIZE = 100  # always send limit explicitly: the default is undocumented (Q10)
UPLOAD_CHUNK_BYTES = 4 << 20  # the receiver keeps up with curl at 4 MiB writes, not at 1 MiB

_ERROR_BY_STATUS: dict[int, type[errors.ApiError]] = {
    400: errors.InvalidRequestError,
    401: errors.CredentialsError,
    402: errors.PaymentRequiredError,
    403: errors.ForbiddenError,
    404: errors.NotFoundError,
    422: errors.IdempotencyConflictError,
    429: errors.RateLimitedError,
}

ResponseHook = Callable[[str, str, "int | None", float], None]
"""Called after every request with (method, route template, status or None, seconds)."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait to connect, and for each read of a response."""

    connect: float = 10.0
    read: float = 60.0
    upload_read: float = 300.0


class _BearerAuth(requests.auth.AuthBase):
    """Sets the Authorization header at send time (and keeps ~/.netrc from replacing it)."""

    def __init__(self, key: Secret) -> None:
        self._key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._key.reveal()}"
        return request


class _NoAuth(requests.auth.AuthBase):
    """Guarantees the upload target never receives an Authorization header (seed 004)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


class FloraClient:
    """The FLORA public API, one method per endpoint, results as typed ``models`` objects.

    Every call waits for the shared ``RateGate``, is retried per ``retrying.RetryPolicy`` when it
    is safe to repeat, and raises an ``errors.ApiError`` subclass otherwise.
    """

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        timeouts: Timeouts = Timeouts(),
        policy: retrying.RetryPolicy | None = None,
        gate: retrying.RateGate | None = None,
        stop: threading.Event | None = None,
        on_response: ResponseHook | None = None,
        on_retry: Callable[[BaseException, float], None] | None = None,
    ) -> None:
        _require_secure(base_url, "api.base_url")
        self.base_url = base_url.rstrip("/")
        self._timeouts = timeouts
        self._retrier = retrying.Retrier(
            policy or retrying.RetryPolicy(),
            gate or retrying.RateGate(),
            stop or threading.Event(),
            on_retry=on_retry,
        )
        self._session = _new_session(_BearerAuth(api_key), self._retrier)
        self._secret = api_key
        self._on_response = on_response
        self._proxies = _Proxies()

    def __repr__(self) -> str:
        return f"FloraClient({self.base_url!r})"

    def set_api_key(self, api_key: Secret) -> None:
        """Use another key from the next request on (a rotated key, after SIGHUP)."""
        self._secret = api_key
        self._session.auth = _BearerAuth(api_key)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> FloraClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- workspaces and projects ------------------------------------------------------------

    def list_workspaces(self) -> list[models.Workspace]:
        items = self._json("GET", "/workspaces", lambda body: _items(body, "workspaces"))
        return [_parsed(models.parse_workspace, w, "GET /workspaces") for w in items]

    def probe_workspaces(self) -> list[models.Workspace]:
        """``list_workspaces`` in one attempt, without retries: a quick yes/no about the key
        (at daemon start, before READY, a retry budget of minutes would hold systemd up)."""
        body = self._send("GET", "/workspaces", "/workspaces", params=None, json=None, headers={})
        return [
            _parsed(models.parse_workspace, w, "GET /workspaces")
            for w in _items(body, "workspaces")
        ]

    def list_projects(
        self, workspace_id: str, *, query: str | None = None
    ) -> Iterator[models.Project]:
        params = {"workspace_id": workspace_id, "query": query}
        for item in self._paginate("/projects", "projects", params):
            yield _parsed(models.parse_project, item, "GET /projects")

    def create_project(
        self, workspace_id: str, name: str, *, idempotency_key: str | None = None
    ) -> models.Project:
        return self._json(
            "POST",
            "/projects",
            models.parse_project,
            json={"workspace_id": workspace_id, "name": name},
            idempotency_key=idempotency_key,
        )

    def get_project(self, project_id: str) -> models.Project:
        return self._json("GET", "/projects/{id}", models.parse_project, ids=(project_id,))

    def list_nodes(self, project_id: str) -> Iterator[models.Node]:
        for item in self._paginate("/projects/{id}/nodes", "nodes", {}, ids=(project_id,)):
            yield _parsed(models.parse_node, item, "GET /projects/{id}/nodes")

    def attach(self, project_id: str, asset_id: str, *, idempotency_key: str) -> models.Attachment:
        return self._json(
            "POST",
            "/projects/{id}/assets/{id}/attach",
            models.parse_attachment,
            ids=(project_id, asset_id),
            idempotency_key=idempotency_key,
        )

    # -- assets ------------------------------------------------------------------------------

    def create_asset(
        self,
        workspace_id: str,
        *,
        file_name: str,
        content_type: str,
        idempotency_key: str,
        folder: str | None = None,
    ) -> models.Asset:
        """Reserve a signed upload; the key must already be in the journal (PRODUCT.md)."""
        payload: dict[str, str] = {
            "source": "signed-url",
            "workspace_id": workspace_id,
            "file_name": file_name,
            "content_type": content_type,
        }
        if folder:
            payload["folder"] = folder
        return self._json(
            "POST", "/assets", models.parse_asset, json=payload, idempotency_key=idempotency_key
        )

    def complete_asset(self, asset_id: str) -> models.Asset:
        # complete is idempotent by nature (complete on ready is a no-op, §7.2): safe to repeat
        return self._json(
            "POST", "/assets/{id}/complete", models.parse_asset, ids=(asset_id,), idempotent=True
        )

    def retry_asset(self, asset_id: str) -> models.Asset:
        # repeating retry only replaces the reservation again; the newest one is what we use
        return self._json(
            "POST", "/assets/{id}/retry", models.parse_asset, ids=(asset_id,), idempotent=True
        )

    def get_asset(self, asset_id: str) -> models.Asset:
        return self._json("GET", "/assets/{id}", models.parse_asset, ids=(asset_id,))

    def list_assets(
        self,
        *,
        workspace_id: str | None = None,
        project_id: str | None = None,
        query: str | None = None,
    ) -> Iterator[models.Asset]:
        params = {"workspace_id": workspace_id, "project_id": project_id, "query": query}
        for item in self._paginate("/assets", "assets", params):
            yield _parsed(models.parse_asset, item, "GET /assets")

    # -- plumbing ----------------------------------------------------------------------------

    def _paginate(
        self,
        route: str,
        items_key: str,
        params: Mapping[str, str | None],
        *,
        ids: tuple[str, ...] = (),
    ) -> Iterator[Mapping[str, Any]]:
        query: dict[str, str] = {k: v for k, v in params.items() if v is not None}
        query["limit"] = str(PAGE_SIZE)
        seen: set[str] = set()
        while True:
            items, cursor = self._json(
                "GET", route, lambda body: _page(body, items_key), ids=ids, params=query
            )
            yield from items
            if not cursor or cursor in seen:  # null, "" or a repeating cursor ends the listing
                return
            seen.add(cursor)
            query["cursor"] = cursor

    def _json(
        self,
        method: str,
        route: str,
        parse: Callable[[Mapping[str, Any]], T],
        *,
        ids: tuple[str, ...] = (),
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        idempotent: bool | None = None,
    ) -> T:
        """One request under the retry policy, its answer read by ``parse``.

        ``parse`` runs inside the retried call: an answer without a documented field is as
        malformed as one that is not JSON, and gets the same tries (issue 11).
        """
        path = _fill(route, ids)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        safe = idempotent if idempotent is not None else method == "GET" or bool(idempotency_key)

        def send() -> T:
            body = self._send(method, route, path, params=params, json=json, headers=headers)
            return _parsed(parse, body, f"{method} {route}")

        return self._retrier.call(send, idempotent=safe)

    def _send(
        self,
        method: str,
        route: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        json: Mapping[str, Any] | None,
        headers: Mapping[str, str],
    ) -> Mapping[str, Any]:
        started = time.monotonic()
        status: int | None = None
        try:
            url = self.base_url + path
            response = self._session.request(
                method,
                url,
                params=params,
                json=json,
                headers=headers,
                timeout=(self._timeouts.connect, self._timeouts.read),
                allow_redirects=False,
                proxies=self._proxies.for_url(url),
            )
            status = response.status_code
            return _decode(response, method, route, self._secret)
        except requests.RequestException as exc:
            raise _network_error(exc, method, route, self._secret) from None
        finally:
            if self._on_response is not None:
                self._on_response(method, route, status, time.monotonic() - started)


class UploadTarget:
    """Pushes a file to signed upload instructions; has its own session and never sees the key."""

    def __init__(
        self,
        *,
        timeouts: Timeouts = Timeouts(),
        stop: threading.Event | None = None,
        chunk_bytes: int = UPLOAD_CHUNK_BYTES,
        policy: retrying.RetryPolicy | None = None,
        gate: retrying.RateGate | None = None,
    ) -> None:
        self._timeouts = timeouts
        self._stop = stop or threading.Event()
        self._chunk_bytes = max(chunk_bytes, UPLOAD_CHUNK_BYTES)
        self._proxies = _Proxies()
        # only 429s are repeated here (they stored nothing, the fields stay valid); the gate is
        # the API client's, so a rate-limited host pauses the whole pool for its Retry-After
        self._retrier = retrying.Retrier(
            policy or retrying.RetryPolicy(), gate or retrying.RateGate(), self._stop
        )
        self._session = _new_session(_NoAuth(), self._retrier)

    def close(self) -> None:
        self._session.close()

    def upload(
        self,
        instructions: models.UploadInstructions,
        stream: IO[bytes],
        *,
        file_name: str,
        content_type: str,
        progress: Callable[[int], None] | None = None,
    ) -> Mapping[str, Any]:
        """Send every signed field unchanged, then ``stream`` (an open file), in 4 MiB reads.

        The caller opens the file, so it can prove the bytes are those of the file it admitted.

        Raises:
            errors.InsecureTransportError: the URL is plain http to a non-loopback host.
            errors.UploadRejectedError: any 4xx — the instructions are spent; ask for fresh ones.
            errors.UploadUncertainError: 5xx or a dropped connection; the bytes may have landed.
            errors.RateLimitedError: 429 after the policy's patience; the fields are still valid.
            errors.StoppedError: the stop event was set mid-upload.
        """
        _require_secure(instructions.url, "upload.url")
        start = stream.tell()

        def post() -> Mapping[str, Any]:
            stream.seek(start)  # a 429 read nothing into the target: send it all again
            return self._post(instructions, stream, file_name, content_type, progress)

        return self._retrier.call(post, idempotent=False)  # 429: always safe (nothing stored)

    def _post(
        self,
        instructions: models.UploadInstructions,
        stream: IO[bytes],
        file_name: str,
        content_type: str,
        progress: Callable[[int], None] | None,
    ) -> Mapping[str, Any]:
        parts: list[tuple[str, Any]] = list(instructions.fields.items())
        parts.append((instructions.file_field, (file_name, stream, content_type)))  # file last
        encoder = MultipartEncoder(fields=parts, boundary=uuid.uuid4().hex)
        body = _ChunkedReader(encoder, self._chunk_bytes, self._stop, progress)
        try:
            response = self._session.request(
                instructions.method,
                instructions.url,
                data=body,
                headers={"Content-Type": encoder.content_type},
                timeout=(self._timeouts.connect, self._timeouts.upload_read),
                allow_redirects=False,
                proxies=self._proxies.for_url(instructions.url),
            )
        except requests.RequestException as exc:
            if self._stop.is_set():
                raise errors.StoppedError("stopped during an upload") from None
            raise errors.UploadUncertainError(
                f"upload interrupted: {_exception_text(exc)}", method="POST", endpoint="upload"
            ) from None
        return _upload_result(response)


class _ChunkedReader:
    """File-like view of the multipart body: reads ≥ 4 MiB at a time, stops when asked."""

    def __init__(
        self,
        encoder: MultipartEncoder,
        chunk_bytes: int,
        stop: threading.Event,
        progress: Callable[[int], None] | None,
    ) -> None:
        self._encoder = encoder
        self._chunk_bytes = chunk_bytes
        self._stop = stop
        self._progress = progress
        self.len = encoder.len  # requests reads the body length from here (Content-Length)

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise errors.StoppedError("stopped during an upload")
        chunk: bytes = self._encoder.read(max(size, self._chunk_bytes))
        if self._progress is not None and chunk:
            self._progress(len(chunk))
        return chunk


def _new_session(auth: requests.auth.AuthBase, retrier: retrying.Retrier) -> requests.Session:
    """A session that reads the environment once, not on every request, and obeys the gate.

    With ``trust_env`` requests re-reads every environment variable per request to find
    proxies (about 1 ms of CPU each, measured), and may take credentials from ~/.netrc.
    Proxies (``_Proxies``) and the CA bundle are read from the environment here instead.
    """
    session = requests.Session()
    session.trust_env = False
    adapter = _GatedAdapter(retrier)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.auth = auth
    session.headers["User-Agent"] = USER_AGENT
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session


class _GatedAdapter(requests.adapters.HTTPAdapter):
    """Checks the rate gate at the last moment before a request takes a connection, and closes
    it on a 429 before that connection goes back to the pool: another worker's request, already
    prepared, must not leave on it inside the announced window (CONTRACT §4)."""

    def __init__(self, retrier: retrying.Retrier) -> None:
        super().__init__()
        self._retrier = retrier

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        self._retrier.wait_for_gate()
        response = super().send(request, *args, **kwargs)
        if response.status_code == 429:  # the body is read (and the connection freed) later
            self._retrier.rate_limited(parse_retry_after(response.headers.get("Retry-After")))
        return response


class _Proxies:
    """The environment's proxy settings (HTTPS_PROXY, NO_PROXY...) per origin, read once."""

    def __init__(self) -> None:
        self._by_origin: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str) -> dict[str, str]:
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        with self._lock:
            if key not in self._by_origin:
                self._by_origin[key] = dict(requests.utils.get_environ_proxies(url))
            return self._by_origin[key]


def _fill(route: str, ids: tuple[str, ...]) -> str:
    path = route
    for value in ids:
        path = path.replace("{id}", quote(value, safe=""), 1)
    return path


def _items(body: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """The list under ``key``. A listing without it is malformed, not empty: an empty answer
    would let a lost attach or reservation look like one that never happened.

    Raises:
        errors.MalformedResponseError: ``key`` is missing or not a list.
    """
    items = body.get(key)
    if not isinstance(items, list):
        raise errors.MalformedResponseError(
            f"unexpected response: no {key!r} list", code="bad_response", endpoint=key
        )
    return [i for i in items if isinstance(i, Mapping)]


def _page(body: Mapping[str, Any], key: str) -> tuple[list[Mapping[str, Any]], str | None]:
    """One page of a listing: its items and the cursor of the next page (None: the last)."""
    cursor = (body.get("meta") or {}).get("next_cursor")
    return _items(body, key), str(cursor) if cursor else None


def _parsed(parse: Callable[[Mapping[str, Any]], T], body: Mapping[str, Any], what: str) -> T:
    """``parse(body)``; an answer without the fields the API documents is malformed.

    Raises:
        errors.MalformedResponseError: ``parse`` refused the body.
    """
    try:
        return parse(body)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise errors.MalformedResponseError(
            f"unexpected response: {exc}", code="bad_response", endpoint=what
        ) from None


def _decode(
    response: requests.Response, method: str, route: str, secret: Secret
) -> Mapping[str, Any]:
    if response.status_code >= 400:
        raise _api_error(response, method, route, secret)
    if response.status_code >= 300:
        where = _scrub(response.headers.get("Location", "?"), secret)
        raise _malformed(response, method, route, f"unexpected redirect to {where}")
    try:
        body = response.json()
    except ValueError:
        raise _malformed(response, method, route, "the response body is not JSON") from None
    if not isinstance(body, Mapping):
        raise _malformed(response, method, route, "the response is not a JSON object")
    return body


def _malformed(
    response: requests.Response, method: str, route: str, message: str
) -> errors.MalformedResponseError:
    kind = response.headers.get("Content-Type", "no content type")
    return errors.MalformedResponseError(
        f"{message} ({kind})",
        status=response.status_code,
        code="bad_response",
        request_id=response.headers.get("request-id"),
        method=method,
        endpoint=route,
    )


def _api_error(
    response: requests.Response, method: str, route: str, secret: Secret
) -> errors.ApiError:
    code, message = _envelope(response)
    status = response.status_code
    cls = _error_class(status, code)
    return cls(
        _scrub(message, secret),
        status=status,
        code=code,
        request_id=response.headers.get("request-id"),
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        method=method,
        endpoint=route,
    )


def _error_class(status: int, code: str | None) -> type[errors.ApiError]:
    if status == 409:
        if code == "idempotency_duplicate":
            return errors.IdempotencyDuplicateError
        return errors.ConflictError
    if status >= 500:
        return errors.ServerError
    return _ERROR_BY_STATUS.get(status, errors.RejectedError)


def _envelope(response: requests.Response) -> tuple[str | None, str]:
    """(code, message) from the error envelope; a clear message when the body is not one."""
    try:
        error = response.json().get("error")
        code, message = error.get("code"), error.get("message")
        if isinstance(code, str) and isinstance(message, str):
            return code, message
    except (ValueError, AttributeError):
        pass
    text = response.text.strip().replace("\n", " ")[:200]
    kind = response.headers.get("Content-Type", "no content type")
    detail = f": {text}" if text else " (empty body)"
    return None, f"{response.reason or 'error'} ({kind}){detail}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _network_error(
    exc: requests.RequestException, method: str, route: str, secret: Secret
) -> errors.NetworkError:
    return errors.NetworkError(_scrub(_exception_text(exc), secret), method=method, endpoint=route)


def _exception_text(exc: BaseException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed or was dropped"
    return type(exc).__name__


def _scrub(text: str, secret: Secret) -> str:
    """Never let the key reach a message, even if a server echoes it back."""
    key = secret.reveal()
    return text.replace(key, "***") if key else text


def _upload_result(response: requests.Response) -> Mapping[str, Any]:
    status = response.status_code
    if 200 <= status < 300:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, Mapping) else {}
    try:
        message = str(response.json().get("message") or response.reason)
    except (ValueError, AttributeError):
        message = response.reason or f"HTTP {status}"
    if status == 429:  # refused before anything was stored: wait it out, same fields (§4)
        raise errors.RateLimitedError(
            message,
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            method="POST",
            endpoint="upload",
        )
    # any other 4xx means the signed fields are spent (CONTRACT §10.3); a 5xx leaves it unknown
    cls = errors.UploadRejectedError if 400 <= status < 500 else errors.UploadUncertainError
    raise cls(message, status=status, method="POST", endpoint="upload")


def _require_secure(url: str, key: str) -> None:
    problem = urls.transport_problem(url)
    if problem:
        raise errors.InsecureTransportError(key, problem)
