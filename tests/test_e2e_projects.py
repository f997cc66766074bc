"""Projects from folders, end to end: by name, one per subfolder, created once (issue 13)."""

from __future__ import annotations

import random
import shutil
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from .helpers import (
    LONG_TIMEOUT,
    assert_exactly_once,
    cli_command,
    cli_env,
    mutating_requests,
    wait_until,
    write_config,
    write_file,
)
from .syncenv import SyncEnv

CAMPAIGNS = ("Summer Campaign", "Été 2027 — Lookbook", "stills")


def _projects_named(state: dict[str, Any], name: str) -> list[str]:
    return [p["project_id"] for p in state["projects"] if p["name"] == name]


def _one_project(state: dict[str, Any], name: str) -> str:
    ids = _projects_named(state, name)
    assert len(ids) == 1, f"{len(ids)} projects called {name!r}: {ids}"
    return ids[0]


def _campaign_root(env: SyncEnv, names: tuple[str, ...] = CAMPAIGNS, files: int = 2) -> Path:
    root = env.root / "campaigns"
    for n, name in enumerate(names):
        for k in range(files):
            write_file(root / name / f"render{k}.png", 3000 + k, seed=100 * n + k)
    return root


def _subfolder_config(env: SyncEnv, root: Path, **folder: Any) -> None:
    env.write_config(folders=[{"path": str(root), "projects_from_subfolders": True, **folder}])


def _expected(env: SyncEnv, root: Path, names: tuple[str, ...]) -> dict[Path, str]:
    state = env.sb.state(requests=False)
    return {
        path: _one_project(state, name) for name in names for path in (root / name).rglob("*.png")
    }


def test_each_subfolder_becomes_the_project_of_its_name(env: SyncEnv) -> None:
    """Three subfolders (a space, non-ASCII) → three projects of those names, each file attached
    to its own; a file at the root is reported and skipped; a rescan sends nothing mutating."""
    root = _campaign_root(env)
    write_file(root / "loose.png", 2000, seed=999)
    _subfolder_config(env, root)
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    state = env.sb.state()
    assert_exactly_once(state, _expected(env, root, CAMPAIGNS))
    creates = [r for r in state["requests"] if r["route"] == "POST /projects"]
    assert len(creates) == len(CAMPAIGNS)
    assert all(r["idempotency_key"] for r in creates)
    skipped = [f for f in env.status()["failures"] if f["path"] == str(root / "loose.png")]
    assert skipped
    assert skipped[0]["code"] == "no_project"

    before = len(mutating_requests(state))
    again = env.scan()
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(mutating_requests(env.sb.state())) == before


def test_a_project_found_by_name_is_used_not_created(env: SyncEnv) -> None:
    """``project: {name}`` attaches to the workspace's project of exactly that name (not to a
    project whose name only contains it, nor one differing in case), creating nothing."""
    target = env.sb.add_project("Moodboards")
    env.sb.add_project("Moodboards archive")
    env.sb.add_project("moodboards")
    env.add(0, "a.png")
    env.write_config(folders=[{"path": str(env.folders[0]), "project": {"name": "Moodboards"}}])
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    state = env.sb.state()
    assert_exactly_once(state, {env.folders[0] / "a.png": target})
    assert not [r for r in state["requests"] if r["route"] == "POST /projects"]


def test_a_missing_name_fails_that_folder_unless_create(env: SyncEnv) -> None:
    """Without ``create`` a name that does not exist fails its folder's files (exit 1, status
    says why) while the other folder syncs; with ``create: true`` the project is made once."""
    env.add(0, "a.png")
    env.add(1, "b.png")
    named = {"path": str(env.folders[0]), "project": {"name": "Lookbook"}}
    by_id = {"path": str(env.folders[1]), "project_id": env.projects[1]}
    env.write_config(folders=[named, by_id])
    result = env.scan()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no project called 'Lookbook'" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    failure = next(f for f in env.status()["failures"] if f["path"].endswith("a.png"))
    assert failure["code"] == "project_not_found"
    assert_exactly_once(env.sb.state(), {env.folders[1] / "b.png": env.projects[1]})

    env.write_config(folders=[{**named, "project": {"name": "Lookbook", "create": True}}, by_id])
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    state = env.sb.state()
    expected = {
        env.folders[0] / "a.png": _one_project(state, "Lookbook"),
        env.folders[1] / "b.png": env.projects[1],
    }
    assert_exactly_once(state, expected)


def test_two_projects_with_the_name_fail_the_folder_with_both_ids(env: SyncEnv) -> None:
    """Two projects called the same: the folder's files fail naming both ids, never a guess;
    nothing is created or attached there."""
    first, second = env.sb.add_project("Twins"), env.sb.add_project("Twins")
    env.add(0, "a.png")
    env.write_config(
        folders=[{"path": str(env.folders[0]), "project": {"name": "Twins", "create": True}}]
    )
    result = env.scan()
    assert result.returncode == 1
    failure = env.status()["failures"][0]
    assert failure["code"] == "project_ambiguous"
    assert first in failure["message"]
    assert second in failure["message"]
    state = env.sb.state()
    assert len(_projects_named(state, "Twins")) == 2
    assert not any(state["nodes"].get(pid) for pid in (first, second))


