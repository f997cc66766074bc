"""The FLORA client over real HTTP against the sandbox: every endpoint, errors, retries, uploads."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from florasync import errors
from florasync.flora import api, retrying, transport, upload
from florasync.flora.models import UploadInstructions
from florasync.flora.secret import Secret
from florasync.sandbox import Faults, Sandbox

from .helpers import SHORT_TIMEOUT, write_file


def _client(sb: Sandbox, **kw: object) -> api.FloraClient:
    return api.FloraClient(sb.base_url, Secret(sb.api_key), **kw)  # type: ignore[arg-type]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _upload_one(
    client: api.FloraClient, target: upload.UploadTarget, sb: Sandbox, path: Path, key: str
) -> str:
    asset = client.create_asset(
        sb.workspace_id, file_name=path.name, content_type="image/png", idempotency_key=key
    )
    assert asset.upload is not None
    with path.open("rb") as stream:
        target.upload(asset.upload, stream, file_name=path.name, content_type="image/png")
    done = client.complete_asset(asset.asset_id)
    assert done.is_ready
    return asset.asset_id


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[api.FloraClient]:
    with _client(sandbox) as c:
        yield c


@pytest.fixture
def target() -> Iterator[upload.UploadTarget]:
    t = upload.UploadTarget()
    yield t
    t.close()


def test_workspaces_and_projects(sandbox: Sandbox, client: api.FloraClient) -> None:
    """The client lists, creates and reads workspaces and projects."""
    assert [w.workspace_id for w in client.list_workspaces()] == [sandbox.workspace_id]
    ids = {p.project_id for p in client.list_projects(sandbox.workspace_id)}
    assert ids == set(sandbox.project_ids)
    created = client.create_project(sandbox.workspace_id, "Autumn", idempotency_key="fs1-p-1")
    assert created.project_id.startswith("prj_")
    got = client.get_project(created.project_id)
    assert (got.name, got.workspace_id) == ("Autumn", sandbox.workspace_id)


def test_pagination_follows_every_page(sandbox: Sandbox, client: api.FloraClient) -> None:
    """Listing 230 projects walks three pages of 100 and returns each exactly once."""
    for n in range(228):
        sandbox.add_project(f"p{n}")
    projects = list(client.list_projects(sandbox.workspace_id))
    assert len(projects) == 230
    assert len({p.project_id for p in projects}) == 230
    pages = [r for r in sandbox.state()["requests"] if r["route"] == "GET /projects"]
    assert len(pages) == 3


@pytest.mark.parametrize("spelling", ["snake", "camel", "both"])
def test_full_upload_flow(
    sandbox: Sandbox,
    client: api.FloraClient,
    target: upload.UploadTarget,
    tmp_path: Path,
    spelling: str,
) -> None:
    """Reserve, upload, complete, attach: the stored bytes equal the file, in every spelling."""
    sandbox.faults.update(upload_spelling=spelling)
    f = tmp_path / "shot.png"
    write_file(f, 300_000, seed=1)
    asset_id = _upload_one(client, target, sandbox, f, key="fs1-r-1")
    stored = sandbox.blob_path(asset_id)
    assert stored is not None
    assert _sha256(stored) == _sha256(f)
    attachment = client.attach(sandbox.project_ids[0], asset_id, idempotency_key="fs1-a-1")
    assert attachment.asset_id == asset_id
    nodes = list(client.list_nodes(sandbox.project_ids[0]))
    assert [n.asset_id for n in nodes] == [asset_id]
    assert client.get_asset(asset_id).is_ready
    listed = list(client.list_assets(workspace_id=sandbox.workspace_id, query="shot"))
    assert [a.asset_id for a in listed] == [asset_id]


def test_idempotency_key_header_and_no_flora_headers_upstream(
    sandbox: Sandbox, client: api.FloraClient, target: upload.UploadTarget, tmp_path: Path
) -> None:
    """POST /assets and attach carry Idempotency-Key; the upload target never sees FLORA headers."""
    f = tmp_path / "a.png"
    write_file(f, 1000)
    asset_id = _upload_one(client, target, sandbox, f, key="fs1-r-hdr")
    client.attach(sandbox.project_ids[0], asset_id, idempotency_key="fs1-a-hdr")
    state = sandbox.state()
    by_route = {r["route"]: r for r in state["requests"]}
    assert by_route["POST /assets"]["idempotency_key"] == "fs1-r-hdr"
    assert by_route["POST /projects/{id}/assets/{id}/attach"]["idempotency_key"] == "fs1-a-hdr"
    assert by_route["POST /upload"]["authorization"] is False
    assert by_route["POST /assets"]["authorization"] is True
    assert not [v for v in state["violations"] if v["kind"] == "flora_header_to_upload"]


def test_expired_instructions_are_rejected_then_renewed(
    sandbox: Sandbox, client: api.FloraClient, target: upload.UploadTarget, tmp_path: Path
) -> None:
    """An upload-target 4xx is UploadRejectedError; retry gives fresh fields for the same asset."""
    sandbox.faults.update(expire_next_uploads=1)
    f = tmp_path / "late.png"
    write_file(f, 2000)
    asset = client.create_asset(
        sandbox.workspace_id, file_name=f.name, content_type="image/png", idempotency_key="fs1-x"
    )
    assert asset.upload is not None
    with pytest.raises(errors.UploadRejectedError) as exc, f.open("rb") as stream:
        target.upload(asset.upload, stream, file_name=f.name, content_type="image/png")
    assert exc.value.status == 400
    renewed = client.retry_asset(asset.asset_id)
    assert renewed.asset_id == asset.asset_id
    assert renewed.upload is not None
    assert renewed.upload.fields != asset.upload.fields
    with f.open("rb") as stream:
        target.upload(renewed.upload, stream, file_name=f.name, content_type="image/png")
    assert client.complete_asset(asset.asset_id).is_ready
    assert len(sandbox.state()["assets"]) == 1


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "input_validation_error", errors.InvalidRequestError),
        (401, "invalid_api_key", errors.CredentialsError),
        (402, "insufficient_credits", errors.PaymentRequiredError),
        (403, "forbidden", errors.ForbiddenError),
        (404, "not_found", errors.NotFoundError),
        (409, "idempotency_duplicate", errors.IdempotencyDuplicateError),
        (409, "conflict", errors.ConflictError),
        (422, "idempotency_conflict", errors.IdempotencyConflictError),
    ],
)
def test_error_tree(
    sandbox: Sandbox, client: api.FloraClient, status: int, code: str, cls: type
) -> None:
    """Each documented error status and code arrives as its own exception type, not retried."""
    sandbox.faults.fail_next("GET /workspaces", status=status, code=code, times=5)
    with pytest.raises(errors.ApiError) as exc:
        client.list_workspaces()
    assert type(exc.value) is cls
    assert (exc.value.status, exc.value.code) == (status, code)
    assert exc.value.request_id
    assert exc.value.request_id.startswith("req_")
    attempts = [r for r in sandbox.state()["requests"] if r["route"] == "GET /workspaces"]
    assert len(attempts) == 1


def test_revoked_key_is_a_credentials_error_without_the_key(sandbox: Sandbox) -> None:
    """401 from a revoked key never shows the key, in the message or the client's repr."""
    sandbox.faults.update(revoked=True)
    with _client(sandbox) as c:
        with pytest.raises(errors.CredentialsError) as exc:
            c.list_workspaces()
        assert sandbox.api_key not in str(exc.value)
        assert sandbox.api_key not in repr(c)
    assert exc.value.exit_code == 3


