"""Unit tests of reconcile: the journal's, FLORA's and the disk's views compared, without I/O."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

from florasync.flora.models import Asset, Node
from florasync.state.lifecycle import AssetState, LinkState
from florasync.sync import reconcile
from florasync.sync.reconcile import (
    Action,
    Adopt,
    Ambiguous,
    Category,
    DiskFile,
    DiskView,
    FloraView,
    JournalFile,
    JournalLink,
    JournalView,
    Mismatch,
    Missing,
    Options,
    RemoteDeletions,
    Unverifiable,
)

NOW = 1_800_000_000.0
ROOT = "/data/renders"
OTHER = "/data/archive"
A, B = "prj_a", "prj_b"
D1, D2, D3 = "11" * 32, "22" * 32, "33" * 32
RESTORE = Options(remote_deletions=RemoteDeletions.RESTORE)
DOC = Path(__file__).resolve().parent.parent / "docs" / "verify.md"


def _path(name: str, folder: str = ROOT) -> str:
    return f"{folder}/{name}"


def _link(digest=D1, project=A, state=LinkState.ATTACHED, asset_id="asset_1", **kw) -> JournalLink:
    kw.setdefault("node_id", "node_1" if state == LinkState.ATTACHED else None)
    kw.setdefault("asset_state", AssetState.READY)
    return JournalLink(digest, project, state, asset_id, **kw)


def _jfile(name="a.png", digest=D1, project=A, folder=ROOT) -> JournalFile:
    return JournalFile(folder, _path(name, folder), project, digest)


def _disk(name="a.png", digest=D1, project=A, size=10, folder=ROOT) -> DiskFile:
    return DiskFile(folder, _path(name, folder), project, size, digest)


def _asset(asset_id="asset_1", status="ready", name="a.png", size=10, **kw) -> Asset:
    kw.setdefault("url", f"https://ik.example/{asset_id}/{name}")
    return Asset(asset_id, status, name=name, size_bytes=size, **kw)


def _node(asset_id="asset_1", node_id="node_1") -> Node:
    return Node(node_id, type="image", asset_id=asset_id)


def _report(
    *,
    links=(),
    files=(),
    assets=(),
    nodes=None,
    disk=(),
    folders=None,
    options=None,
    downloaded=None,
) -> reconcile.Report:
    return reconcile.reconcile(
        JournalView(links, files),
        FloraView(assets, {A: []} if nodes is None else nodes),
        DiskView(disk, {ROOT: (A,)} if folders is None else folders),
        now=NOW,
        options=options or Options(),
        downloaded=downloaded,
    )


def _adoptions(
    *, links=(), files=(), assets=(), nodes=None, disk=(), **kw
) -> list[reconcile.Adoption]:
    views = (
        JournalView(links, files),
        FloraView(assets, {A: []} if nodes is None else nodes),
        DiskView(disk, {ROOT: (A,)}),
    )
    return list(reconcile.match_adoptions(*views, **kw))


def _found(report: reconcile.Report) -> dict[str, list[tuple[str | None, str | None]]]:
    """Each non-empty category of the totals: (path or asset id, reason) per item."""
    return {
        c.value: [(i.path or i.asset_id, i.reason) for i in items]
        for c, items in report.totals.items()
        if items
    }


# -- the categories -------------------------------------------------------------------------

IN_SYNC = {"in_sync": [(_path("a.png"), None)]}
CATEGORIES = [
    pytest.param(
        {"links": [_link()], "files": [_jfile()], "assets": [_asset()], "disk": [_disk()]},
        {A: [_node()]},
        IN_SYNC,
        id="in-sync",
    ),
    pytest.param(
        {"links": [_link()], "files": [_jfile()], "assets": [_asset()], "disk": [_disk()]},
        {A: [_node(node_id="node_copied")]},
        IN_SYNC,
        id="in-sync-under-another-node",
    ),
    pytest.param(
        {"links": [_link()], "files": [_jfile()], "assets": [_asset()], "disk": [_disk()]},
        {A: []},
        {"missing_in_flora": [(_path("a.png"), Missing.NODE_REMOVED)]},
        id="node-removed",
    ),
    pytest.param(
        {"links": [_link()], "files": [_jfile()], "assets": [], "disk": [_disk()]},
        {A: [_node()]},
        {"missing_in_flora": [(_path("a.png"), Missing.ASSET_GONE)]},
        id="asset-gone",
    ),
    pytest.param(
        {"links": [_link()], "files": [_jfile()], "assets": [_asset(status="failed")]},
        {A: [_node()]},
        {"missing_in_flora": [(_path("a.png"), Missing.ASSET_FAILED)]},
        id="asset-failed-file-gone-from-disk",
    ),
    pytest.param(
        {"links": [_link(state=reconcile.REMOVED_IN_FLORA)], "files": [_jfile()]},
        {A: []},
        {"removed_in_flora": [(_path("a.png"), Missing.ASSET_GONE)]},
        id="tombstone",
    ),
    pytest.param(
        {"assets": [_asset("asset_9", name="other.png")]},
        {A: [_node("asset_9", "node_9"), Node("node_text", type="text")]},
        {"unknown_to_journal": [("asset_9", "ready")]},
        id="unknown-to-journal",
    ),
    pytest.param(
        {"links": [_link(state=LinkState.PENDING, asset_id=None)], "disk": [_disk()]},
        {A: []},
        {"not_synced": [(_path("a.png"), "pending")]},
        id="not-synced-pending",
    ),
    pytest.param(
        {
            "links": [_link(state=LinkState.FAILED)],
            "files": [_jfile()],
            "disk": [_disk(digest=None)],
        },
        {A: []},
        {"not_synced": [(_path("a.png"), "failed")]},
        id="not-synced-failed-digest-from-journal",
    ),
    pytest.param(
        {"disk": [_disk(digest=None)]},
        {A: []},
        {"not_synced": [(_path("a.png"), reconcile.NOT_IN_JOURNAL)]},
        id="not-synced-unknown-file",
    ),
    pytest.param(
        {
            "links": [_link(state=LinkState.ATTACHED)],
            "files": [_jfile()],
            "disk": [_disk(digest=D2)],
        },
        {A: []},
        {
            "missing_in_flora": [("asset_1", Missing.ASSET_GONE)],
            "not_synced": [(_path("a.png"), reconcile.NOT_IN_JOURNAL)],
        },
        id="changed-file-is-new-content",
    ),
]


@pytest.mark.parametrize(("views", "nodes", "expected"), CATEGORIES)
def test_each_category(views, nodes, expected):
    """Each file or asset lands in the one category its three views call for, with its reason."""
    assert _found(_report(nodes=nodes, **views)) == expected


def test_projects_flora_was_not_asked_about_are_not_judged():
    """A link of a project whose nodes were not listed is neither in sync nor missing."""
    report = _report(links=[_link(project=B)], files=[_jfile(project=B)], nodes={A: []})
    assert _found(report) == {}
    assert report.clean


@pytest.mark.parametrize(
    ("links", "nodes", "clean"),
    [
        pytest.param([], [], True, id="nothing"),
        pytest.param([_link()], [_node()], True, id="in-sync"),
        pytest.param([_link(state=reconcile.REMOVED_IN_FLORA)], [], True, id="tombstone"),
        pytest.param([_link()], [], False, id="node-removed"),
    ],
)
def test_clean_means_nothing_differs(links, nodes, clean):
    """Exit 0 only when nothing differs; a tombstone is the policy at work, not a difference."""
    report = _report(links=links, files=[_jfile()], assets=[_asset()], nodes={A: nodes})
    assert report.clean is clean


@pytest.mark.parametrize(
    ("views", "category"),
    [
        pytest.param(
            {"links": [_link()], "assets": [_asset()]}, Category.MISSING_IN_FLORA, id="missing"
        ),
        pytest.param(
            {"assets": [_asset()], "nodes": {A: [_node()]}},
            Category.UNKNOWN_TO_JOURNAL,
            id="unknown",
        ),
        pytest.param(
            {
                "links": [_link(state=LinkState.PENDING, asset_state=AssetState.RESERVED)],
                "assets": [_asset(status="pending_upload")],
            },
            Category.ORPHANS,
            id="orphan",
        ),
        pytest.param({"disk": [_disk()]}, Category.NOT_SYNCED, id="not-synced"),
    ],
)
def test_each_difference_makes_the_report_unclean(views, category):
    """A missing, unknown, orphan or not-synced item alone turns the exit code to 1."""
    report = _report(**views)
    assert {c for c, items in report.totals.items() if items} == {category}
    assert not report.clean


# -- deletions ------------------------------------------------------------------------------

POLICY = [
    (LinkState.ATTACHED, Missing.NODE_REMOVED, "respect", Category.MISSING_IN_FLORA, "tombstone"),
    (LinkState.ATTACHED, Missing.NODE_REMOVED, "restore", Category.MISSING_IN_FLORA, "reattach"),
    (LinkState.ATTACHED, Missing.ASSET_GONE, "respect", Category.MISSING_IN_FLORA, "tombstone"),
    (LinkState.ATTACHED, Missing.ASSET_GONE, "restore", Category.MISSING_IN_FLORA, "reupload"),
    (LinkState.ATTACHED, Missing.ASSET_FAILED, "restore", Category.MISSING_IN_FLORA, "reupload"),
    (reconcile.REMOVED_IN_FLORA, Missing.NODE_REMOVED, "respect", Category.REMOVED_IN_FLORA, None),
    (
        reconcile.REMOVED_IN_FLORA,
        Missing.NODE_REMOVED,
        "restore",
        Category.MISSING_IN_FLORA,
        "reattach",
    ),
    (LinkState.ATTACHED, None, "respect", Category.IN_SYNC, None),
    (reconcile.REMOVED_IN_FLORA, None, "respect", Category.IN_SYNC, "forget_tombstone"),
]


@pytest.mark.parametrize(("state", "missing", "policy", "category", "action"), POLICY)
def test_deletion_policy(state, missing, policy, category, action):
    """Removed in FLORA: a tombstone under respect, restored under restore; a returned node wins."""
    link = _link(state=state)
    got_category, reason, decision = reconcile.judge(
        link, (missing, None if missing else "node_1"), RemoteDeletions(policy)
    )
    assert (got_category, reason) == (category, missing)
    assert (decision.action if decision else None) == action


@pytest.mark.parametrize(
    ("options", "category", "action"),
    [
        pytest.param(Options(), "missing_in_flora", Action.TOMBSTONE, id="respect"),
        pytest.param(RESTORE, "missing_in_flora", Action.REATTACH, id="restore"),
    ],
)
def test_node_removed_under_each_policy(options, category, action):
    """A node removed in FLORA is reported with the decision the policy takes for it."""
    report = _report(
        links=[_link()], files=[_jfile()], assets=[_asset()], disk=[_disk()], options=options
    )
    [item] = report.totals[Category(category)]
    assert (item.path, item.reason, item.action, item.node_id) == (
        _path("a.png"),
        Missing.NODE_REMOVED,
        action,
        "node_1",
    )
    assert report.decisions == (reconcile.Decision(D1, A, "asset_1", "node_1", action),)
    assert not report.clean


def test_tombstone_forgotten_when_the_node_is_back():
    """A tombstoned link whose asset is back on the canvas is in sync, under the node shown."""
    link = _link(state=reconcile.REMOVED_IN_FLORA, node_id="node_1")
    report = _report(
        links=[link], files=[_jfile()], assets=[_asset()], nodes={A: [_node(node_id="node_new")]}
    )
    assert _found(report) == IN_SYNC
    assert report.decisions == (
        reconcile.Decision(D1, A, "asset_1", "node_new", Action.FORGET_TOMBSTONE),
    )


# -- orphans --------------------------------------------------------------------------------

ORPHANS = [
    pytest.param(AssetState.RESERVED, NOW - 90.0, None, "resumable", 90.0, id="reserved"),
    pytest.param(AssetState.UPLOADING, NOW - 7200.5, None, "resumable", 7200.5, id="uploading"),
    pytest.param(AssetState.FAILED, NOW - 30.0, None, "abandoned", 30.0, id="failed-locally"),
    pytest.param(AssetState.RESERVED, None, NOW - 60.0, "resumable", 60.0, id="age-from-flora"),
    pytest.param(AssetState.RESERVED, None, None, "resumable", None, id="age-unknown"),
]


@pytest.mark.parametrize(("asset_state", "reserved_at", "created_at", "reason", "age"), ORPHANS)
def test_orphans_with_their_age(asset_state, reserved_at, created_at, reason, age):
    """florasync's own pending_upload reservations are listed with their age in seconds."""
    link = _link(
        state=LinkState.PENDING, asset_state=asset_state, reserved_at=reserved_at, node_id=None
    )
    asset = _asset(status="pending_upload", url=None, created_at=created_at)
    report = _report(links=[link], files=[_jfile()], assets=[asset], disk=[_disk()])
    [orphan] = report.totals[Category.ORPHANS]
    assert (orphan.path, orphan.asset_id, orphan.reason, orphan.age_seconds) == (
        _path("a.png"),
        "asset_1",
        reason,
        age,
    )
    assert [i.reason for i in report.totals[Category.NOT_SYNCED]] == ["pending"]


