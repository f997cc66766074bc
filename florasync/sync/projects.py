"""Projects mapped by name: found in the workspace, created once, the answer journaled (issue 13).

Owns turning a ``placement.Target`` into a project id: the journal's name → id map (read once,
so a rescan asks FLORA nothing), the lookup (``GET /projects?query=``, every page, an exact and
case-sensitive match), the create with an Idempotency-Key journaled before it leaves, and the
recovery after a lost answer or a crash: the name is always looked up again before a create,
and the key is derived from the workspace and the name, so a repeated create is recognised by
FLORA instead of making a second project. One resolution per name at a time.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from florasync import errors
from florasync.local import identity
from florasync.local.placement import Target
from florasync.state.journal.store import Journal

if TYPE_CHECKING:
    from florasync.flora import api, models

log = logging.getLogger(__name__)

FAILURE_MEMORY_SECONDS = 60.0  # a name that failed is asked again after this long, not per file


def find_by_name(client: api.FloraClient, workspace_id: str, name: str) -> list[models.Project]:
    """The workspace's projects called exactly ``name`` (FLORA's search, then an exact match)."""
    return _exact(client.list_projects(workspace_id, query=name), workspace_id, name)


def create_key(workspace_id: str, name: str, generation: int = 0) -> str:
    """The Idempotency-Key of creating ``name``: the same for every try, process and host
    (a new ``generation`` only after FLORA refused the create for good)."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
    return identity.idempotency_key("project", digest, workspace_id, generation)


def ambiguous(name: str, ids: Iterable[str]) -> errors.ProjectUnavailableError:
    listed = ", ".join(sorted(ids))
    return errors.ProjectUnavailableError(
        name,
        f"the workspace has several projects called {name!r} ({listed}); rename all but one "
        "in FLORA, or map the folder with project_id",
        code="project_ambiguous",
    )


def missing(name: str) -> errors.ProjectUnavailableError:
    return errors.ProjectUnavailableError(
        name,
        f"the workspace has no project called {name!r}; create it in FLORA, or set "
        "create: true to let florasync create it",
        code="project_not_found",
    )