def test_a_key_that_may_not_create_projects_fails_only_that_folder(env: SyncEnv) -> None:
    """A 403 on ``POST /projects``: the subfolders' files fail with a message about the key's
    permission (exit 1), the folder mapped by id still syncs; no project was made."""
    env.sb.faults.update(forbid_project_create=True)
    root = _campaign_root(env, ("New campaign",), files=1)
    env.add(1, "b.png")
    env.write_config(
        folders=[
            {"path": str(root), "projects_from_subfolders": True},
            {"path": str(env.folders[1]), "project_id": env.projects[1]},
        ]
    )
    result = env.scan()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "may not create projects" in result.stdout + result.stderr
    failure = env.status()["failures"][0]
    assert failure["code"] == "project_forbidden"
    assert "New campaign" in failure["message"]
    state = env.sb.state()
    assert not _projects_named(state, "New campaign")
    assert_exactly_once(state, {env.folders[1] / "b.png": env.projects[1]})
    creates = [r for r in state["requests"] if r["route"] == "POST /projects"]
    assert len(creates) == 1, "the refusal is remembered, not asked again per file"


@pytest.mark.parametrize("idempotency", ["duplicate", "replay"])
def test_a_lost_create_answer_leaves_one_project(env: SyncEnv, idempotency: str) -> None:
    """The answer to ``POST /projects`` is lost after FLORA made the project: the retry with
    the same key is recognised and the name is looked up; one project per name."""
    env.sb.faults.update(idempotency=idempotency)
    env.sb.faults.fail_next("POST /projects", drop="after")
    root = _campaign_root(env, ("Dropped",), files=2)
    _subfolder_config(env, root)
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(env.sb.state(), _expected(env, root, ("Dropped",)))


def test_a_renamed_subfolder_attaches_to_the_new_project_without_upload(env: SyncEnv) -> None:
    """Renaming a subfolder moves its files to the project of the new name by attaching the
    existing assets (no new upload); the old project keeps what it had."""
    root = _campaign_root(env, ("Draft",), files=2)
    _subfolder_config(env, root)
    assert env.scan().returncode == 0
    old = _one_project(env.sb.state(requests=False), "Draft")
    (root / "Draft").rename(root / "Final")
    uploads_before = len([r for r in env.sb.state()["requests"] if r["route"] == "POST /assets"])
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    state = env.sb.state()
    new = _one_project(state, "Final")
    assert len([r for r in state["requests"] if r["route"] == "POST /assets"]) == uploads_before
    assert len(state["nodes"][old]) == 2, "the old project keeps its nodes"
    assert len(state["nodes"][new]) == 2
    assert {n["asset_id"] for n in state["nodes"][old]} == {
        n["asset_id"] for n in state["nodes"][new]
    }


def test_hidden_and_ignored_subfolders_never_become_projects(env: SyncEnv) -> None:
    """``.git``, ``@eaDir`` and an excluded directory make no project and upload nothing."""
    before = set(env.sb.project_names().values())
    root = _campaign_root(env, ("Real",), files=1)
    for hidden in (".git", "@eaDir", "scratch"):
        write_file(root / hidden / "x.png", 1000, seed=len(hidden))
    _subfolder_config(env, root, exclude=["scratch/"])
    assert env.scan().returncode == 0
    state = env.sb.state()
    assert {p["name"] for p in state["projects"]} - before == {"Real"}
    assert_exactly_once(state, _expected(env, root, ("Real",)))


def test_a_decomposed_unicode_name_matches_the_composed_project(env: SyncEnv) -> None:
    """A subfolder named in NFD (as macOS stores names) maps to the project typed in NFC."""
    composed = "Café"
    target = env.sb.add_project(composed)
    root = env.root / "campaigns"
    write_file(root / unicodedata.normalize("NFD", composed) / "a.png", 1000, seed=5)
    _subfolder_config(env, root, projects_from_subfolders={"create": False})
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    state = env.sb.state()
    assert len(state["nodes"].get(target, [])) == 1
    assert len(_projects_named(state, composed)) == 1