@pytest.mark.parametrize(
    ("asset_state", "status"),
    [
        pytest.param(AssetState.READY, "pending_upload", id="journal-ready"),
        pytest.param(AssetState.UPLOADED, "ready", id="flora-ready"),
        pytest.param(AssetState.PROCESSING, "failed", id="flora-failed"),
    ],
)
def test_no_orphan_unless_flora_still_waits_for_bytes(asset_state, status):
    """Only an asset FLORA shows pending_upload, and the journal never saw ready, is an orphan."""
    link = _link(state=LinkState.PENDING, asset_state=asset_state, reserved_at=NOW - 5)
    report = _report(links=[link], files=[_jfile()], assets=[_asset(status=status)])
    assert report.totals[Category.ORPHANS] == ()


# -- a file in two projects, and folders ----------------------------------------------------


def test_file_in_two_projects_is_judged_per_project():
    """The same content mapped to two projects: in sync in one, missing or pending in the other."""
    folders = {ROOT: (A,), OTHER: (B,)}
    files = [_jfile(), _jfile(project=B, folder=OTHER), _jfile("c.png", D3, B, OTHER)]
    disk = [_disk(), _disk(project=B, folder=OTHER), _disk("c.png", D3, B, folder=OTHER)]
    links = [_link(), _link(project=B, node_id="node_b"), _link(D3, B, LinkState.PENDING)]
    report = _report(
        links=links,
        files=files,
        disk=disk,
        assets=[_asset()],
        nodes={A: [_node()], B: []},
        folders=folders,
    )
    rows = {
        (f.folder, p.project_id): {c.value: n for c, n in _counts(p).items() if n}
        for f in report.folders
        for p in f.projects
    }
    assert rows == {
        (ROOT, A): {"in_sync": 1},
        (OTHER, B): {"missing_in_flora": 1, "not_synced": 1},
    }
    assert report.decisions == (reconcile.Decision(D1, B, "asset_1", "node_b", Action.TOMBSTONE),)


