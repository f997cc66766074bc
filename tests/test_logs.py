"""Log lines: each format's shape, journald detection, the key never written, the CLI's JSON."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from florasync import logs
from florasync.sandbox import Sandbox

from .helpers import run_cli, write_config
from .syncenv import SyncEnv

REGISTERED = "correct-horse-battery-staple"  # stands for the API key
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo configure() and register_secret() after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in logs.THIRD_PARTY}
    monkeypatch.setattr(logs, "_secrets", ())
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _exc_info(message: str = "boom") -> ExcInfo:
    try:
        _fail(message)
    except ValueError as exc:
        return (ValueError, exc, exc.__traceback__)
    raise AssertionError("unreachable")


def _fail(message: str) -> None:
    raise ValueError(message)


def _record(
    msg: str = "hello world",
    *args: object,
    level: int = logging.INFO,
    exc_info: ExcInfo | None = None,
    fields: dict[str, Any] | None = None,
) -> logging.LogRecord:
    record = logging.LogRecord("florasync.test", level, __file__, 1, msg, args or None, exc_info)
    if fields is not None:
        record.fields = fields
    return record


def _journal_env(stream: io.TextIOBase, inode_offset: int = 0) -> dict[str, str]:
    st = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + inode_offset}"}


# -- formatters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
    ],
)
def test_syslog_priority_follows_sd_daemon(level: int, priority: int) -> None:
    """Each logging level maps to its sd-daemon(3) priority."""
    assert logs.syslog_priority(level) == priority
    line = logs.JournaldFormatter().format(_record(level=level))
    assert line == f"<{priority}>hello world"


def test_journald_prefixes_every_traceback_line() -> None:
    """With --debug a traceback spans lines, and every one of them carries the priority."""
    record = _record("sync failed", level=logging.ERROR, exc_info=_exc_info())
    lines = logs.JournaldFormatter(debug=True).format(record).splitlines()
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines), lines
    assert lines[0] == "<3>sync failed"
    assert lines[-1] == "<3>ValueError: boom"


def test_human_line_is_time_level_message() -> None:
    """A human line is ``HH:MM:SS LEVEL message``, without the logger name below debug."""
    line = logs.HumanFormatter().format(_record())
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    hello world", line), line


def test_human_line_names_the_logger_at_debug() -> None:
    """At debug level the logger name precedes the message."""
    line = logs.HumanFormatter(show_logger=True).format(_record(level=logging.DEBUG))
    assert line.endswith(" DEBUG   florasync.test: hello world"), line


def test_human_colours_only_warnings_and_errors() -> None:
    """With colour on, warnings and errors stand out and info stays plain."""
    formatter = logs.HumanFormatter(color=True)
    assert "\x1b[33mWARNING" in formatter.format(_record(level=logging.WARNING))
    assert "\x1b[31mERROR" in formatter.format(_record(level=logging.ERROR))
    assert "\x1b" not in formatter.format(_record(level=logging.INFO))
    assert "\x1b" not in logs.HumanFormatter().format(_record(level=logging.ERROR))


def test_exception_is_one_line_without_debug() -> None:
    """Without --debug an exception is appended as ``(Type: message)``; with it, the traceback."""
    record = _record("sync failed", exc_info=_exc_info())
    assert logs.HumanFormatter().format(record).endswith("sync failed (ValueError: boom)")
    full = logs.HumanFormatter(debug=True).format(_record("x", exc_info=_exc_info()))
    assert "Traceback (most recent call last)" in full


def test_plain_line_starts_with_an_iso_timestamp() -> None:
    """Plain lines start with an ISO-8601 local time with offset, then level and message."""
    record = _record()
    ts, rest = logs.PlainFormatter().format(record).split(" ", 1)
    when = datetime.fromisoformat(ts)
    assert when.tzinfo is not None
    assert abs(when.timestamp() - record.created) < 0.001
    assert rest == "INFO hello world"


def test_json_line_has_core_keys_and_utc_milliseconds() -> None:
    """A JSON line holds ts (UTC, milliseconds, Z), level, logger and message."""
    record = _record(level=logging.WARNING)
    doc = json.loads(logs.JsonFormatter().format(record))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"]), doc["ts"]
    when = datetime.fromisoformat(doc["ts"])
    assert when.utcoffset() == UTC.utcoffset(None)
    assert abs(when.timestamp() - record.created) < 0.001
    assert doc == {**doc, "level": "warning", "logger": "florasync.test", "message": "hello world"}
    assert "exc" not in doc


def test_json_carries_fields_without_overriding_core_keys() -> None:
    """Fields become keys of their own; they cannot replace the core keys; odd values are str."""
    when = datetime(2025, 1, 2, tzinfo=UTC)
    fields = {"path": "/a.png", "bytes": 3, "duration_s": 0.5, "level": "bogus", "at": when}
    doc = json.loads(logs.JsonFormatter().format(_record(fields=fields)))
    assert (doc["path"], doc["bytes"], doc["duration_s"]) == ("/a.png", 3, 0.5)
    assert doc["level"] == "info"
    assert doc["at"] == str(when)


@pytest.mark.parametrize("debug", [False, True])
def test_json_exc_is_the_exception_or_its_traceback(debug: bool) -> None:
    """``exc`` holds the exception line, or the whole traceback with --debug."""
    record = _record("sync failed", level=logging.ERROR, exc_info=_exc_info())
    doc = json.loads(logs.JsonFormatter(debug=debug).format(record))
    assert doc["message"] == "sync failed"
    assert doc["exc"].endswith("ValueError: boom")
    assert ("Traceback" in doc["exc"]) is debug


# -- choosing the format ----------------------------------------------------------------------


def test_journal_stream_matching_stderr_selects_journald(tmp_path: Path) -> None:
    """$JOURNAL_STREAM naming the stream's own file gives ``<N>`` lines without a timestamp."""
    with (tmp_path / "journal").open("w") as stream:
        logs.configure(level="info", stream=stream, env=_journal_env(stream))
        logging.getLogger("florasync.test").warning("disk %s", "full")
    assert (tmp_path / "journal").read_text() == "<4>disk full\n"


