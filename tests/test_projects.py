"""Projects by name (sync.projects) against the sandbox over HTTP, with a real journal."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from florasync import errors
from florasync.flora import api, retrying, transport
from florasync.flora.secret import Secret
from florasync.local.placement import Target
from florasync.sandbox import Sandbox
from florasync.state.journal.records import ProjectName
from florasync.state.journal.store import Journal
from florasync.sync import projects
from florasync.sync.projects import FAILURE_MEMORY_SECONDS, ProjectNames

from .helpers import SHORT_TIMEOUT, SleepingClock, wait_until

FAST = retrying.RetryPolicy(backoff_base_seconds=0.01, backoff_cap_seconds=0.05)
TIMEOUTS = transport.Timeouts(connect=5.0, read=10.0, upload_read=10.0)
CREATE = "POST /projects"
LIST = "GET /projects"
CREATE_DELAY_SECONDS = 1.0  # the sandbox holds the answer this long after creating
THREADS = 8


@dataclass
class Rig:
    """A client and a journal wired to the sandbox, and ProjectNames built on them."""

    sb: Sandbox
    journal: Journal
    client: api.FloraClient

    @property
    def ws(self) -> str:
        return self.sb.workspace_id

    def names(self, **options: Any) -> ProjectNames:
        return ProjectNames(self.journal, self.ws, lambda: self.client, **options)

    def requests(self, route: str | None = None) -> list[dict[str, Any]]:
        """The request log (of one route), oldest first."""
        log = self.sb.state()["requests"]
        return [r for r in log if route is None or r["route"] == route]

    def projects_named(self, name: str) -> list[str]:
        return [pid for pid, n in self.sb.project_names().items() if n == name]

    def journaled(self, name: str) -> ProjectName | None:
        return self.journal.project_names(self.ws).get(name)


@pytest.fixture
def rig(sandbox: Sandbox, any_journal: Journal) -> Iterator[Rig]:
    """The client built as ``config.runtime`` builds it (fast retries), and a fresh journal
    (each backend)."""
    stop = threading.Event()
    journal = any_journal
    client = api.FloraClient(
        sandbox.base_url,
        Secret(sandbox.api_key),
        timeouts=TIMEOUTS,
        policy=FAST,
        gate=retrying.RateGate(),
        stop=stop,
    )
    yield Rig(sandbox, journal, client)
    client.close()


def _failure(call: Callable[[], object]) -> errors.ProjectUnavailableError:
    with pytest.raises(errors.ProjectUnavailableError) as caught:
        call()
    return caught.value


def test_an_existing_name_is_found_exactly_and_journaled(rig: Rig):
    """The project of exactly that name (case-sensitive, not a longer one) is used, journaled,
    and nothing is created, even with create on."""
    wanted = rig.sb.add_project("Moodboards")
    rig.sb.add_project("moodboards")
    rig.sb.add_project("Moodboards archive")
    names = rig.names()
    assert names.resolve(Target(name="Moodboards", create=True)) == wanted
    row = rig.journaled("Moodboards")
    assert row is not None
    assert row.project_id == wanted
    assert row.create_key is None
    assert rig.requests(CREATE) == []
    assert names.names() == {"Moodboards": wanted}


def test_a_name_on_a_later_page_is_found(rig: Rig):
    """The search is read to its last page: a name listed after a full page of longer names
    that contain it is still found."""
    wanted = rig.sb.add_project("Lookbook")
    for n in range(api.PAGE_SIZE + 5):  # listed first: most recent activity first
        rig.sb.add_project(f"Lookbook {n}")
    assert rig.names().resolve(Target(name="Lookbook", create=True)) == wanted
    assert len(rig.requests(LIST)) >= 2
    assert rig.requests(CREATE) == []


def test_a_missing_name_is_created_once_with_a_key_journaled_before_the_answer(rig: Rig):
    """create=True: one POST /projects with an Idempotency-Key that the journal held while the
    request was still unanswered; the new project's id is returned and journaled."""
    rig.sb.faults.update(create_project_delay_seconds=CREATE_DELAY_SECONDS)
    names = rig.names()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(names.resolve, Target(name="Summer", create=True))
        in_flight = wait_until(
            lambda: [r for r in rig.requests(CREATE) if r["status"] is None and not r["dropped"]],
            timeout=SHORT_TIMEOUT,
            message="POST /projects in flight",
        )
        row = rig.journaled("Summer")
        assert not pending.done()
        project_id = pending.result(timeout=SHORT_TIMEOUT)
    key = in_flight[0]["idempotency_key"]
    assert key == projects.create_key(rig.ws, "Summer")
    assert row is not None
    assert row.create_key == key
    assert row.project_id is None
    creates = rig.requests(CREATE)
    assert [(r["status"], r["idempotency_key"]) for r in creates] == [(201, key)]
    assert rig.projects_named("Summer") == [project_id]
    assert rig.journaled("Summer") == ProjectName("Summer", project_id, key)