def test_5xx_and_dropped_connections_are_retried(sandbox: Sandbox, client: api.FloraClient) -> None:
    """GETs survive 5xx and dropped connections; the caller sees only the answer."""
    sandbox.faults.fail_next("GET /workspaces", status=503, times=2)
    sandbox.faults.fail_next("GET /projects", drop="before", times=2)
    assert client.list_workspaces()
    assert list(client.list_projects(sandbox.workspace_id))


def test_random_faults_do_not_leak_to_the_caller(sandbox: Sandbox) -> None:
    """With 30 % 5xx and 10 % drops, 40 reads all succeed."""
    sandbox.faults.update(error_rate=0.3, drop_before_rate=0.1)
    policy = retrying.RetryPolicy(max_attempts=14, backoff_base_seconds=0.005)
    with _client(sandbox, policy=policy) as c:
        for _ in range(40):
            assert c.get_project(sandbox.project_ids[0]).project_id == sandbox.project_ids[0]


def test_post_without_key_is_not_repeated(sandbox: Sandbox, client: api.FloraClient) -> None:
    """A POST that is not safe to repeat (no Idempotency-Key) fails instead of being re-sent."""
    sandbox.faults.fail_next("POST /projects", status=500)
    with pytest.raises(errors.ServerError):
        client.create_project(sandbox.workspace_id, "Once")
    sent = [r for r in sandbox.state()["requests"] if r["route"] == "POST /projects"]
    assert len(sent) == 1


