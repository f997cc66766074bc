"""The control API's routes (issue 16): ``/api/v1/...`` requests to answers, no HTTP in sight.

Owns what each route accepts (its query and JSON body, with a 400 naming what is wrong) and which
daemon action it takes; ``server`` does the HTTP, ``report`` the shapes, ``steering`` the pause
and the limits. Listed in docs/control.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from florasync import errors
from florasync.config import durations, timetable
from florasync.service.control.report import Report
from florasync.service.steering import Steering

PREFIX = "/api/v1/"
MAX_PAGE = 500
MAX_BODY_BYTES = 64 << 10


@dataclass(frozen=True, slots=True)
class Actions:
    """What a request may ask the daemon to do besides pausing."""

    retry: Callable[[list[str] | None], list[str]]  # paths (None: all failed) → put back
    rescan: Callable[[str], bool]  # folder root → queued (False: not a configured folder)


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


Answer = tuple[int, Any]


class Api:
    def __init__(self, report: Report, steering: Steering, actions: Actions) -> None:
        self.report = report
        self._steering = steering
        self._actions = actions
        self._get: dict[str, Callable[[dict[str, list[str]]], Any]] = {
            "status": lambda q: report.status(),
            "files": self._files,
            "transfers": lambda q: {"transfers": report.transfers()},
            "events": lambda q: {"events": report.events(_int(q, "limit", 50, 1, MAX_PAGE))},
            "throughput": lambda q: {"minutes": report.throughput()},
        }
        self._post: dict[str, Callable[[dict[str, Any]], Any]] = {
            "retry": self._retry,
            "pause": self._pause,
            "resume": self._resume,
            "rescan": self._rescan,
            "bandwidth": self._bandwidth,
        }

    def handle(self, method: str, route: str, query: str, body: bytes) -> Answer:
        """(HTTP status, JSON-able answer) for a request under ``/api/v1/``."""
        try:
            return 200, self._route(method, route, query, body)
        except BadRequest as exc:
            return exc.status, {"error": exc.code, "message": exc.message}
        except errors.JournalError as exc:
            return 503, {"error": "journal_unavailable", "message": str(exc)}

    def _route(self, method: str, route: str, query: str, body: bytes) -> Any:
        name = route.removeprefix(PREFIX)
        if method in ("GET", "HEAD") and name in self._get:
            return self._get[name](parse_qs(query))
        if method == "POST" and name in self._post:
            return self._post[name](_json_body(body))
        if name in self._get or name in self._post:
            raise BadRequest(405, "method_not_allowed", f"{method} is not allowed on {route}")
        raise BadRequest(404, "not_found", f"no such endpoint: {route}")

    # -- reads --------------------------------------------------------------------------------

    def _files(self, query: dict[str, list[str]]) -> Any:
        state = (query.get("state") or ["failed"])[0]
        offset = _int(query, "offset", 0, 0, 10**9)
        limit = _int(query, "limit", 50, 1, MAX_PAGE)
        if state == "failed":
            return self.report.failures(offset, limit)
        if state == "synced":
            return self.report.synced(offset, limit)
        if state in ("pending", "skipped", "removed"):
            return self.report.in_state(state, offset, limit)
        raise BadRequest(
            400,
            "bad_state",
            f"state must be failed, synced, pending, skipped or removed (got {state!r})",
        )

    # -- changes ------------------------------------------------------------------------------

    def _retry(self, body: dict[str, Any]) -> Any:
        if body.get("all_failed") is True:
            return {"retried": self._actions.retry(None)}
        path = body.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise BadRequest(
                400, "bad_body", 'send {"path": "/absolute/path"} or {"all_failed": true}'
            )
        return {"retried": self._actions.retry([path])}

    def _pause(self, body: dict[str, Any]) -> Any:
        seconds = body.get("for_seconds")
        if "for" in body and body["for"] is not None:
            if not isinstance(body["for"], str):
                raise BadRequest(400, "bad_duration", '"for" must be a string such as "2h"')
            try:
                seconds = durations.parse_duration(body["for"])
            except ValueError as exc:
                raise BadRequest(400, "bad_duration", str(exc)) from None
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0
        ):
            raise BadRequest(400, "bad_duration", '"for_seconds" must be a number > 0')
        self._steering.pause(None if seconds is None else float(seconds), by="api")
        return self._steering.paused_view()

    def _resume(self, body: dict[str, Any]) -> Any:
        self._steering.resume(by="api")
        return self._steering.paused_view()

    def _rescan(self, body: dict[str, Any]) -> Any:
        folder = body.get("folder")
        if not isinstance(folder, str) or not self._actions.rescan(folder):
            raise BadRequest(400, "bad_folder", '"folder" must be the path of a configured folder')
        return {"rescan": folder}

    def _bandwidth(self, body: dict[str, Any]) -> Any:
        if "limit" not in body:
            raise BadRequest(400, "bad_body", 'send {"limit": "4MiB/s"} or {"limit": null}')
        limit = body["limit"]
        rate = None
        if limit is not None:
            if not isinstance(limit, str):
                raise BadRequest(400, "bad_limit", '"limit" must be a string such as "4MiB/s"')
            try:
                rate = timetable.parse_rate(limit, "limit")
            except errors.ConfigError as exc:
                raise BadRequest(400, "bad_limit", str(exc)) from None
        self._steering.set_limit(rate)
        return self._steering.bandwidth_view()


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "bad_json", "the body must be a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest(400, "bad_json", "the body must be a JSON object")
    return value


def _int(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    text = (query.get(name) or [str(default)])[0]
    if not text.isdigit() or not low <= int(text) <= high:
        raise BadRequest(400, f"bad_{name}", f"{name} must be an integer from {low} to {high}")
    return int(text)