def test_threads_resolving_one_new_name_create_one_project(rig: Rig):
    """8 threads resolving the same new name at once: one POST /projects, one id for all."""
    names = rig.names()
    start = threading.Barrier(THREADS)

    def resolve() -> str:
        start.wait(timeout=SHORT_TIMEOUT)
        return names.resolve(Target(name="Autumn", create=True))

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(resolve) for _ in range(THREADS)]
        results = [f.result(timeout=SHORT_TIMEOUT) for f in futures]
    assert len(rig.requests(CREATE)) == 1
    assert set(results) == set(rig.projects_named("Autumn"))
    assert len(set(results)) == 1


def test_a_new_instance_knows_journaled_names_without_a_request(rig: Rig):
    """A ProjectNames on the same journal (a restart) knows a resolved name: no request, and
    not even a client is built."""
    project_id = rig.names().resolve(Target(name="Winter", create=True))
    before = len(rig.requests())
    built: list[None] = []

    def client() -> api.FloraClient:
        built.append(None)
        return rig.client

    names = ProjectNames(rig.journal, rig.ws, client)
    target = Target(name="Winter")
    assert names.known(target) == project_id
    assert names.resolve(target) == project_id
    assert names.names() == {"Winter": project_id}
    assert names.known(Target(name="Spring")) is None
    assert len(rig.requests()) == before
    assert built == []


def test_two_projects_of_the_name_fail_with_both_ids(rig: Rig):
    """Two projects called the name: project_ambiguous naming both ids, no guess, no create."""
    ids = [rig.sb.add_project("Twins"), rig.sb.add_project("Twins")]
    error = _failure(lambda: rig.names().resolve(Target(name="Twins", create=True)))
    assert error.code == "project_ambiguous"
    assert error.name == "Twins"
    assert all(pid in str(error) for pid in ids)
    assert rig.requests(CREATE) == []
    assert rig.journaled("Twins") is None


def test_a_failure_is_remembered_for_a_minute(rig: Rig):
    """A failed name is not asked again within FAILURE_MEMORY_SECONDS; after that it is."""
    rig.sb.add_project("Twins")
    rig.sb.add_project("Twins")
    clock = SleepingClock()
    names = rig.names(clock=clock)
    target = Target(name="Twins")
    first = _failure(lambda: names.resolve(target))
    asked = len(rig.requests())
    clock.sleep(FAILURE_MEMORY_SECONDS - 0.1)
    assert _failure(lambda: names.resolve(target)) is first
    assert len(rig.requests()) == asked
    clock.sleep(0.2)
    assert _failure(lambda: names.resolve(target)).code == "project_ambiguous"
    assert len(rig.requests()) > asked


def test_forget_failures_asks_again_at_once(rig: Rig):
    """forget_failures (a reload) makes a failed name be asked again without waiting."""
    names = rig.names(clock=SleepingClock())
    target = Target(name="Later")
    assert _failure(lambda: names.resolve(target)).code == "project_not_found"
    asked = len(rig.requests())
    _failure(lambda: names.resolve(target))
    assert len(rig.requests()) == asked
    project_id = rig.sb.add_project("Later")
    names.forget_failures()
    assert names.resolve(target) == project_id
    assert len(rig.requests()) > asked


def test_a_missing_name_without_create_is_not_found(rig: Rig):
    """create off and no such project: project_not_found, saying how to fix it; nothing made."""
    error = _failure(lambda: rig.names().resolve(Target(name="Nowhere")))
    assert error.code == "project_not_found"
    assert "'Nowhere'" in str(error)
    assert "create: true" in str(error)
    assert rig.requests(CREATE) == []
    assert rig.projects_named("Nowhere") == []
    assert rig.journaled("Nowhere") is None