@pytest.mark.parametrize("value", ["mismatch", "garbage", "12", ":", ""])
def test_journal_stream_of_another_file_is_ignored(tmp_path: Path, value: str) -> None:
    """A $JOURNAL_STREAM that doesn't match the stream (or doesn't parse) means plain lines."""
    with (tmp_path / "log").open("w") as stream:
        env = _journal_env(stream, 1) if value == "mismatch" else {"JOURNAL_STREAM": value}
        assert not logs.is_journal_stream(stream, env)
        logs.configure(level="info", stream=stream, env=env)
        logging.getLogger("florasync.test").info("hello")
    ts, rest = (tmp_path / "log").read_text().rstrip("\n").split(" ", 1)
    assert datetime.fromisoformat(ts).tzinfo is not None
    assert rest == "INFO hello"


def test_journal_stream_check_survives_a_stream_without_a_file() -> None:
    """A stream with no file descriptor (StringIO) is never the journal."""
    assert not logs.is_journal_stream(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_terminal_gets_human_lines_coloured_unless_no_color() -> None:
    """On a terminal auto means human lines; NO_COLOR turns the colour off."""
    for env, coloured in (({}, True), ({"NO_COLOR": "1"}, False)):
        stream = _Terminal()
        logs.configure(level="info", stream=stream, env=env)
        logging.getLogger("florasync.test").warning("careful")
        line = stream.getvalue().rstrip("\n")
        assert re.fullmatch(r"\d\d:\d\d:\d\d .*WARNING.* careful", line), line
        assert ("\x1b[" in line) is coloured


def test_unknown_level_or_format_is_refused() -> None:
    """A level or format outside the documented choices raises ValueError."""
    with pytest.raises(ValueError, match="log level"):
        logs.configure(level="verbose", stream=io.StringIO())
    with pytest.raises(ValueError, match="log format"):
        logs.configure(level="info", fmt="xml", stream=io.StringIO())


# -- levels and idempotency -------------------------------------------------------------------


def test_configure_twice_keeps_one_handler() -> None:
    """A second configure() replaces the first handler: each record is written once."""
    first, second = io.StringIO(), io.StringIO()
    logs.configure(level="info", fmt="json", stream=first)
    logs.configure(level="info", fmt="json", stream=second)
    logging.getLogger("florasync.test").info("once")
    root = logging.getLogger()
    assert sum(isinstance(h, logs.RootHandler) for h in root.handlers) == 1
    assert first.getvalue() == ""
    assert [json.loads(line)["message"] for line in second.getvalue().splitlines()] == ["once"]


def test_level_filters_and_debug_implies_debug() -> None:
    """--log-level drops records below it; --debug shows debug records whatever the level."""
    stream = io.StringIO()
    logs.configure(level="warning", fmt="json", stream=stream)
    logging.getLogger("florasync.test").info("hidden")
    logging.getLogger("florasync.test").warning("shown")
    logs.configure(level="error", fmt="json", debug=True, stream=stream)
    logging.getLogger("florasync.test").debug("debug shown")
    messages = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert messages == ["shown", "debug shown"]


def test_third_party_loggers_are_quiet_unless_debug() -> None:
    """urllib3, watchdog and requests log warnings only, even at debug level, unless --debug."""
    logs.configure(level="debug", stream=io.StringIO())
    assert all(
        logging.getLogger(n).getEffectiveLevel() == logging.WARNING for n in logs.THIRD_PARTY
    )
    logs.configure(level="info", debug=True, stream=io.StringIO())
    assert all(logging.getLogger(n).getEffectiveLevel() == logging.DEBUG for n in logs.THIRD_PARTY)


# -- redaction --------------------------------------------------------------------------------


def test_redact_masks_registered_secrets_and_key_shapes() -> None:
    """A registered secret becomes ***, a FLORA-shaped key keeps its prefix only."""
    logs.register_secret(REGISTERED)
    logs.register_secret("")
    text = f"{REGISTERED} Bearer sk_live_AbC123 sk_test_9z sk_other_keep"
    assert logs.redact(text) == "*** Bearer sk_live_*** sk_test_*** sk_other_keep"


@pytest.mark.parametrize("fmt", ["human", "plain", "journald", "json"])
@pytest.mark.parametrize("debug", [False, True])
def test_key_never_reaches_the_stream(tmp_path: Path, fmt: str, debug: bool) -> None:
    """The key in a message, its arguments, fields or exception text is masked in every format."""
    logs.register_secret(REGISTERED)
    path = tmp_path / "log"
    with path.open("w") as stream:
        env = _journal_env(stream) if fmt == "journald" else {}
        chosen = "auto" if fmt in ("plain", "journald") else fmt
        logs.configure(level="info", fmt=chosen, debug=debug, stream=stream, env=env)
        logging.getLogger("florasync.test").error(
            "key %s and sk_live_AbC123 in a message",
            REGISTERED,
            exc_info=_exc_info(f"bad {REGISTERED} sk_test_Zz9"),
            extra={"fields": {"api_key": REGISTERED, "header": "Bearer sk_live_Q1w2"}},
        )
    out = path.read_text()
    for leaked in (REGISTERED, "AbC123", "Zz9", "Q1w2"):
        assert leaked not in out, out
    assert "key *** and sk_live_*** in a message" in out
    assert "bad *** sk_test_***" in out
    if fmt == "json":
        doc = json.loads(out)
        assert (doc["api_key"], doc["header"]) == ("***", "Bearer sk_live_***")


def test_bad_log_arguments_are_still_masked() -> None:
    """A call whose arguments don't fit its format is logged, not raised, and still masked."""
    logs.register_secret(REGISTERED)
    record = logging.LogRecord(
        "florasync.test", logging.INFO, __file__, 1, "%d", (REGISTERED,), None
    )
    assert logs.RedactFilter().filter(record)
    assert REGISTERED not in record.getMessage()
    assert "bad log arguments" in record.getMessage()


# -- the real CLI -----------------------------------------------------------------------------


def test_cli_json_lines_parse_and_hold_no_key(sandbox: Sandbox, tmp_path: Path) -> None:
    """``--log-format json --debug check``: every stderr line is JSON and the key is nowhere."""
    folder = tmp_path / "spring"
    folder.mkdir()
    cfg = write_config(
        tmp_path / "florasync.yaml",
        base_url=sandbox.base_url,
        workspace_id=sandbox.workspace_id,
        folders=[{"path": str(folder), "project_id": sandbox.project_ids[0]}],
    )
    result = run_cli(
        "--log-format", "json", "--debug", "check", "-c", str(cfg), api_key=sandbox.api_key
    )
    assert result.returncode == 0, result.stdout + result.stderr
    docs = [json.loads(line) for line in result.stderr.splitlines()]
    assert docs, "check --debug logged nothing"
    assert all({"ts", "level", "logger", "message"} <= doc.keys() for doc in docs)
    assert sandbox.api_key not in result.stdout + result.stderr


def test_scan_logs_each_outcome_with_fields(env: SyncEnv) -> None:
    """``run --scan --log-format json`` logs one line per file with its outcome as fields."""
    path = env.add(0, "a.png", size=4096)
    result = env.cli("run", "--scan", "--log-format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    docs = [json.loads(line) for line in result.stderr.splitlines()]
    outcomes = [doc for doc in docs if "outcome" in doc]
    assert len(outcomes) == 1, docs
    doc = outcomes[0]
    assert doc["outcome"] == "uploaded"
    assert (doc["path"], doc["project_id"], doc["bytes"]) == (str(path), env.projects[0], 4096)
    assert doc["asset_id"]
    assert doc["asset_id"] in doc["message"]
    assert isinstance(doc["duration_s"], float)
    assert env.sb.api_key not in result.stdout + result.stderr