@pytest.mark.parametrize("mode", ["duplicate", "replay"])
def test_lost_answer_to_a_reservation(sandbox: Sandbox, client: api.FloraClient, mode: str) -> None:
    """POST /assets whose answer is lost is re-sent with its key: 409 duplicate, or a replay."""
    sandbox.faults.update(idempotency=mode)
    sandbox.faults.fail_next("POST /assets", drop="after")
    kwargs = {"file_name": "x.png", "content_type": "image/png", "idempotency_key": "fs1-r-lost"}
    if mode == "duplicate":
        with pytest.raises(errors.IdempotencyDuplicateError):
            client.create_asset(sandbox.workspace_id, **kwargs)
    else:
        asset = client.create_asset(sandbox.workspace_id, **kwargs)
        assert asset.upload is not None
    assert len(sandbox.state()["assets"]) == 1


def test_shared_gate_keeps_the_pool_out_of_retry_after_windows(sandbox: Sandbox) -> None:
    """Eight threads share one client under a tight rate limit: no request inside a window."""
    sandbox.faults.update(rate_limit_rps=20, rate_limit_burst=4)
    gate = retrying.RateGate()
    results: list[str] = []

    def worker(c: api.FloraClient) -> None:
        for _ in range(6):
            results.append(c.get_project(sandbox.project_ids[0]).project_id)

    with _client(sandbox, gate=gate) as c:
        threads = [threading.Thread(target=worker, args=(c,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    state = sandbox.state()
    assert len(results) == 48
    assert any(r["status"] == 429 for r in state["requests"]), "the limit should have been hit"
    assert gate.closures > 0
    assert [v for v in state["violations"] if v["kind"] == "rate_window"] == []


def test_429_without_retry_after_still_succeeds(sandbox: Sandbox) -> None:
    """A 429 without Retry-After falls back to a default wait, then succeeds."""
    sandbox.faults.update(retry_after_header=False)
    sandbox.faults.fail_next("GET /workspaces", status=429)
    policy = retrying.RetryPolicy(retry_after_default_seconds=0.2)
    with _client(sandbox, policy=policy) as c:
        assert c.list_workspaces()


def test_timeouts_apply_to_every_call(sandbox: Sandbox) -> None:
    """A server slower than the read timeout gives a NetworkError, not a hang."""
    sandbox.faults.update(latency_seconds=1.0)
    policy = retrying.RetryPolicy(max_attempts=2, backoff_base_seconds=0.01)
    timeouts = transport.Timeouts(connect=1, read=0.2)
    with (
        _client(sandbox, timeouts=timeouts, policy=policy) as c,
        pytest.raises(errors.NetworkError, match="timed out"),
    ):
        c.list_workspaces()


def test_plain_http_is_refused_except_loopback(tmp_path: Path) -> None:
    """http:// to a remote host is refused for the API and for upload URLs; loopback is fine."""
    with pytest.raises(errors.InsecureTransportError, match="https"):
        api.FloraClient("http://app.flora.ai/api/v1", Secret("sk_test_x"))
    api.FloraClient("https://app.flora.ai/api/v1", Secret("sk_test_x")).close()
    api.FloraClient("http://127.0.0.1:9/api/v1", Secret("sk_test_x")).close()
    f = tmp_path / "a.png"
    f.write_bytes(b"x")
    t = upload.UploadTarget()
    with pytest.raises(errors.InsecureTransportError), f.open("rb") as stream:
        t.upload(
            UploadInstructions("http://upload.example/x"),
            stream,
            file_name="a.png",
            content_type="image/png",
        )
    t.close()


class _RawHandler(http.server.BaseHTTPRequestHandler):
    """Answers what a broken proxy would: HTML errors, truncated JSON."""

    def do_GET(self) -> None:
        if self.path.endswith("/workspaces"):
            body = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
        else:
            body = b'{"projects": [{"project_id": "prj_'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_non_json_and_truncated_bodies_are_clear_errors() -> None:
    """An HTML 502 and a truncated JSON body give clear errors, not a traceback."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RawHandler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    policy = retrying.RetryPolicy(max_attempts=1)
    try:
        with api.FloraClient(base, Secret("sk_test_x"), policy=policy) as c:
            with pytest.raises(errors.ServerError, match="502 Bad Gateway") as exc:
                c.list_workspaces()
            assert exc.value.status == 502
            with pytest.raises(errors.MalformedResponseError, match="not JSON"):
                c.get_project("prj_1")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_large_upload_streams_in_bounded_memory(sandbox: Sandbox, tmp_path: Path) -> None:
    """A 300 MB upload grows the uploading process by less than 64 MB; the bytes arrive intact."""
    big = tmp_path / "big.mp4"
    with big.open("wb") as out:
        block = os.urandom(1 << 20)
        for n in range(300):
            out.write(block[n:] + block[:n])
    with _client(sandbox) as c:
        asset = c.create_asset(
            sandbox.workspace_id,
            file_name="big.mp4",
            content_type="video/mp4",
            idempotency_key="fs1-big",
        )
    assert asset.upload is not None
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from florasync.flora import upload
        from florasync.flora.models import UploadInstructions
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        instructions = UploadInstructions.from_json(sys.stdin.read())
        target = upload.UploadTarget()
        base = hwm()
        with open({str(big)!r}, "rb") as stream:
            target.upload(instructions, stream, file_name="big.mp4", content_type="video/mp4")
        print(hwm() - base)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=asset.upload.to_json(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    growth = int(result.stdout.strip())
    print(f"300 MB upload grew the uploading process by {growth / 2**20:.1f} MiB")
    assert growth < 64 * 1024 * 1024, f"uploading grew RSS by {growth / 2**20:.1f} MiB"
    with _client(sandbox) as c:
        assert c.complete_asset(asset.asset_id).is_ready
    stored = sandbox.blob_path(asset.asset_id)
    assert stored is not None
    assert stored.stat().st_size == big.stat().st_size
    assert _sha256(stored) == _sha256(big)


def test_secret_never_prints() -> None:
    """The key's repr and str are masked."""
    key = Secret("sk_live_abcdef")
    assert "abcdef" not in repr(key)
    assert "abcdef" not in f"{key}"
    assert key.reveal() == "sk_live_abcdef"


def test_faults_fixture_is_clean(sandbox: Sandbox) -> None:
    """Every test starts from a sandbox without faults (the fixture is per test)."""
    assert sandbox.faults.to_dict()["error_rate"] == Faults().error_rate == 0.0
    assert SHORT_TIMEOUT > 0


def test_small_upload_bodies_are_encoded_as_urllib3_would(sandbox: Sandbox, tmp_path: Path) -> None:
    """A body built in memory is byte for byte urllib3's multipart encoding (names with
    quotes, line breaks and accents escaped the HTML5 way), and the target stores the file."""
    import urllib3

    from florasync.flora.upload import _encode_in_memory

    fields = {"publicKey": "pk", "signature": "s", "token": "t", "fileName": 'ca"fé\nx.png'}
    files = {"file": ('ca"fé\nx.png', b"\x89PNG" + bytes(range(256)), "image/png")}
    body, content_type = _encode_in_memory(fields, files)
    boundary = content_type.split("boundary=")[1]
    expected, _ = urllib3.encode_multipart_formdata(
        [*fields.items(), ("file", files["file"])], boundary=boundary
    )
    assert body == expected
    f = tmp_path / "café.png"
    write_file(f, 3000)
    target = upload.UploadTarget()
    try:
        with _client(sandbox) as c:
            asset_id = _upload_one(c, target, sandbox, f, "fs1-cafe")
    finally:
        target.close()
    stored = sandbox.blob_path(asset_id)
    assert stored is not None
    assert stored.read_bytes() == f.read_bytes()