def test_a_key_that_may_not_create_fails_with_project_forbidden(rig: Rig):
    """A 403 on POST /projects: project_forbidden, the message says the key may not create
    projects, no project is made, and the name is not tried again within the minute."""
    rig.sb.faults.update(forbid_project_create=True)
    names = rig.names()
    target = Target(name="Locked", create=True)
    error = _failure(lambda: names.resolve(target))
    assert error.code == "project_forbidden"
    assert "may not create projects" in str(error)
    assert "'Locked'" in str(error)
    assert rig.projects_named("Locked") == []
    _failure(lambda: names.resolve(target))
    assert [r["status"] for r in rig.requests(CREATE)] == [403]


def test_a_failed_lookup_without_create_does_not_block_a_create(rig: Rig):
    """A name not found for a folder without create is still created for one with create."""
    names = rig.names()
    assert _failure(lambda: names.resolve(Target(name="Shared"))).code == "project_not_found"
    project_id = names.resolve(Target(name="Shared", create=True))
    assert rig.projects_named("Shared") == [project_id]


@pytest.mark.parametrize(
    "replay_errors",
    [
        pytest.param(False, id="4xx-not-kept"),
        pytest.param(True, id="4xx-replayed"),
    ],
)
def test_a_granted_role_creates_after_forget_failures(rig: Rig, replay_errors):
    """A key refused creating (403) whose role is then granted creates the project once the
    failures are forgotten (a reload)."""
    rig.sb.faults.update(
        forbid_project_create=True, idempotency="replay", replay_errors=replay_errors
    )
    names = rig.names()
    target = Target(name="Granted", create=True)
    assert _failure(lambda: names.resolve(target)).code == "project_forbidden"
    rig.sb.faults.update(forbid_project_create=False)
    names.forget_failures()
    project_id = names.resolve(target)
    assert rig.projects_named("Granted") == [project_id]


@pytest.mark.parametrize(("idempotency", "again"), [("duplicate", 409), ("replay", 201)])
def test_a_lost_create_answer_leaves_one_project(rig: Rig, idempotency, again):
    """The answer to POST /projects lost after the project was made: the same key is sent
    again (409 or a replayed 201), and either way one project stays, its id returned and
    journaled."""
    rig.sb.faults.update(idempotency=idempotency)
    rig.sb.faults.fail_next(CREATE, drop="after")
    project_id = rig.names().resolve(Target(name="Dropped", create=True))
    assert rig.projects_named("Dropped") == [project_id]
    row = rig.journaled("Dropped")
    assert row is not None
    assert row.project_id == project_id
    creates = rig.requests(CREATE)
    assert [(r["dropped"], r["status"]) for r in creates] == [(True, None), (False, again)]
    assert {r["idempotency_key"] for r in creates} == {row.create_key}


def test_a_create_left_by_a_crash_is_found_by_name(rig: Rig):
    """A journaled create whose POST landed before a crash: the name is looked up and found;
    no second POST."""
    key = projects.create_key(rig.ws, "Crashed")
    rig.journal.begin_project_create(rig.ws, "Crashed", key)
    landed = rig.sb.add_project("Crashed")
    names = rig.names()
    target = Target(name="Crashed", create=True)
    assert names.known(target) is None
    assert names.resolve(target) == landed
    assert rig.requests(CREATE) == []
    assert rig.journaled("Crashed") == ProjectName("Crashed", landed, key)


def test_a_create_left_by_a_crash_reuses_its_journaled_key(rig: Rig):
    """A journaled create whose POST never landed is sent with the journaled key."""
    rig.journal.begin_project_create(rig.ws, "Unsent", "fs1-project-from-an-older-run")
    project_id = rig.names().resolve(Target(name="Unsent", create=True))
    assert [r["idempotency_key"] for r in rig.requests(CREATE)] == ["fs1-project-from-an-older-run"]
    assert rig.projects_named("Unsent") == [project_id]


NAMES = ["Summer", "summer", "Été 2027 — Lookbook", "a b/c", "🌸", "x" * 1000]


def test_create_key_is_deterministic_ascii_and_bounded():
    """The create key is the same every time, printable ASCII without spaces, at most 255
    characters, and differs per name and per workspace."""
    workspaces = ["ws_0b7dba6322d6aba09a337e1a", "ws_ffffffffffffffffffffffff"]
    keys = {(ws, name): projects.create_key(ws, name) for ws in workspaces for name in NAMES}
    for (ws, name), key in keys.items():
        assert projects.create_key(ws, name) == key
        assert key.isascii()
        assert key.isprintable()
        assert " " not in key
        assert len(key) <= 255
    assert len(set(keys.values())) == len(keys)