def test_records_without_files_go_to_the_folder_of_their_project():
    """A record whose files are gone goes under its project's folder, or the folder None."""
    folders = {ROOT: (A,)}
    links = [_link(), _link(D2, B, asset_id="asset_2")]
    assets = [_asset(), _asset("asset_2", status="pending_upload")]
    report = _report(links=links, assets=assets, nodes={A: [_node()], B: []}, folders=folders)
    placed = {
        (f.folder, p.project_id, c.value)
        for f in report.folders
        for p in f.projects
        for c, items in p.items.items()
        if items
    }
    assert placed == {(ROOT, A, "in_sync"), (None, B, "missing_in_flora")}
    assert [f.folder for f in report.folders] == [ROOT, None]


def test_folders_no_longer_configured_keep_their_rows_before_the_unmapped_one():
    """Rows: configured folders in config order, then folders only the journal has, then None."""
    links = [_link(D2, B, asset_id="asset_2"), _link(D3, A, asset_id="asset_3")]
    report = _report(
        links=links,
        files=[_jfile("c.png", D3, A, "/data/old")],
        nodes={A: [], B: []},
        folders={OTHER: (), ROOT: (A,)},
    )
    assert [f.folder for f in report.folders] == [OTHER, ROOT, "/data/old", None]


def _counts(project: reconcile.ProjectReport) -> dict[Category, int]:
    return {c: len(items) for c, items in project.items.items()}


