"""``florasync verify`` end to end (issue 15): the real CLI against the sandbox, whose drift
controls do what FLORA's own UI does (remove a node, add an asset made elsewhere)."""

from __future__ import annotations

import json
import shutil
from typing import Any

from .helpers import assert_exactly_once, mutating_requests, write_file
from .pgcluster import PgCluster, create_database, drop_database
from .syncenv import SyncEnv


def _verify(env: SyncEnv, *args: str) -> tuple[int, dict[str, Any]]:
    result = env.cli("verify", "--json", *args)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def _routes(env: SyncEnv, route: str) -> int:
    return sum(1 for r in env.sb.state()["requests"] if r["route"] == route)


def test_a_synced_library_is_in_sync(env: SyncEnv) -> None:
    """After a scan, verify reads FLORA and exits 0 with every file in sync, sending nothing
    that changes anything."""
    for n in range(4):
        env.add(n % 2, f"s{n}.png")
    assert env.scan().returncode == 0
    before = len(mutating_requests(env.sb.state()))
    code, report = _verify(env)
    assert code == 0
    assert report["clean"] is True
    assert report["totals"]["in_sync"] == 4
    assert len(mutating_requests(env.sb.state())) == before
    text = env.cli("verify")
    assert text.returncode == 0
    assert "in sync" in text.stdout


def test_a_node_removed_in_flora_is_respected_until_retry(env: SyncEnv) -> None:
    """A node removed in FLORA: verify reports it (exit 1) and records a tombstone; later
    verifies list it as removed (exit 0); a rescan does not attach it again; status shows it;
    ``retry PATH`` and a scan attach it again, once."""
    kept = env.add(0, "kept.png")
    gone = env.add(0, "gone.png")
    assert env.scan().returncode == 0
    project = env.projects[0]
    nodes = env.sb.state()["nodes"][project]
    state = env.sb.state()
    asset = next(a for a in state["assets"] if a["name"] == "gone.png")
    node = next(n for n in nodes if n["asset_id"] == asset["asset_id"])
    env.sb.remove_node(project, node["node_id"])
    code, report = _verify(env)
    assert code == 1
    missing = report["folders"][0]["projects"][0]["items"]["missing_in_flora"]
    assert [(m["path"], m["reason"], m["action"]) for m in missing] == [
        (str(gone), "node_removed", "tombstone")
    ]
    code, report = _verify(env)
    assert code == 0
    assert report["totals"]["removed_in_flora"] == 1
    attaches = _routes(env, "POST /projects/{id}/assets/{id}/attach")
    again = env.scan()
    assert again.returncode == 0, again.stdout + again.stderr
    assert _routes(env, "POST /projects/{id}/assets/{id}/attach") == attaches
    status = env.cli("status")
    assert "1 removed in FLORA" in status.stdout
    retried = env.cli("retry", str(gone))
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert env.scan().returncode == 0
    assert _routes(env, "POST /projects/{id}/assets/{id}/attach") == attaches + 1
    assert _verify(env)[0] == 0
    assert kept.exists()


def test_a_lost_state_dir_is_adopted_without_uploading_again(env: SyncEnv) -> None:
    """The state dir is lost: verify --adopt matches each file to its asset by name, size and
    downloaded bytes and records it; the next scan sends no POST /assets and no attach."""
    for n in range(6):
        env.add(n % 2, f"lib{n}.png", size=3000 + n)
    assert env.scan().returncode == 0
    shutil.rmtree(env.state_dir)
    code, report = _verify(env)
    assert code == 1
    assert report["totals"]["not_synced"] == 6
    assert {a["decision"] for a in report["adoptions"]} == {"needs_check"}
    code, report = _verify(env, "--adopt")
    assert code == 0, report
    assert len(report["applied"]["adopted"]) == 6
    reserves = _routes(env, "POST /assets")
    attaches = _routes(env, "POST /projects/{id}/assets/{id}/attach")
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert _routes(env, "POST /assets") == reserves
    assert _routes(env, "POST /projects/{id}/assets/{id}/attach") == attaches
    assert_exactly_once(env.sb.state(), env.expected())


def test_two_look_alike_assets_are_reported_not_adopted(env: SyncEnv) -> None:
    """Two assets on the canvas with the file's name and size but other bytes: the match is
    ambiguous, reported, and nothing is adopted (the scan then uploads the file as new)."""
    path = env.add(0, "twin.png", size=2048)
    project = env.projects[0]
    for seed in (1, 2):
        data = write_file(env.root / f"other{seed}.bin", 2048, seed=seed + 100)
        env.sb.add_asset("twin.png", data, project_id=project, content_type="image/png")
    code, report = _verify(env, "--adopt")
    assert code == 1
    assert [(a["path"], a["decision"], len(a["asset_ids"])) for a in report["adoptions"]] == [
        (str(path), "ambiguous", 2)
    ]
    assert report["applied"]["adopted"] == []
    assert report["totals"]["unknown_to_journal"] == 2


