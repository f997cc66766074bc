"""The sandbox's record of upload-body arrivals, for measuring a client's bandwidth (issue 16)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from florasync.flora import api
from florasync.flora.secret import Secret
from florasync.sandbox import Sandbox
from florasync.sandbox.arrivals import PIECE_BYTES

from .flora_steps import upload_ready
from .helpers import write_file


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[api.FloraClient]:
    with api.FloraClient(sandbox.base_url, Secret(sandbox.api_key)) as c:
        yield c


def test_nothing_is_recorded_unless_asked(
    sandbox: Sandbox, client: api.FloraClient, tmp_path: Path
) -> None:
    """By default uploads leave no record."""
    path = tmp_path / "a.png"
    write_file(path, 100_000)
    upload_ready(client, sandbox, path)
    assert sandbox.arrivals() == []


def test_each_piece_of_each_body_is_recorded(
    sandbox: Sandbox, client: api.FloraClient, tmp_path: Path
) -> None:
    """Recording, every body arrives in noted pieces of at most 64 KiB, in time order, under
    its upload's request-log seq; the file is stored as ever."""
    sandbox.record_arrivals()
    sizes = {"a.png": 300_000, "b.png": 5_000_000}
    for name, size in sizes.items():
        write_file(tmp_path / name, size, seed=size)
        upload_ready(client, sandbox, tmp_path / name)
    arrivals = sandbox.arrivals()
    assert max(a.n for a in arrivals) <= PIECE_BYTES
    assert [a.t for a in arrivals] == sorted(a.t for a in arrivals)
    uploads = [r["seq"] for r in sandbox.state()["requests"] if r["route"] == "POST /upload"]
    assert sorted({a.seq for a in arrivals}) == uploads
    for seq, size in zip(uploads, sizes.values(), strict=True):
        body = sum(a.n for a in arrivals if a.seq == seq)
        assert size < body < size + 4096  # the file and the form's few fields
    assert [a["size_bytes"] for a in sandbox.state()["assets"]] == list(sizes.values())


def test_the_record_over_http(sandbox: Sandbox, client: api.FloraClient, tmp_path: Path) -> None:
    """POST /_sandbox/arrivals {"record": true} starts a fresh record; GET returns its pieces."""
    url = f"{sandbox.origin}/_sandbox/arrivals"
    answer = requests.post(url, json={"record": True}, timeout=5)
    assert answer.json() == {"recording": True, "arrivals": []}
    write_file(tmp_path / "a.png", 10_000)
    upload_ready(client, sandbox, tmp_path / "a.png")
    pieces = requests.get(url, timeout=5).json()["arrivals"]
    assert sum(n for _, _, n in pieces) > 10_000
    assert requests.post(url, json={"record": "yes"}, timeout=5).status_code == 400
    requests.post(url, json={"record": False}, timeout=5)
    assert requests.get(url, timeout=5).json()["recording"] is False