# -- adoption -------------------------------------------------------------------------------

NODES_1 = {A: [_node("asset_9", "node_9")]}
ADOPTION = [
    pytest.param({}, None, [Adopt(ROOT, _path("a.png"), A, D1, "asset_9", "node_9")], id="check"),
    pytest.param(
        {},
        {"asset_9": D1},
        [Adopt(ROOT, _path("a.png"), A, D1, "asset_9", "node_9", needs_bytes_check=False)],
        id="adopt-equal-bytes",
    ),
    pytest.param(
        {}, {"asset_9": D2}, [Mismatch(ROOT, _path("a.png"), A, "asset_9")], id="mismatch"
    ),
    pytest.param(
        {},
        {"asset_9": None},
        [Unverifiable(ROOT, _path("a.png"), A, "asset_9", "download_failed")],
        id="download-failed",
    ),
    pytest.param(
        {"url": None},
        {"asset_9": D1},
        [Unverifiable(ROOT, _path("a.png"), A, "asset_9", "no_url")],
        id="no-url",
    ),
    pytest.param({"name": "b.png"}, None, [], id="other-name"),
    pytest.param({"size": 11}, None, [], id="other-size"),
    pytest.param({"status": "pending_upload"}, None, [], id="not-ready"),
    pytest.param({"status": "failed"}, None, [], id="failed"),
]


