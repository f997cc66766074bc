"""The FLORA API client: one method per endpoint, answers as typed ``models`` objects.

Owns the API side of HTTP: Bearer auth, timeouts on every call, the error envelope mapped onto
the ``errors`` tree (CONTRACT.md §3), malformed answers, pagination (§6). Sessions come from
``transport``, the signed upload from ``upload``; retry decisions from ``retrying``; journal and
lifecycle live elsewhere.
"""

from __future__ import annotations

import json as json_module
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import requests

from florasync import errors
from florasync.flora import models, retrying, transport
from florasync.flora.secret import Secret

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE_SIZE = 100  # always send limit explicitly: the default is undocumented (Q10)

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
        timeouts: transport.Timeouts = transport.DEFAULT_TIMEOUTS,
        policy: retrying.RetryPolicy | None = None,
        gate: retrying.RateGate | None = None,
        stop: threading.Event | None = None,
        on_response: ResponseHook | None = None,
        on_retry: Callable[[BaseException, float], None] | None = None,
    ) -> None:
        transport.require_secure(base_url, "api.base_url")
        self.base_url = base_url.rstrip("/")
        self._timeout = (timeouts.connect, timeouts.read)
        self._retrier = retrying.Retrier(
            policy or retrying.RetryPolicy(),
            gate or retrying.RateGate(),
            stop or threading.Event(),
            on_retry=on_retry,
        )
        self._transport = transport.Transport(self._retrier)
        self._secret = api_key
        self._on_response = on_response

    def __repr__(self) -> str:
        return f"FloraClient({self.base_url!r})"

    def set_api_key(self, api_key: Secret) -> None:
        """Use another key from the next request on (a rotated key, after SIGHUP)."""
        self._secret = api_key  # the Authorization header is written per request, from here

    def close(self) -> None:
        self._transport.close()

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
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        sent = {"Authorization": f"Bearer {self._secret.reveal()}", **headers}
        body = None
        if json is not None:
            body = json_module.dumps(json, separators=(",", ":")).encode()
            sent["Content-Type"] = "application/json"
        try:
            response = self._transport.send(
                method, url, headers=sent, body=body, timeout=self._timeout
            )
            status = response.status_code
            return _decode(response, method, route, self._secret)
        except requests.RequestException as exc:
            raise _network_error(exc, method, route, self._secret) from None
        finally:
            if self._on_response is not None:
                self._on_response(method, route, status, time.monotonic() - started)


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
        retry_after=transport.parse_retry_after(response.headers.get("Retry-After")),
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


def _network_error(
    exc: requests.RequestException, method: str, route: str, secret: Secret
) -> errors.NetworkError:
    return errors.NetworkError(
        _scrub(transport.exception_text(exc), secret), method=method, endpoint=route
    )


def _scrub(text: str, secret: Secret) -> str:
    """Never let the key reach a message, even if a server echoes it back."""
    key = secret.reveal()
    return text.replace(key, "***") if key else text
