"""The API's request pipeline: route, faults, rate limit, auth, idempotency, then the endpoint.

Owns the route table under ``/api/v1`` and the order in which a request meets each stage
(docs/design.md): scripted ``fail_next`` first, then the random error and drop rates, then the
token bucket, then auth (CONTRACT §2), ``read_only``, idempotency (§5) and the endpoint, and
last the malformed fault, which garbles a 2xx answer after idempotency remembered it. A project
just created is answered ``create_project_delay_seconds`` late, nothing locked meanwhile.
Every request is logged in ``Traffic``; every 429 with ``Retry-After`` opens a window there.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from florasync.sandbox import assets, malformed, projects
from florasync.sandbox.context import API_PREFIX, Context, Request
from florasync.sandbox.faults import ScriptedFault
from florasync.sandbox.idempotency import Idempotency
from florasync.sandbox.ratelimit import retry_after_seconds
from florasync.sandbox.replies import ApiFailure, Drop, Garbled, Outcome, Reply, error_reply
from florasync.sandbox.traffic import Traffic

Endpoint = Callable[..., Reply]
"""``endpoint(ctx, request, *path_ids) -> Reply``; raises ``ApiFailure`` to answer an error."""
Wait = Callable[[float], object]
"""``wait(seconds)``: returns after ``seconds`` or earlier, when the sandbox stops."""
CREATE_PROJECT = "POST /projects"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    endpoint: Endpoint


def _route(name: str, endpoint: Endpoint) -> Route:
    method, _, template = name.partition(" ")
    pattern = re.compile("^" + re.escape(template).replace(r"\{id\}", "([^/]+)") + "$")
    return Route(method, pattern, name, endpoint)


ROUTES = (
    _route("GET /workspaces", projects.list_workspaces),
    _route("GET /projects", projects.list_projects),
    _route("POST /projects", projects.create_project),
    _route("GET /projects/{id}", projects.get_project),
    _route("GET /projects/{id}/nodes", projects.list_nodes),
    _route("POST /projects/{id}/assets/{id}/attach", projects.attach_asset),
    _route("POST /assets", assets.create_asset),
    _route("GET /assets", assets.list_assets),
    _route("GET /assets/{id}", assets.get_asset),
    _route("POST /assets/{id}/complete", assets.complete_asset),
    _route("POST /assets/{id}/retry", assets.retry_asset),
)


class Dispatcher:
    """Answers API requests (everything under ``/api/v1``)."""

    def __init__(self, ctx: Context, traffic: Traffic) -> None:
        self._ctx = ctx
        self._traffic = traffic
        self._idempotency = Idempotency(ctx)

    def handle(self, req: Request, *, wait: Wait) -> Outcome:
        """Log ``req``, run it through the pipeline and log how it ended; ``wait`` holds the
        answer to a created project (``create_project_delay_seconds``)."""
        found = _match(req)
        seq = self._traffic.begin(
            method=req.method,
            route=found[0].name if found else None,
            path=req.path,
            arrived=req.arrived,
            idempotency_key=req.idempotency_key,
            authorization=req.authorization is not None,
            identity=req.bearer,
            latency_seconds=self._ctx.faults.latency_seconds,
            connection=req.connection,
            exclusive=found is not None and _exclusive(found[0], req),
        )
        outcome = self._pipeline(*found, req) if found else error_reply(404)
        if found is not None:
            self._hold(found[0], outcome, wait)
        self._finish(seq, req, outcome)
        return outcome

    def _hold(self, route: Route, outcome: Outcome, wait: Wait) -> None:
        """Delay the answer to a project just created: stored and its key kept, no lock held,
        so a retry meanwhile meets the used key (issue 13: a kill -9 lands in this window)."""
        delay = self._ctx.faults.create_project_delay_seconds
        if delay > 0 and route.name == CREATE_PROJECT and _is_creation(outcome):
            wait(delay)

    def _pipeline(self, route: Route, ids: tuple[str, ...], req: Request) -> Outcome:
        faults = self._ctx.faults
        scripted = faults.take_scripted(route.name)
        if scripted is not None:
            return self._scripted(scripted, route, ids, req)
        if faults.roll(faults.error_rate):
            return error_reply(faults.pick_server_error())
        if faults.roll(faults.drop_before_rate):
            return Drop()
        drop_after = faults.roll(faults.drop_after_rate)
        limited = self._rate_limited(req)
        if limited is not None:
            return limited
        reply = self._respond(route, ids, req)
        if drop_after:
            return Drop(stored=True)
        return self._garble(faults.roll_malformed(), route, req, reply)

    def _scripted(
        self, fault: ScriptedFault, route: Route, ids: tuple[str, ...], req: Request
    ) -> Outcome:
        if fault.drop == "before":
            return Drop()
        if fault.drop == "after":
            self._respond(route, ids, req)  # side effects happen, the answer is lost
            return Drop(stored=True)
        if fault.malformed is not None:
            reply = self._respond(route, ids, req)  # side effects happen, the answer is garbled
            return self._garble(fault.malformed, route, req, reply)
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        return ApiFailure(fault.status or 500, fault.code, headers=headers).reply()

    def _garble(self, kind: str | None, route: Route, req: Request, reply: Reply) -> Outcome:
        """``reply`` as the ``kind`` of malformed answer if it is a 2xx, else unchanged."""
        if kind is None or not 200 <= reply.status < 300:
            return reply
        return malformed.garble(kind, route.name, req.path, reply, self._ctx.origin)

    def _rate_limited(self, req: Request) -> Reply | None:
        """429 when the key's token bucket is empty (CONTRACT §4)."""
        faults = self._ctx.faults
        wait = faults.rate_limit_wait(req.bearer or "")
        if wait <= 0:
            return None
        headers = (
            {"Retry-After": str(retry_after_seconds(wait))} if faults.retry_after_header else {}
        )
        return ApiFailure(429, headers=headers).reply()

    def _respond(self, route: Route, ids: tuple[str, ...], req: Request) -> Reply:
        try:
            self._admit(route, req)
            if route.method != "POST":
                return route.endpoint(self._ctx, req, *ids)
            return self._idempotency.run(req, lambda r: route.endpoint(self._ctx, r, *ids))
        except ApiFailure as failure:
            return failure.reply()

    def _admit(self, route: Route, req: Request) -> None:
        """Auth (CONTRACT §2), then ``read_only``: every mutating call is forbidden."""
        self._authenticate(req)
        if route.method == "POST" and self._ctx.faults.read_only:
            raise ApiFailure(403)

    def _authenticate(self, req: Request) -> None:
        """401 ``unauthorized`` without a Bearer header, ``invalid_api_key`` for a wrong key."""
        token = req.bearer
        if token is None:
            raise ApiFailure(401, "unauthorized")
        expected = self._ctx.store.api_key
        matches = secrets.compare_digest(token.encode(), expected.encode())
        if self._ctx.faults.revoked or not matches:
            raise ApiFailure(401, "invalid_api_key")

    def _finish(self, seq: int, req: Request, outcome: Outcome) -> None:
        if isinstance(outcome, Drop):
            self._traffic.finish(seq, None, dropped=True, replayed=False)
            return
        if isinstance(outcome, Garbled):
            replayed = outcome.real.is_replay
            self._traffic.finish(seq, outcome.status, replayed=replayed, malformed=outcome.kind)
            return
        retry_after = outcome.headers.get("Retry-After")
        if outcome.status == 429 and retry_after is not None and req.bearer is not None:
            self._traffic.announce_window(req.bearer, float(retry_after), seq)
        self._traffic.finish(seq, outcome.status, replayed=outcome.is_replay)


def _is_creation(outcome: Outcome) -> bool:
    """Whether the endpoint ran and created (a fresh 201, maybe garbled; not a replay, not a
    drop: a dropped answer is never sent, so there is nothing to delay)."""
    real = outcome.real if isinstance(outcome, Garbled) else outcome
    return isinstance(real, Reply) and real.status == 201 and not real.is_replay


def _exclusive(route: Route, req: Request) -> bool:
    """Whether a well-behaved client has at most one such request in flight (a POST about one
    asset, or under one Idempotency-Key), so the same one again came after the answer."""
    return route.method == "POST" and (req.idempotency_key is not None or "{id}" in route.name)


def _match(req: Request) -> tuple[Route, tuple[str, ...]] | None:
    """The route for ``req`` and its unquoted path ids, or None (404)."""
    if not req.path.startswith(API_PREFIX):
        return None
    tail = req.path[len(API_PREFIX) :]
    for route in ROUTES:
        hit = route.pattern.match(tail)
        if hit is not None and route.method == req.method:
            return route, tuple(unquote(g) for g in hit.groups())
    return None