def test_an_unfinished_upload_is_an_orphan_that_repair_resumes(env: SyncEnv) -> None:
    """A run that could not complete an upload (FLORA kept answering 503 to complete) leaves
    florasync's own pending_upload asset: verify lists it as a resumable orphan with its age;
    ``verify --repair`` resumes it, and the file ends attached once."""
    path = env.add(0, "half.png")
    env.sb.faults.fail_next("POST /assets/{id}/complete", status=503, times=40)
    first = env.scan()
    assert first.returncode == 1, first.stdout + first.stderr
    env.sb.faults.reset()
    code, report = _verify(env)
    assert code == 1
    orphans = report["folders"][0]["projects"][0]["items"]["orphans"]
    assert [(o["path"], o["reason"]) for o in orphans] == [(str(path), "resumable")]
    assert orphans[0]["age_seconds"] >= 0
    repaired = env.cli("verify", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert_exactly_once(env.sb.state(), env.expected())


def test_hundreds_of_assets_are_read_across_rate_limit_windows(env: SyncEnv) -> None:
    """260 assets made elsewhere on a mapped project, read in pages with 429 windows between
    them: each is reported once as unknown to the journal."""
    project = env.projects[0]
    for n in range(260):
        env.sb.add_asset(f"x{n}.png", n.to_bytes(4, "big"), project_id=project)
    env.sb.faults.fail_next("GET /assets", status=429, retry_after=1, times=2)
    code, report = _verify(env)
    assert code == 1
    unknown = report["folders"][0]["projects"][0]["items"]["unknown_to_journal"]
    assert len({u["asset_id"] for u in unknown}) == len(unknown) == 260
    limited = [r for r in env.sb.state()["requests"] if r["status"] == 429]
    assert len(limited) == 2


def test_restore_puts_back_a_removed_node_with_repair(env: SyncEnv) -> None:
    """Under ``remote_deletions: restore`` a node removed in FLORA is reported for re-attach,
    and ``verify --repair`` attaches the asset again (a new node, no new upload); exit 0."""
    env.add(0, "back.png")
    assert env.scan().returncode == 0
    env.write_config(remote_deletions="restore")
    project = env.projects[0]
    node = env.sb.state()["nodes"][project][0]
    env.sb.remove_node(project, node["node_id"])
    code, report = _verify(env)
    assert code == 1
    missing = report["totals"]["missing_in_flora"]
    assert missing == 1
    reserves = _routes(env, "POST /assets")
    repaired = env.cli("verify", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repaired: 1" in repaired.stdout
    assert _routes(env, "POST /assets") == reserves
    nodes = env.sb.state()["nodes"][project]
    assert len(nodes) == 1
    assert nodes[0]["node_id"] != node["node_id"]


def test_a_folder_that_is_not_configured_is_a_usage_error(env: SyncEnv) -> None:
    """``--folder`` naming a path that is not a configured folder exits 2 naming --folder."""
    result = env.cli("verify", "--folder", str(env.root / "elsewhere"))
    assert result.returncode == 2
    assert "--folder" in result.stderr


def test_a_run_with_adopt_true_adopts_instead_of_uploading(env: SyncEnv) -> None:
    """``adopt: true``: after a lost state dir, a plain ``run --scan`` finds each file's bytes
    already on its project's canvas (name, size, downloaded bytes) and sends no POST /assets
    and no attach; a file whose name matches but whose bytes differ is uploaded as new."""
    for n in range(4):
        env.add(n % 2, f"a{n}.png", size=2500 + n)
    assert env.scan().returncode == 0
    shutil.rmtree(env.state_dir)
    changed = env.add(0, "a0.png", size=2500, seed=999)  # same name and size, other bytes
    env.write_config(adopt=True)
    reserves = _routes(env, "POST /assets")
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert _routes(env, "POST /assets") == reserves + 1  # only the changed file
    status = env.status()
    assert sum(f["synced"] for f in status["folders"]) == 4
    assert changed.exists()


def test_an_asset_gone_in_flora_is_uploaded_again_only_on_retry(env: SyncEnv) -> None:
    """An asset removed from FLORA: verify tombstones it as asset_gone; a scan sends nothing;
    ``retry PATH`` then a scan upload the content as a new asset and attach it, once."""
    path = env.add(0, "lost.png")
    assert env.scan().returncode == 0
    asset = env.sb.state()["assets"][0]
    env.sb.remove_asset(asset["asset_id"])
    code, report = _verify(env)
    assert code == 1
    missing = report["totals"]["missing_in_flora"]
    assert missing == 1
    reasons = [
        m["reason"] for m in report["folders"][0]["projects"][0]["items"]["missing_in_flora"]
    ]
    assert reasons == ["asset_gone"]
    reserves = _routes(env, "POST /assets")
    assert env.scan().returncode == 0
    assert _routes(env, "POST /assets") == reserves
    assert env.cli("retry", str(path)).returncode == 0
    result = env.scan()
    assert result.returncode == 0, result.stdout + result.stderr
    assert _routes(env, "POST /assets") == reserves + 1
    assert_exactly_once(env.sb.state(), env.expected())
    assert _verify(env)[0] == 0


def test_verify_reads_a_postgresql_journal(env: SyncEnv, postgres: PgCluster) -> None:
    """With the journal in PostgreSQL (a fleet host), verify finds the library in sync, then
    a node removed in FLORA, and records its tombstone there."""
    url = create_database(postgres)
    try:
        extra = {"FLORASYNC_DATABASE_URL": url}
        env.write_config(journal={"url_env": "FLORASYNC_DATABASE_URL"})
        env.add(0, "pg.png")
        assert env.scan(env=extra).returncode == 0
        assert env.cli("verify", env=extra).returncode == 0
        project = env.projects[0]
        env.sb.remove_node(project, env.sb.state()["nodes"][project][0]["node_id"])
        assert env.cli("verify", env=extra).returncode == 1
        again = env.cli("verify", "--json", env=extra)
        assert again.returncode == 0, again.stdout + again.stderr
        assert json.loads(again.stdout)["totals"]["removed_in_flora"] == 1
    finally:
        drop_database(postgres, url)
