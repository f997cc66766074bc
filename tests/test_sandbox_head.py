"""The sandbox reads a request's head itself (florasync/sandbox/head.py): raw bytes on a socket,
the answers a client gets for good and broken heads."""

from __future__ import annotations

import socket

import pytest

from florasync.sandbox import Sandbox
from florasync.sandbox.head import MAX_FIELDS, Fields, HeadError, read_fields


def exchange(sb: Sandbox, head: bytes, *, then: bytes = b"") -> bytes:
    """Send ``head`` (and ``then``) on a new connection; every byte until the server closes it."""
    with socket.create_connection(("127.0.0.1", sb.port), timeout=10) as sock:
        sock.sendall(head + then)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def projects_get(sb: Sandbox, *fields: str, version: str = "HTTP/1.1") -> bytes:
    lines = [f"GET /api/v1/projects?workspace_id={sb.workspace_id} {version}", "Host: x", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_field_names_are_case_insensitive(sandbox):
    answer = exchange(sandbox, projects_get(sandbox, f"aUtHoRiZaTiOn: Bearer {sandbox.api_key}"))
    assert status_of(answer) == 200
    assert b"Spring Campaign" in answer


def test_a_continuation_line_belongs_to_the_field_before_it(sandbox):
    head = projects_get(sandbox, "Authorization: Bearer", f"\t{sandbox.api_key}")
    assert status_of(exchange(sandbox, head)) == 200


def test_keep_alive_serves_two_requests_and_close_ends_the_connection(sandbox):
    auth = f"Authorization: Bearer {sandbox.api_key}"
    first = projects_get(sandbox, auth)
    second = projects_get(sandbox, auth, "Connection: close")
    answer = exchange(sandbox, first + second + first)
    assert answer.count(b"HTTP/1.1 200 ") == 2  # the third request came after "close"


def test_http_1_0_closes_unless_asked_to_keep_alive(sandbox):
    auth = f"Authorization: Bearer {sandbox.api_key}"
    plain = projects_get(sandbox, auth, version="HTTP/1.0")
    assert exchange(sandbox, plain + plain).count(b" 200 ") == 1
    kept = projects_get(sandbox, auth, "Connection: keep-alive", version="HTTP/1.0")
    assert exchange(sandbox, kept + plain).count(b" 200 ") == 2


def test_expect_100_continue_is_answered_before_the_body(sandbox):
    body = f'{{"workspace_id": "{sandbox.workspace_id}", "name": "From a raw socket"}}'.encode()
    head = (
        "POST /api/v1/projects HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {sandbox.api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = exchange(sandbox, head, then=body)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 ")
    assert "From a raw socket" in sandbox.project_names().values()


@pytest.mark.parametrize(
    ("field", "status"),
    [
        ("X-Long: " + "a" * 70000, 431),
        ("no colon here", 400),
        ("Bad Name : value", 400),
        (": no name", 400),
    ],
)
def test_a_broken_head_gets_its_error_and_the_connection_closes(sandbox, field, status):
    answer = exchange(sandbox, projects_get(sandbox, field) + projects_get(sandbox))
    assert status_of(answer) == status
    assert answer.count(b"HTTP/1.") == 1


def test_too_many_fields_is_431(sandbox):
    fields = [f"X-F{n}: v" for n in range(MAX_FIELDS + 1)]
    assert status_of(exchange(sandbox, projects_get(sandbox, *fields))) == 431


def test_an_unusual_request_line_still_gets_http_servers_answer(sandbox):
    assert b"Error code: 505" in exchange(sandbox, b"GET /x HTTP/2.0\r\n\r\n")  # no status line
    assert b"Error code: 400" in exchange(sandbox, b"GET /x HTTP/1.1 extra\r\n\r\n")
    answer = exchange(sandbox, b"GET //api/v1/nothing HTTP/1.01\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 404  # through http.server's parser, then routed as usual


class Lines:
    def __init__(self, data: bytes) -> None:
        self._lines = data.splitlines(keepends=True)

    def readline(self, size: int = -1, /) -> bytes:
        line = self._lines.pop(0) if self._lines else b""
        return line if size < 0 else line[:size]


def test_fields_keep_every_value_and_the_first_wins():
    fields = read_fields(Lines(b"A: 1\r\nb: 2\r\na: 3\r\nEmpty:\r\n\r\nbody"))
    assert fields.get("a") == "1"
    assert fields.get("B") == "2"
    assert fields.text("empty") == ""
    assert "EMPTY" in fields
    assert "c" not in fields
    assert fields.get("c", "default") == "default"
    assert list(fields) == ["a", "b", "empty"]
    assert Fields([("X", "1")]).text("x") == "1"


def test_a_head_cut_off_is_an_error():
    with pytest.raises(HeadError) as caught:
        read_fields(Lines(b"A: 1\r\n"))
    assert caught.value.status == 400