def test_check_lists_names_that_exist_and_would_be_created(env: SyncEnv) -> None:
    """``check`` says which subfolder names exist and which would be created, and creates
    nothing; ``run --scan --dry-run`` prints "would create project"."""
    existing = env.sb.add_project("Winter Campaign")
    root = _campaign_root(env, ("Winter Campaign", "Autumn"), files=1)
    _subfolder_config(env, root)
    result = env.cli("check")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"'Winter Campaign' is {existing}" in out
    assert "'Autumn' would be created" in out
    dry = env.cli("run", "--scan", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would create project 'Autumn'" in dry.stdout
    assert "would create project 'Winter Campaign'" not in dry.stdout
    assert not mutating_requests(env.sb.state())


def test_config_errors_name_the_key(env: SyncEnv) -> None:
    """``project`` and ``project_id`` together, or an empty name: exit 2 naming the key."""
    base = {"path": str(env.folders[0])}
    both = {**base, "project_id": env.projects[0], "project": {"name": "X"}}
    env.write_config(folders=[both])
    result = env.scan()
    assert result.returncode == 2
    assert "folders[0].project" in result.stderr
    assert "Traceback" not in result.stderr
    env.write_config(folders=[{**base, "project": {"name": ""}}])
    result = env.scan()
    assert result.returncode == 2
    assert "folders[0].project.name" in result.stderr


@pytest.mark.parametrize("idempotency", ["duplicate", "replay"])
def test_two_hosts_with_their_own_journals_create_each_name_once(
    env: SyncEnv, idempotency: str
) -> None:
    """Two florasync processes with separate journals (two hosts on one share, before the fleet
    journal) scan the same subfolders at once: each name is one project, because both send
    the create under the same name-derived key and look the name up after a 409."""
    env.sb.faults.update(idempotency=idempotency, create_project_delay_seconds=0.2)
    names = tuple(f"Shared {n}" for n in range(6))
    root = _campaign_root(env, names, files=1)
    configs = [
        write_config(
            env.root / f"host{n}.yaml",
            base_url=env.sb.base_url,
            workspace_id=env.sb.workspace_id,
            folders=[{"path": str(root), "projects_from_subfolders": True}],
            state_dir=env.root / f"state{n}",
            settle_seconds=0,
            retry={"backoff_base_seconds": 0.05, "max_attempts": 14},
        )
        for n in (1, 2)
    ]
    procs = [
        subprocess.Popen(
            cli_command("run", "--scan", "-c", str(c)),
            env=cli_env(env.sb.api_key),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in configs
    ]
    outputs = [p.communicate(timeout=LONG_TIMEOUT) for p in procs]
    state = env.sb.state()
    for name in names:
        _one_project(state, name)
    made = [
        r
        for r in state["requests"]
        if r["route"] == "POST /projects" and r["status"] == 201 and not r["replayed"]
    ]
    assert len(made) == len(names), outputs  # a replayed 201 made nothing
    for proc, (out, err) in zip(procs, outputs, strict=True):
        # a name in flight at the other host may be looked up once more in a later run
        assert proc.returncode in (0, 1), out + err
        assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("idempotency", ["duplicate", "replay"])
def test_kill_9_while_a_project_is_created_leaves_one_per_name(
    env: SyncEnv, idempotency: str
) -> None:
    """SIGKILL while ``POST /projects`` is answered (the project made, the answer not yet
    journaled) ≥ 10 times, and right after answers, restarting each time: one project per
    name, every file attached once."""
    env.sb.faults.update(idempotency=idempotency, create_project_delay_seconds=0.3)
    names = tuple(f"Campaign {n:03d}" for n in range(120))  # up to 4 created per kill
    root = _campaign_root(env, names, files=1)
    _subfolder_config(env, root)
    rng = random.Random(f"projects-{idempotency}")
    kills = unanswered = 0
    for _ in range(60):
        if kills >= 12 and unanswered >= 10:
            break
        in_flight = rng.random() < 0.8
        landed = _kill_during_a_create(env, in_flight=in_flight)
        kills += landed
        unanswered += landed and in_flight
    assert unanswered >= 10, f"only {unanswered} kills landed while a create was unanswered"
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    state = env.sb.state()
    assert_exactly_once(state, _expected(env, root, names))
    print(
        f"{kills} kills during project creation ({unanswered} while POST /projects was "
        f"unanswered); {len(state['projects'])} projects in all, one per name"
    )


def _kill_during_a_create(env: SyncEnv, *, in_flight: bool) -> bool:
    """Start a scan and SIGKILL it while a new ``POST /projects`` is unanswered (or right
    after one was answered); False when the scan ended first."""
    seen = len(_creates(env))
    proc = env.popen("run", "--scan")
    try:
        wait_until(
            lambda: proc.poll() is not None or _create_landed(env, seen, in_flight=in_flight),
            timeout=LONG_TIMEOUT,
            interval=0.005,
            message="a POST /projects",
        )
    finally:
        finished = proc.poll() is not None
        env.kill(proc)
    return not finished


def _creates(env: SyncEnv) -> list[dict[str, Any]]:
    return [r for r in env.sb.state()["requests"] if r["route"] == "POST /projects"]


def _create_landed(env: SyncEnv, seen: int, *, in_flight: bool) -> bool:
    new = _creates(env)[seen:]
    if in_flight:
        return any(r["status"] is None for r in new)
    return any(r["status"] is not None for r in new)


def test_copy_of_a_subfolder_attaches_the_same_assets(env: SyncEnv) -> None:
    """The same bytes in two subfolders: one asset, attached once to each project."""
    root = _campaign_root(env, ("One",), files=1)
    shutil.copytree(root / "One", root / "Two")
    _subfolder_config(env, root)
    assert env.scan().returncode == 0
    state = env.sb.state()
    assert len(state["assets"]) == 1
    assert_exactly_once(state, _expected(env, root, ("One", "Two")))
