"""Where log lines go and how they look: a terminal, journald, a plain pipe, or JSON.

Owns the root handler, the four formatters, the level of third-party loggers and the masking of
the API key in every line. Call sites only use ``logging.getLogger(__name__)``, and may pass
``extra={"fields": {...}}`` for values that JSON lines should carry as their own keys.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
THIRD_PARTY = ("urllib3", "watchdog", "requests")
MASK = "***"
KEY_PATTERN = re.compile(r"(sk_(?:live|test)_)[A-Za-z0-9]+")

_secrets: tuple[str, ...] = ()
_secrets_lock = threading.Lock()
_JSON_RESERVED = frozenset({"ts", "level", "logger", "message", "exc"})
_COLORS = {logging.WARNING: "\x1b[33m", logging.ERROR: "\x1b[31m", logging.CRITICAL: "\x1b[1;31m"}
_RESET = "\x1b[0m"


def configure(
    *,
    level: str,
    fmt: str = "auto",
    debug: bool = False,
    stream: TextIO | None = None,
    env: Mapping[str, str] = os.environ,
) -> None:
    """Send every log record to ``stream`` (default stderr) in ``fmt``; safe to call again.

    ``fmt`` is ``human``, ``json`` or ``auto`` (journald under systemd, human on a terminal,
    plain lines with ISO-8601 timestamps elsewhere). ``debug`` implies level ``debug``, full
    tracebacks and third-party debug logs.

    Raises:
        ValueError: ``level`` or ``fmt`` is not one of the known names.
    """
    out = sys.stderr if stream is None else stream
    threshold = logging.DEBUG if debug else _level_number(level)
    handler = RootHandler(out)
    show_logger = threshold <= logging.DEBUG
    handler.setFormatter(_formatter_for(fmt, out, env, debug=debug, show_logger=show_logger))
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, RootHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)


def register_secret(value: str) -> None:
    """Mask ``value`` in every log line from now on (the API key, once it is loaded)."""
    global _secrets  # noqa: PLW0603 -- one registry for the process, read on every log line
    if not value:
        return  # an empty "secret" would match between every character
    with _secrets_lock:
        # longest first, so a secret containing another is masked whole
        _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with registered secrets replaced by ``***`` and key-shaped strings masked."""
    for secret in _secrets:
        text = text.replace(secret, MASK)
    return KEY_PATTERN.sub(rf"\1{MASK}", text)


def syslog_priority(levelno: int) -> int:
    """The sd-daemon(3) priority for a logging level (journald has no separate CRITICAL)."""
    if levelno >= logging.CRITICAL:
        return 2  # SD_CRIT
    if levelno >= logging.ERROR:
        return 3  # SD_ERR
    if levelno >= logging.WARNING:
        return 4  # SD_WARNING
    if levelno >= logging.INFO:
        return 6  # SD_INFO
    return 7  # SD_DEBUG


def is_journal_stream(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journald stream named by $JOURNAL_STREAM (systemd.exec(5)).

    The variable is inherited by children whose stderr may go elsewhere, so it only counts
    when its ``DEV:INODE`` matches the stream's own file.
    """
    dev, sep, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file behind it (StringIO), or closed
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class RedactFilter(logging.Filter):
    """Renders a record's message, exception, stack and fields with the key masked.

    Arguments are merged into the message here, so no formatter can see them unmasked.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(_message(record))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _PLAIN_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            record.fields = {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        return True


class RootHandler(logging.StreamHandler[TextIO]):
    """The one handler ``configure`` installs; it masks the key in the finished line too."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _Formatter(logging.Formatter):
    """Shared parts: the message, the logger name at debug, the exception per --debug."""

    def __init__(self, *, debug: bool = False, show_logger: bool = False) -> None:
        super().__init__()
        self.debug = debug
        self.show_logger = show_logger

    def body(self, record: logging.LogRecord) -> str:
        """``[logger: ]message``, then the traceback (--debug) or ``(Type: message)``."""
        text = f"{record.name}: {record.getMessage()}" if self.show_logger else record.getMessage()
        exc = self.exception_text(record)
        if exc and self.debug:
            text = f"{text}\n{exc}"
        elif exc:
            text = f"{text} ({exc})"
        if record.stack_info and self.debug:
            text = f"{text}\n{record.stack_info}"
        return text

    def exception_text(self, record: logging.LogRecord) -> str:
        """The full traceback with --debug, else only its last line (the exception itself)."""
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        text = (record.exc_text or "").rstrip()
        if self.debug or not text:
            return text
        return text.splitlines()[-1]


class HumanFormatter(_Formatter):
    """``HH:MM:SS LEVEL message`` for a person at a terminal; warnings and errors in colour."""

    def __init__(
        self, *, color: bool = False, debug: bool = False, show_logger: bool = False
    ) -> None:
        super().__init__(debug=debug, show_logger=show_logger)
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname:<7}"
        color = _COLORS.get(record.levelno) if self.color else None
        if color:
            level = f"{color}{level}{_RESET}"
        return f"{self.formatTime(record, '%H:%M:%S')} {level} {self.body(record)}"


class PlainFormatter(_Formatter):
    """``<ISO-8601 local time> LEVEL message`` for files and pipes (cron, ``2>>log``)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")
        return f"{ts} {record.levelname} {self.body(record)}"


class JournaldFormatter(_Formatter):
    """``<N>message`` for journald, which adds its own timestamp and reads N as the priority.

    Every line of a multi-line record (a --debug traceback) gets the prefix: journald splits
    the stream at newlines, so an unprefixed traceback line would be logged at the default
    priority and vanish from ``journalctl -p err``.
    """

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.body(record).splitlines() or [""])


class JsonFormatter(_Formatter):
    """One JSON object per line: ts, level, logger, message, the call's fields, and exc.

    ``ts`` is UTC with milliseconds. Fields cannot overwrite the five reserved keys; values
    JSON cannot encode are written as their ``str``. Output is ASCII, so an undecodable file
    name cannot break the line.
    """

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        doc: dict[str, object] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            doc.update({str(k): v for k, v in fields.items() if k not in _JSON_RESERVED})
        exc = self.exception_text(record)
        if exc:
            doc["exc"] = exc
        return json.dumps(doc, default=str)


_PLAIN_FORMATTER = logging.Formatter()


def _level_number(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r} (known: {', '.join(LEVELS)})") from None


def _formatter_for(
    fmt: str, stream: TextIO, env: Mapping[str, str], *, debug: bool, show_logger: bool
) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(debug=debug, show_logger=show_logger)
    if fmt not in ("auto", "human"):
        raise ValueError(f"unknown log format {fmt!r} (known: auto, human, json)")
    if fmt == "auto" and is_journal_stream(stream, env):
        return JournaldFormatter(debug=debug, show_logger=show_logger)
    if fmt == "human" or _isatty(stream):
        color = _isatty(stream) and not env.get("NO_COLOR") and env.get("TERM") != "dumb"
        return HumanFormatter(color=color, debug=debug, show_logger=show_logger)
    return PlainFormatter(debug=debug, show_logger=show_logger)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _message(record: logging.LogRecord) -> str:
    """The merged message; a call with the wrong arguments is still logged, and masked."""
    try:
        return record.getMessage()
    except (TypeError, ValueError, KeyError):
        return f"{record.msg} (bad log arguments: {record.args!r})"
