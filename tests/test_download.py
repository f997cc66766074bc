"""Downloading an asset's bytes from its url against the sandbox: the digest florasync uses,
the byte cap, retries on the file route, and no API key sent there."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from florasync import errors
from florasync.flora import api, download, retrying
from florasync.flora.secret import Secret
from florasync.local import identity
from florasync.sandbox import Sandbox

from .flora_steps import upload_ready
from .helpers import write_file

FAST = retrying.RetryPolicy(backoff_base_seconds=0.01, max_total_seconds=30.0)
PNG = "image/png"
MB = 1 << 20


@pytest.fixture
def gate() -> retrying.RateGate:
    """The rate gate the API client and the downloader share, as a run's workers do."""
    return retrying.RateGate()


@pytest.fixture
def client(sandbox: Sandbox, gate: retrying.RateGate) -> Iterator[api.FloraClient]:
    with api.FloraClient(sandbox.base_url, Secret(sandbox.api_key), gate=gate) as c:
        yield c


@pytest.fixture
def downloader(gate: retrying.RateGate) -> Iterator[download.Downloader]:
    with download.Downloader(policy=FAST, gate=gate) as d:
        yield d


def _upload(client: api.FloraClient, sb: Sandbox, path: Path) -> str:
    """Reserve, upload and complete ``path`` as florasync does; the ready asset's url."""
    ready = upload_ready(client, sb, path)
    assert ready.url is not None
    return ready.url


def _file_requests(sb: Sandbox) -> list[dict[str, Any]]:
    return [r for r in sb.state()["requests"] if r["route"] == "GET /files"]


def _added(client: api.FloraClient, sb: Sandbox, tmp_path: Path, size: int) -> tuple[str, Path]:
    """An asset made elsewhere from a file's bytes: its url (as the API lists it) and the file."""
    path = tmp_path / "elsewhere.png"
    data = write_file(path, size, seed=7)
    url = client.get_asset(sb.add_asset(path.name, data)).url
    assert url is not None
    return url, path


def test_digest_of_an_uploaded_asset_is_the_file_digest(sandbox, client, downloader, tmp_path):
    """The downloaded digest of an uploaded asset equals the file's content id (blake3)."""
    path = tmp_path / "shot.png"
    write_file(path, 3 * MB + 17, seed=1)
    url = _upload(client, sandbox, path)
    got = downloader.fetch(url, max_bytes=10 * MB)
    content, _ = identity.hash_file(path)
    assert got == download.Download(content.digest, content.size)


def test_digest_of_an_asset_made_elsewhere_is_the_file_digest(
    sandbox, client, downloader, tmp_path
):
    """An asset added by another tool hashes to the digest of the same bytes on disk."""
    url, path = _added(client, sandbox, tmp_path, 200_000)
    got = downloader.fetch(url, max_bytes=200_000)
    assert got is not None
    assert got.digest == identity.hash_file(path)[0].digest


def test_a_cap_smaller_than_the_asset_is_refused(sandbox, client, downloader, tmp_path):
    """A file larger than max_bytes gives None after one request, not retried, not hashed."""
    url, _ = _added(client, sandbox, tmp_path, 200_000)
    assert downloader.fetch(url, max_bytes=199_999) is None
    assert len(_file_requests(sandbox)) == 1


class _EndlessHandler(http.server.BaseHTTPRequestHandler):
    """A file server whose answer has no length and never ends (a misbehaving CDN)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", PNG)
        self.send_header("Connection", "close")
        self.end_headers()
        block = b"\0" * 65536
        try:
            for _ in range(1 << 14):  # 1 GiB at most, should the client never stop
                self.wfile.write(block)
        except OSError:
            return  # the client closed: it stopped at its cap

    def log_message(self, *args: object) -> None:
        pass


def test_an_answer_without_a_length_is_read_no_further_than_the_cap(downloader):
    """A body without Content-Length that never ends is cut off at the cap: None, promptly."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessHandler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/files/x.png"
        assert downloader.fetch(url, max_bytes=2 * MB) is None
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    "case",
    [
        ({"status": 500, "times": 2}, [500, 500, 200]),
        ({"drop": "before"}, [None, 200]),
        ({"drop": "after"}, [None, 200]),  # headers and half the bytes, then the close
    ],
    ids=["500", "drop", "cut"],
)
def test_a_failed_file_request_is_retried(sandbox, client, downloader, tmp_path, case):
    """A 5xx, a dropped connection or a body cut halfway is retried; the digest is the file's."""
    fault, logged = case
    url, path = _added(client, sandbox, tmp_path, 300_000)
    sandbox.faults.fail_next("GET /files", **fault)
    got = downloader.fetch(url, max_bytes=MB)
    assert got is not None
    assert got.digest == identity.hash_file(path)[0].digest
    assert [r["status"] for r in _file_requests(sandbox)] == logged


def test_a_429_on_the_file_waits_out_its_window(sandbox, client, downloader, gate, tmp_path):
    """A 429 with Retry-After 1 closes the shared gate; the retry comes after the window."""
    url, path = _added(client, sandbox, tmp_path, 1000)
    sandbox.faults.fail_next("GET /files", status=429, retry_after=1)
    got = downloader.fetch(url, max_bytes=MB)
    assert got is not None
    assert got.digest == identity.hash_file(path)[0].digest
    first, second = _file_requests(sandbox)
    assert (first["status"], second["status"]) == (429, 200)
    assert second["t"] - first["t"] >= 1.0
    assert gate.closures == 1
    assert sandbox.state()["violations"] == []


def test_the_api_key_never_reaches_the_file_url(sandbox, client, downloader, tmp_path):
    """Downloads carry no Authorization; the sandbox would log and flag one that did."""
    url, _ = _added(client, sandbox, tmp_path, 1000)
    assert downloader.fetch(url, max_bytes=MB) is not None
    state = sandbox.state()
    assert [r["authorization"] for r in _file_requests(sandbox)] == [False]
    assert state["violations"] == []
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    requests.get(url, headers=headers, timeout=10.0)  # what a leaking client would do
    assert [r["authorization"] for r in _file_requests(sandbox)] == [False, True]
    assert [v["kind"] for v in sandbox.state()["violations"]] == ["flora_header_to_files"]


def test_a_removed_or_failed_asset_is_not_found(sandbox, client, downloader, tmp_path):
    """The url of a removed or failed asset raises NotFoundError at once, without retries."""
    removed = client.get_asset(sandbox.add_asset("gone.png", b"gone")).url
    failed_id = sandbox.add_asset("failed.png", b"failed")
    failed = client.get_asset(failed_id).url
    assert removed is not None
    assert failed is not None
    sandbox.remove_asset(removed.split("/")[-2])
    sandbox.fail_asset(failed_id)
    for url in (removed, failed):
        with pytest.raises(errors.NotFoundError, match="HTTP 404"):
            downloader.fetch(url, max_bytes=MB)
    assert [r["status"] for r in _file_requests(sandbox)] == [404, 404]


def test_plain_http_to_another_host_is_refused(downloader):
    """An http:// url off loopback is refused before anything is sent."""
    with pytest.raises(errors.InsecureTransportError, match="plain http"):
        downloader.fetch("http://cdn.example.com/files/a.png", max_bytes=MB)