class ProjectNames:
    """Project ids for targets; ``known`` never does I/O, ``resolve`` may ask FLORA.

    ``client`` builds (or returns) the API client on first use, so a rescan that knows every
    name imports no HTTP library.
    """

    def __init__(
        self,
        journal: Journal,
        workspace_id: str,
        client: Callable[[], api.FloraClient],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._workspace_id = workspace_id
        self._client = client
        self._clock = clock
        self._mutex = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        # by (name, create): a name missing for one folder may still be created for another
        self._failed: dict[tuple[str, bool], tuple[float, errors.ProjectUnavailableError]] = {}
        self._ids: dict[str, str] = {
            name: row.project_id
            for name, row in journal.project_names(workspace_id).items()
            if row.project_id is not None
        }

    def known(self, target: Target) -> str | None:
        """The project id of ``target`` if it is given or already resolved, else None."""
        if target.project_id is not None:
            return target.project_id
        return self._ids.get(target.name or "")

    def names(self) -> dict[str, str]:
        """Every name resolved so far (or journaled by an earlier run), with its id."""
        with self._mutex:
            return dict(self._ids)

    def forget_failures(self) -> None:
        """Ask FLORA again about names that failed (a reload: the key or its role may differ)."""
        with self._mutex:
            self._failed.clear()

    def resolve(self, target: Target) -> str:
        """The project id of ``target``, finding or creating the project by name if needed.

        Raises:
            errors.ProjectUnavailableError: no such project and ``create`` is off, several of
                that name, or the key may not create it (remembered for a minute).
            errors.TransientError: FLORA could not be asked now (try again later).
        """
        known = self.known(target)
        if known is not None:
            return known
        name = target.name or ""
        with self._lock_for(name):
            known = self.known(target)
            if known is not None:
                return known
            self._raise_if_failed((name, target.create))
            try:
                project_id = self._find_or_create(name, create=target.create)
            except errors.ProjectUnavailableError as exc:
                with self._mutex:
                    self._failed[(name, target.create)] = (self._clock(), exc)
                log.error("%s", exc)  # noqa: TRY400 -- the message says it all
                raise
            with self._mutex:
                self._ids[name] = project_id
            return project_id

    def _lock_for(self, name: str) -> threading.Lock:
        with self._mutex:
            return self._locks.setdefault(name, threading.Lock())

    def _raise_if_failed(self, key: tuple[str, bool]) -> None:
        with self._mutex:
            failed = self._failed.get(key)
        if failed is not None and self._clock() - failed[0] < FAILURE_MEMORY_SECONDS:
            raise failed[1]

    def _find_or_create(self, name: str, *, create: bool) -> str:
        client = self._client()
        found = find_by_name(client, self._workspace_id, name)
        if not found and create:
            # FLORA's search is undocumented: before making one, list everything to be sure
            found = _exact(client.list_projects(self._workspace_id), self._workspace_id, name)
        if len(found) > 1:
            raise ambiguous(name, (p.project_id for p in found))
        if found:
            return self._found(name, found[0].project_id, "found")
        if not create:
            raise missing(name)
        return self._create(client, name)

    def _create(self, client: api.FloraClient, name: str) -> str:
        stored = self._journal.project_name(self._workspace_id, name)
        generation = stored.generation if stored else 0
        key = stored.create_key if stored and stored.create_key else None
        key = key or create_key(self._workspace_id, name, generation)
        self._journal.begin_project_create(self._workspace_id, name, key, generation)
        try:
            project = client.create_project(self._workspace_id, name, idempotency_key=key)
        except errors.IdempotencyDuplicateError:
            return self._after_duplicate(client, name)
        except (errors.CredentialsError, errors.PaymentRequiredError):
            raise
        except errors.RejectedError as exc:  # a final answer to this key: never send it again
            self._journal.refuse_project_create(self._workspace_id, name, generation + 1)
            raise _refused(name, exc) from None
        return self._found(name, project.project_id, "created")

    def _after_duplicate(self, client: api.FloraClient, name: str) -> str:
        """FLORA has seen this create before (a lost answer, a crash): the project exists."""
        found = find_by_name(client, self._workspace_id, name)
        if len(found) > 1:
            raise ambiguous(name, (p.project_id for p in found))
        if not found:  # accepted, not listed yet: never a second create, ask again later
            raise errors.ServerError(
                f"FLORA accepted creating project {name!r} before but does not list it yet",
                code="project_not_listed",
            )
        return self._found(name, found[0].project_id, "found after a repeated create")

    def _found(self, name: str, project_id: str, how: str) -> str:
        self._journal.record_project(self._workspace_id, name, project_id)
        log.info("project %r is %s (%s)", name, project_id, how)
        return project_id


def _exact(
    projects: Iterable[models.Project], workspace_id: str, name: str
) -> list[models.Project]:
    """Projects named exactly ``name`` (case-sensitive) in the workspace, each id once."""
    chosen: dict[str, models.Project] = {}
    for project in projects:
        if project.name == name and project.workspace_id in (None, workspace_id):
            chosen.setdefault(project.project_id, project)
    return list(chosen.values())


def _refused(name: str, exc: errors.RejectedError) -> errors.ProjectUnavailableError:
    if isinstance(exc, errors.ForbiddenError):
        return errors.ProjectUnavailableError(
            name,
            f"this API key may not create projects (HTTP 403 {exc.code or 'forbidden'}); "
            f"create {name!r} in FLORA, or use a key whose role may create projects",
            code="project_forbidden",
        )
    return errors.ProjectUnavailableError(
        name, f"FLORA refused to create project {name!r}: {exc}", code="project_refused"
    )