@pytest.mark.parametrize(("asset", "downloaded", "expected"), ADOPTION)
def test_adoption_of_a_single_candidate(asset, downloaded, expected):
    """A file the journal does not know is adopted only when name, size and bytes all match."""
    got = _adoptions(
        assets=[_asset("asset_9", **asset)], nodes=NODES_1, disk=[_disk()], downloaded=downloaded
    )
    assert got == expected


def test_adoption_names_compare_composed():
    """A decomposed (macOS) file name matches the composed name FLORA holds."""
    name = "été.png"
    disk = [_disk(unicodedata.normalize("NFD", name))]
    got = _adoptions(assets=[_asset("asset_9", name=name)], nodes=NODES_1, disk=disk)
    assert [type(a) for a in got] == [Adopt]


def test_too_large_candidate_is_unverifiable_never_adopted():
    """A candidate above the byte-check limit is reported unverifiable, even if bytes are given."""
    got = _adoptions(
        assets=[_asset("asset_9")],
        nodes=NODES_1,
        disk=[_disk()],
        options=Options(adopt_max_bytes=9),
        downloaded={"asset_9": D1},
    )
    assert got == [Unverifiable(ROOT, _path("a.png"), A, "asset_9", "too_large")]


def test_two_same_name_same_size_assets_are_ambiguous():
    """Two same-name, same-size assets with different bytes: reported, nothing adopted."""
    assets = [_asset("asset_8"), _asset("asset_9")]
    nodes = {A: [_node("asset_8", "node_8"), _node("asset_9", "node_9"), _node("asset_9", "n")]}
    downloaded = {"asset_8": D1, "asset_9": D2}
    got = _adoptions(assets=assets, nodes=nodes, disk=[_disk()], downloaded=downloaded)
    assert got == [Ambiguous(ROOT, _path("a.png"), A, ("asset_8", "asset_9"))]
    report = _report(assets=assets, nodes=nodes, disk=[_disk()], downloaded=downloaded)
    assert report.adoptions == tuple(got)
    assert [i.asset_id for i in report.totals[Category.UNKNOWN_TO_JOURNAL]] == [
        "asset_8",
        "asset_9",
        "asset_9",
    ]


@pytest.mark.parametrize(
    "journal",
    [
        pytest.param({"links": [_link(state=LinkState.PENDING, asset_id=None)]}, id="file-known"),
        pytest.param({"links": [_link(D2, asset_id="asset_9")]}, id="asset-known-as-other-content"),
    ],
)
def test_no_adoption_of_what_the_journal_knows(journal):
    """A file with a link, or an asset the journal holds for other content, is never adopted."""
    got = _adoptions(assets=[_asset("asset_9")], nodes=NODES_1, disk=[_disk()], **journal)
    assert got == []


def test_adoption_waits_for_the_file_digest():
    """Downloaded bytes are compared only with a hashed file: an unhashed one still needs it."""
    got = _adoptions(
        assets=[_asset("asset_9")],
        nodes=NODES_1,
        disk=[_disk(digest=None)],
        downloaded={"asset_9": D1},
    )
    assert got == [Adopt(ROOT, _path("a.png"), A, None, "asset_9", "node_9")]


def test_candidates_only_on_the_file_project_canvas():
    """An asset of the same name and size on another project's canvas is no candidate."""
    nodes = {A: [], B: [_node("asset_9", "node_9")]}
    assert _adoptions(assets=[_asset("asset_9")], nodes=nodes, disk=[_disk()]) == []


# -- the JSON -------------------------------------------------------------------------------


def _example_report() -> reconcile.Report:
    folders = {ROOT: (A,), OTHER: (B,)}
    links = [
        _link(),
        _link(D2, B, asset_id="asset_2", node_id="node_2"),
        _link(D3, B, LinkState.PENDING, "asset_3", asset_state=AssetState.RESERVED),
    ]
    files = [_jfile(), _jfile("b.png", D2, B, OTHER), _jfile("c.png", D3, B, OTHER)]
    assets = [
        _asset(),
        _asset("asset_2", name="b.png"),
        _asset("asset_3", "pending_upload", "c.png", created_at=NOW - 600),
        _asset("asset_9", name="d.png", size=4),
    ]
    return _report(
        links=links,
        files=files,
        assets=assets,
        nodes={A: [_node()], B: [_node("asset_9", "node_9")]},
        disk=[_disk(), _disk("c.png", D3, B, folder=OTHER), _disk("d.png", None, B, 4, OTHER)],
        folders=folders,
    )


def test_json_totals_and_rows():
    """The JSON has a schema version, totals, a row per folder and project, and adoptions."""
    doc = json.loads(json.dumps(_example_report().to_json()))
    assert (doc["schema"], doc["clean"], doc["remote_deletions"]) == (1, False, "respect")
    assert doc["checked_at"] == "2027-01-15T08:00:00+00:00"
    assert doc["totals"] == {
        "in_sync": 1,
        "missing_in_flora": 1,
        "unknown_to_journal": 1,
        "orphans": 1,
        "not_synced": 2,
        "removed_in_flora": 0,
    }
    other = doc["folders"][1]
    assert (other["path"], other["counts"]["not_synced"]) == (OTHER, 2)
    [project] = other["projects"]
    assert project["items"]["orphans"][0]["age_seconds"] == 600.0
    assert project["items"]["missing_in_flora"][0]["action"] == "tombstone"
    assert doc["adoptions"] == [
        {
            "decision": "needs_check",
            "asset_ids": ["asset_9"],
            "folder": OTHER,
            "path": _path("d.png", OTHER),
            "project_id": B,
            "digest": None,
            "node_id": "node_9",
            "reason": None,
        }
    ]


def _keys(value: object, found: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            found.add(key)
            _keys(inner, found)
    elif isinstance(value, list):
        for inner in value:
            _keys(inner, found)
    return found


def test_every_json_key_is_documented():
    """Each key verify --json prints is named in docs/verify.md (the schema's promise)."""
    documented = set(re.findall(r"`([a-z_]+)(?:\[\])?`", DOC.read_text(encoding="utf-8")))
    keys = _keys(_example_report().to_json(), set())
    assert keys - documented == set()


def test_every_decision_value_is_documented():
    """Each category, reason, action and adoption verdict appears in docs/verify.md."""
    documented = set(re.findall(r"`([a-z_]+)(?:\[\])?`", DOC.read_text(encoding="utf-8")))
    values = {*Category, *Missing, *Action, *RemoteDeletions, reconcile.NOT_IN_JOURNAL}
    values |= {"resumable", "abandoned", "adopt", "needs_check", "ambiguous", "unverifiable"}
    values |= {"mismatch", "no_url", "too_large", "download_failed"}
    assert {str(v) for v in values} - documented == set()
