"""The configuration: where the file is, what it may say, and where the API key comes from.

Owns config discovery, the YAML schema (frozen pydantic models) with its defaults, path and
environment expansion, the ``FLORA_BASE_URL`` override, folder checks and reading the key from
``$CREDENTIALS_DIRECTORY`` / ``api.api_key_file`` / the environment. Every problem is a
``ConfigError`` naming the key at fault. Knows nothing of HTTP beyond ``urls``' transport rule.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import socket
import stat
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from florasync.config.timetable import UNLIMITED, Line, Rate, Timetable, parse_line, parse_rate
from florasync.errors import ConfigError, InsecureTransportError
from florasync.flora import urls

DEFAULT_INCLUDE = ("*.png", "*.jpg", "*.jpeg", "*.webp", "*.gif", "*.mp4", "*.mov")
CONFIG_ENV = "FLORASYNC_CONFIG"
BASE_URL_ENV = "FLORA_BASE_URL"
SYSTEM_CONFIG = Path("/etc/florasync/config.yaml")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_]\w*)\}|(?P<plain>[A-Za-z_]\w*))")
_KEY_PREFIXES = ("sk_live_", "sk_test_")  # FLORA key prefixes (CONTRACT.md §2)
_KEY_TEXT = re.compile(r"sk_(?:live|test)_[^\s'\",}\]]*")
_LISTEN = "HOST:PORT with a port between 1 and 65535 (e.g. 127.0.0.1:9464)"
_RATE_TEXT = "must be a rate like 4MiB/s, off or unlimited"
_CONTROL_LISTEN = "HOST:PORT with a port between 0 (any free port) and 65535 (e.g. 127.0.0.1:8385)"
_IDENT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # folders[].id and host_id (issue 14)
_IDENT_TEXT = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def _expand_path(value: object, info: ValidationInfo) -> Path:
    """Expand ``~`` and ``$VARS``, then anchor a relative path at the config file's directory."""
    context = info.context or {}
    base_dir: Path = context.get("base_dir") or Path.cwd()
    env: Mapping[str, str] = context.get("env", os.environ)
    if isinstance(value, Path):
        return _absolute(value, base_dir)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a path (got {_shown(value)})")
    return _absolute(Path(_expand_vars(_expand_user(value, env), env)), base_dir)


def _absolute(path: Path, base_dir: Path) -> Path:
    # lexical, like the shell's `cd ..`: symlinks stay as written (they are resolved only to
    # compare folders)
    return Path(os.path.normpath(base_dir / path))


def _expand_user(text: str, env: Mapping[str, str]) -> str:
    if text == "~" or text.startswith("~/"):
        return (env.get("HOME") or str(Path.home())) + text[1:]
    return os.path.expanduser(text)  # ~user/...  # noqa: PTH111 -- works on str, keeps it str


def _expand_vars(text: str, env: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        if name not in env:
            raise ValueError(f"environment variable {name} is not set (in {_shown(text)})")
        return env[name]

    return _VAR.sub(value, text)


UserPath = Annotated[Path, BeforeValidator(_expand_path)]


def _poll_word(value: object) -> object:
    # YAML 1.1 reads a bare on/off as a boolean
    return ("on" if value else "off") if isinstance(value, bool) else value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MoveTo(_Model):
    """``after_upload: {move: DIR}``: move each synced file into DIR."""

    move: UserPath = Field(description="a directory path")


def _after_upload(value: object, info: ValidationInfo) -> object:
    """Accept keep, delete or ``{move: DIR}``, with one message for every other shape."""
    if value in ("keep", "delete") or isinstance(value, MoveTo):
        return value
    if isinstance(value, dict) and set(value) == {"move"}:
        return MoveTo.model_construct(move=_expand_path(value["move"], info))
    if isinstance(value, dict) and set(value) - {"move"}:
        extra = sorted(str(k) for k in set(value) - {"move"})[0]
        raise ValueError(_unknown_key(extra, ["move"]))
    raise ValueError(f"must be keep, delete or a mapping {{move: DIR}} (got {_shown(value)})")


AfterUpload = Annotated[Literal["keep", "delete"] | MoveTo, BeforeValidator(_after_upload)]


class ApiConfig(_Model):
    """Where the FLORA API is, where the key comes from, and how long to wait for answers."""

    base_url: str = Field(default="https://app.flora.ai/api/v1", description="an https:// URL")
    api_key_env: str = Field(default="FLORA_API_KEY", description="an environment variable name")
    api_key_file: UserPath | None = Field(default=None, description="a file path, or null")
    connect_timeout_seconds: float = Field(
        default=10.0, gt=0, strict=True, description="a number of seconds > 0"
    )
    read_timeout_seconds: float = Field(
        default=60.0, gt=0, strict=True, description="a number of seconds > 0"
    )
    upload_timeout_seconds: float = Field(
        default=300.0, gt=0, strict=True, description="a number of seconds > 0"
    )

    @field_validator("api_key_env")
    @classmethod
    def _is_variable_name(cls, value: str) -> str:
        if _looks_like_key(value):
            raise ValueError(
                "holds what looks like an API key; it must be the name of the environment "
                "variable holding the key (e.g. FLORA_API_KEY), never the key itself"
            )
        if not _ENV_NAME.fullmatch(value):
            raise ValueError(f"must be an environment variable name (got {value!r})")
        return value


class ProjectByName(_Model):
    """``project: {name: ..., create: ...}``: the workspace's project with exactly this name."""

    name: str = Field(description="the project's exact name as text (quote a number: '2024')")
    create: bool = Field(
        default=False,
        description="true: create the project when the workspace has none of that name",
    )

    @field_validator("name")
    @classmethod
    def _is_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                f"must not be empty; it is the FLORA project's name (got {_shown(value)})"
            )
        return value  # used exactly as written: the match is exact and case-sensitive (issue 13)


class SubfolderProjects(_Model):
    """``projects_from_subfolders``: each immediate subdirectory is the project of its name."""

    create: bool = Field(
        default=True,
        description="true: create a subfolder's project when the workspace has none of that name",
    )


def _subfolder_projects(value: object) -> object:
    """true, false (or null) and ``{create: ...}``, with one message for every other shape."""
    if value is True:
        return SubfolderProjects()
    if value is False or value is None:
        return None
    if isinstance(value, dict | SubfolderProjects):
        return value
    raise ValueError(
        f"must be true, false or a mapping {{create: true|false}} (got {_shown(value)})"
    )


class FolderConfig(_Model):
    """One watched folder and the FLORA project(s) its files are attached to.

    The project is given by id or by name, or each subfolder is one (``load`` checks that
    exactly one way applies).
    """

    path: UserPath = Field(description="a directory path")
    id: str | None = Field(default=None, pattern=_IDENT, description=_IDENT_TEXT)
    project_id: str | None = Field(
        default=None,
        pattern=r"^prj_\S+$",
        description="a FLORA project id starting with prj_ (e.g. prj_XXXX)",
    )
    project: ProjectByName | None = Field(
        default=None, description="a mapping {name: NAME, create: true|false}"
    )
    projects_from_subfolders: Annotated[
        SubfolderProjects | None, BeforeValidator(_subfolder_projects)
    ] = Field(default=None, description="true, false or a mapping {create: true|false}")
    recursive: bool = Field(default=True, description="true or false")
    include: tuple[str, ...] = Field(
        default=DEFAULT_INCLUDE, min_length=1, description="a non-empty list of glob patterns"
    )
    exclude: tuple[str, ...] = Field(default=(), description="a list of glob patterns")
    poll: Annotated[Literal["auto", "on", "off"], BeforeValidator(_poll_word)] = Field(
        default="auto", description="one of auto, on, off"
    )
    after_upload: AfterUpload = Field(default="keep", description="keep, delete or {move: DIR}")

    @property
    def folder_id(self) -> str:
        """The folder's identity across hosts (issue 14): ``id`` when given, else derived from
        the project mapping and the path, so the same folder mounted at another path on another
        host needs ``id`` set alike on both."""
        if self.id is not None:
            return self.id
        seed = f"{self.project_label}\0{self.path}".encode()
        name = re.sub(r"[^A-Za-z0-9._-]", "_", self.path.name or "root")[:40].lstrip("._-")
        return f"{name or 'folder'}-{hashlib.sha256(seed).hexdigest()[:10]}"

    @property
    def project_label(self) -> str:
        """The project(s) as messages name them: ``prj_X``, ``project 'Name'``, or per subfolder."""
        own = f"project {self.project.name!r}" if self.project else self.project_id
        if self.projects_from_subfolders is None:
            return own or "no project"
        return "a project per subfolder" + (f" (root files: {own})" if own else "")


class RetryConfig(_Model):
    """How hard one request is retried (5xx, dropped connections; 429s wait for Retry-After)."""

    max_attempts: int = Field(
        default=10, ge=1, le=100, strict=True, description="an integer between 1 and 100"
    )
    backoff_base_seconds: float = Field(
        default=0.5, gt=0, strict=True, description="a number of seconds > 0"
    )
    backoff_cap_seconds: float = Field(
        default=30.0, gt=0, strict=True, description="a number of seconds > 0"
    )
    max_total_seconds: float = Field(
        default=300.0, gt=0, strict=True, description="a number of seconds > 0"
    )


class JournalConfig(_Model):
    """Where the journal lives when it is not the SQLite file in ``state_dir``: a PostgreSQL
    database whose ``postgresql://`` URL (a secret: it holds a password) comes from an
    environment variable, a 0600 file, or ``$CREDENTIALS_DIRECTORY/database_url``."""

    url_env: str | None = Field(default=None, description="an environment variable name")
    url_file: UserPath | None = Field(default=None, description="a file path, or null")
    lease_seconds: float = Field(
        default=30.0,
        ge=3,
        le=3600,
        strict=True,
        description="a number of seconds between 3 and 3600 (how long a dead host's claim lasts)",
    )

    @field_validator("url_env")
    @classmethod
    def _is_variable_name(cls, value: str | None) -> str | None:
        if value is not None and "://" in value:
            raise ValueError(
                "holds what looks like a URL; it must be the name of the environment variable "
                "holding the URL (e.g. FLORASYNC_DATABASE_URL), never the URL itself"
            )
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(f"must be an environment variable name (got {value!r})")
        return value


class MetricsConfig(_Model):
    """Where the metrics endpoint listens."""

    listen: str = Field(description=_LISTEN)

    @field_validator("listen")
    @classmethod
    def _is_host_port(cls, value: str) -> str:
        host, colon, port = value.rpartition(":")
        if not (colon and host and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"must be {_LISTEN} (got {value!r})")
        return value


def _rate(value: object) -> Rate:
    """``bandwidth.limit`` in the timetable's grammar; null is unlimited, and YAML reads a bare
    ``off`` as false."""
    if isinstance(value, Rate):
        return value
    if value is None:
        return UNLIMITED
    if value is False:
        value = "off"
    if value is True:
        raise ValueError(f"{_RATE_TEXT} (got true: YAML reads a bare on or yes as true)")
    if not isinstance(value, str | int):
        raise ValueError(f"{_RATE_TEXT} (got {_shown(value)})")  # noqa: TRY004 -- pydantic wants a ValueError
    try:
        return parse_rate(value)
    except ConfigError as exc:
        raise ValueError(exc.message) from None


def _schedule_line(value: object) -> Line:
    """One item of ``bandwidth.schedule`` (timetable's grammar); its index is in the key."""
    if isinstance(value, Line):
        return value
    try:
        return parse_line(value, "")
    except ConfigError as exc:
        raise ValueError(exc.message) from None


ScheduleLine = Annotated[
    Line, PlainValidator(_schedule_line), PlainSerializer(lambda line: line.text)
]


def _bandwidth(value: object) -> object:
    return BandwidthConfig() if value is None else value  # `bandwidth:` left empty


class BandwidthConfig(_Model):
    """``bandwidth``: the upload limit, and a weekly timetable of limits (issue 16;
    docs/control.md, "Bandwidth"). Where schedule lines overlap, the later one wins."""

    limit: Annotated[Rate, PlainValidator(_rate), PlainSerializer(Rate.describe)] = Field(
        default=UNLIMITED, description="a rate like 4MiB/s, off or unlimited"
    )
    schedule: tuple[ScheduleLine, ...] = Field(
        default=(), description='a list of lines like "Mon-Fri 08:00-18:00 4MiB/s"'
    )

    def default_rate(self) -> Rate:
        """The limit when no line of the schedule applies."""
        return self.limit

    def timetable(self) -> Timetable:
        """The schedule's lines as a timetable (empty when there is no schedule)."""
        return Timetable(self.schedule)

    def rate_at(self, now: datetime) -> Rate:
        """The rate in force at ``now`` (a local time): its schedule line's, else ``limit``."""
        return self.timetable().rate_at(now, self.limit)


def _existing_file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file; it must be a PEM file")
    return path


PemFile = Annotated[UserPath, AfterValidator(_existing_file)]


class TlsConfig(_Model):
    """``control.tls``: the control listener speaks HTTPS only, with this certificate and key."""

    cert: PemFile = Field(description="the path of a PEM certificate file")
    key: PemFile = Field(description="the path of a PEM private key file")


class ControlConfig(_Model):
    """``control``: where the daemon serves its page and JSON API (issue 16, docs/control.md).
    Loopback only unless ``tls`` is given (``load`` checks it)."""

    listen: str = Field(description=_CONTROL_LISTEN)
    tls: TlsConfig | None = Field(
        default=None, description="a mapping {cert: PATH, key: PATH}, or null"
    )

    @field_validator("listen")
    @classmethod
    def _is_host_port(cls, value: str) -> str:
        host, colon, port = value.rpartition(":")
        if not (colon and host.strip("[]") and port.isdigit() and int(port) <= 65535):
            raise ValueError(f"must be {_CONTROL_LISTEN} (got {value!r})")
        return value

    @property
    def host(self) -> str:
        """The host to bind, brackets of an IPv6 literal removed."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def default_host_id() -> str:
    """This host's name in a fleet (issue 14): the hostname's first label, as an identifier."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0])[:64].lstrip("._-")
    return name or "localhost"


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_STATE_HOME/florasync``, else ``~/.local/state/florasync``."""
    xdg = env.get("XDG_STATE_HOME", "")
    if Path(xdg).is_absolute():  # the XDG spec says to ignore relative values
        return Path(xdg) / "florasync"
    return Path(_expand_user("~", env)) / ".local" / "state" / "florasync"


class Config(_Model):
    """A whole, validated config file. ``source`` is the file it was loaded from.

    ``poll_interval_seconds`` is how often polled folders are listed; 30 or more is recommended
    on network filesystems, where every listing is a round trip to the server.
    """

    api: ApiConfig = Field(
        default=ApiConfig(), description="a mapping (base_url, api_key_env, ...)"
    )
    workspace_id: str = Field(
        pattern=r"^ws_\S+$", description="a FLORA workspace id starting with ws_ (e.g. ws_XXXX)"
    )
    state_dir: UserPath = Field(default_factory=default_state_dir, description="a directory path")
    host_id: str = Field(default_factory=default_host_id, pattern=_IDENT, description=_IDENT_TEXT)
    workers: int = Field(
        default=4, ge=1, le=64, strict=True, description="an integer between 1 and 64"
    )
    settle_seconds: float = Field(
        default=2.0, ge=0, strict=True, description="a number of seconds >= 0"
    )
    poll_interval_seconds: float = Field(
        default=60.0,
        ge=1,
        strict=True,
        description="a number of seconds >= 1 (30+ on network filesystems)",
    )
    rescan_interval_seconds: float = Field(
        default=3600.0, ge=1, strict=True, description="a number of seconds >= 1"
    )
    complete_timeout_seconds: float = Field(
        default=120.0, gt=0, strict=True, description="a number of seconds > 0"
    )
    max_file_bytes: int | None = Field(
        default=None, gt=0, strict=True, description="a number of bytes > 0, or null for no limit"
    )
    retry: RetryConfig = Field(
        default=RetryConfig(), description="a mapping (max_attempts, backoff_base_seconds, ...)"
    )
    metrics: MetricsConfig | None = Field(default=None, description="a mapping {listen: HOST:PORT}")
    bandwidth: Annotated[BandwidthConfig, BeforeValidator(_bandwidth)] = Field(
        default=BandwidthConfig(), description="a mapping {limit: RATE, schedule: [LINE, ...]}"
    )
    on_pause: Literal["finish", "stop"] = Field(
        default="finish",
        description="finish or stop (what an upload in flight does when a pause begins)",
    )
    control: ControlConfig | None = Field(
        default=None, description="a mapping {listen: HOST:PORT, tls: {cert, key}}, or null"
    )
    remote_deletions: Literal["respect", "restore"] = Field(
        default="respect",
        description="respect (a node removed in FLORA stays removed) or restore",
    )
    adopt: bool = Field(
        default=False, description="true or false (verify --adopt: issue 15, docs/verify.md)"
    )
    adopt_max_bytes: int = Field(
        default=256 << 20, gt=0, strict=True, description="a number of bytes > 0"
    )
    journal: JournalConfig | None = Field(
        default=None,
        description="a mapping {url_env: NAME} or {url_file: PATH} (PostgreSQL), or null (SQLite)",
    )
    folders: tuple[FolderConfig, ...] = Field(
        min_length=1,
        description="a list of at least one folder mapping (path, project_id or project)",
    )
    _source: Path | None = PrivateAttr(None)

    @property
    def source(self) -> Path | None:
        """The file this config was loaded from (None when built in code)."""
        return self._source


def discover(cli_path: str | None, env: Mapping[str, str] = os.environ) -> Path:
    """The config file to use: ``-c``, ``$FLORASYNC_CONFIG``, then the usual places.

    Raises:
        ConfigError: ``-c`` or ``$FLORASYNC_CONFIG`` names a missing file, or nothing was found.
    """
    for key, given in (("-c", cli_path), (CONFIG_ENV, env.get(CONFIG_ENV))):
        if given:
            path = _absolute(Path(_expand_user(given, env)), Path.cwd())
            if not may_exist(path):
                raise ConfigError(key, f"config file {path} does not exist")
            return path
    places = search_path(env)
    for path in places:
        if may_exist(path):
            return path
    looked = ", ".join(str(p) for p in places)
    raise ConfigError(
        "",
        f"no config file found; looked for -c (not given), ${CONFIG_ENV} (not set), {looked}; "
        "copy config.example.yaml to one of these places or pass -c CONFIG",
    )


def may_exist(path: Path) -> bool:
    """True unless the path is certainly absent: an unreadable one is left for the reader."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


def search_path(env: Mapping[str, str] = os.environ) -> list[Path]:
    """The files tried, in order, when neither ``-c`` nor ``$FLORASYNC_CONFIG`` is given."""
    xdg = env.get("XDG_CONFIG_HOME", "")
    user_dir = Path(xdg) if Path(xdg).is_absolute() else Path(_expand_user("~/.config", env))
    return [Path.cwd() / "florasync.yaml", user_dir / "florasync" / "config.yaml", SYSTEM_CONFIG]


def load(path: Path, env: Mapping[str, str] = os.environ) -> Config:
    """Read, validate and complete the config at ``path``; folders are checked by check_folders.

    Raises:
        ConfigError: anything wrong, naming the key (InsecureTransportError for plain http).
    """
    raw = _read_yaml(path)
    raw.setdefault("state_dir", default_state_dir(env))
    context = {"base_dir": _absolute(path, Path.cwd()).parent, "env": env}
    try:
        cfg = Config.model_validate(raw, context=context)
    except ValidationError as exc:
        raise _config_error(exc) from None
    cfg = _with_base_url_override(cfg, env)
    _check_journal(cfg.journal)
    _check_control(cfg.control)
    _check_project_mappings(cfg.folders)
    _check_folder_overlaps(cfg.folders)
    _check_folder_ids(cfg.folders)
    _check_move_targets(cfg.folders)
    cfg._source = path  # private, so a user cannot set it from YAML
    return cfg


def _with_base_url_override(cfg: Config, env: Mapping[str, str]) -> Config:
    url = env.get(BASE_URL_ENV) or cfg.api.base_url
    problem = urls.transport_problem(url)
    if problem is not None:
        origin = f" (from ${BASE_URL_ENV})" if env.get(BASE_URL_ENV) else ""
        error = InsecureTransportError if _is_plain_http_to_remote(url) else ConfigError
        raise error("api.base_url", _scrub(problem) + origin)
    if url == cfg.api.base_url:
        return cfg
    return cfg.model_copy(update={"api": cfg.api.model_copy(update={"base_url": url})})


def _is_plain_http_to_remote(url: str) -> bool:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return (
        url.lower().startswith("http://") and host is not None and not urls.is_loopback_host(host)
    )


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys, which YAML would silently resolve to the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, yaml.Node] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value in seen:
                first = seen[key_node.value].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {_shown(key_node.value)} (first given on line {first})",
                    problem_mark=key_node.start_mark,
                )
            if isinstance(key_node, yaml.ScalarNode):
                seen[key_node.value] = key_node
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"config file {path} is not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: {_yaml_problem(exc)}") from None
    if data is None:
        raise ConfigError("", f"config file {path} is empty; it needs workspace_id and folders")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"{_shown(data)}"
        raise ConfigError("", f"{path}: the top level must be a mapping of keys (got {kind})")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"not valid YAML: {exc}"
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}not valid YAML: {exc.problem or exc.context}"


def _config_error(exc: ValidationError) -> ConfigError:
    """One ConfigError for all problems: ``key`` names the first, one line per further one."""
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    # a list with a bad item also reports itself as too short: keep only the item's problem
    errors = [e for e, loc in zip(errors, locs, strict=True) if not _has_inner(loc, locs)]
    # a misspelt key also shows as a missing one: the "did you mean" is the better first line
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    problems = [(_scrub(key), message) for key, message in map(_describe, errors)]
    (key, message), rest = problems[0], problems[1:]
    return ConfigError(key, message + "".join(f"\n{k}: {m}" for k, m in rest))


def _has_inner(loc: tuple[Any, ...], locs: list[tuple[Any, ...]]) -> bool:
    return any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs)


def _describe(error: ErrorDetails) -> tuple[str, str]:
    """The dotted key and the user-facing message of one pydantic error."""
    kind, loc = error["type"], tuple(error["loc"])
    if kind == "invalid_key":
        return _key_of(loc[:-1])[0], f"keys must be words (got {_shown(loc[-1])})"
    key, field, parent = _key_of(loc)
    if kind == "extra_forbidden":
        return key, _unknown_key(str(loc[-1]), list(parent.model_fields) if parent else [])
    if kind == "value_error":
        return key, str(error["ctx"]["error"])
    expected = field.description if field is not None else None
    if isinstance(loc[-1], int) and kind == "string_type":
        expected = "text"  # an item of a list of strings
    template = _MESSAGES.get(kind, "must be {expected} (got {got})")
    return key, template.format(expected=expected or "a valid value", got=_shown(error["input"]))


_MESSAGES = {
    "missing": "is missing; it must be {expected}",
    "model_type": "must be a mapping of keys (got {got})",
    "model_attributes_type": "must be a mapping of keys (got {got})",
}


def _key_of(loc: tuple[Any, ...]) -> tuple[str, FieldInfo | None, type[BaseModel] | None]:
    """``folders[1].project_id`` for a pydantic loc, the field it names and its parent model."""
    key, field, parent = "", None, None
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
            continue
        key = f"{key}.{part}" if key else str(part)
        parent, field = model, model.model_fields.get(part) if model else None
        model = _model_in(field.annotation) if field is not None else None
    return key, field, parent


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, (_model_in(arg) for arg in get_args(annotation))), None)


def _unknown_key(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return f"unknown key {_shown(name)}; {hint}"


def _shown(value: object) -> str:
    """A given value as a user wrote it, never an API key, never a page long."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = _scrub(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _scrub(text: str) -> str:
    """``text`` with anything shaped like a FLORA key replaced by its prefix and ``***``."""
    return _KEY_TEXT.sub(lambda match: match[0][:8] + "***", text)


def _looks_like_key(text: str) -> bool:
    return any(prefix in text for prefix in _KEY_PREFIXES)


def _check_move_targets(folders: tuple[FolderConfig, ...]) -> None:
    """``after_upload: {move: DIR}`` into a watched folder would sync (and move) files forever."""
    real = [_real(f.path) for f in folders]
    for index, folder in enumerate(folders):
        if not isinstance(folder.after_upload, MoveTo):
            continue
        target = _real(folder.after_upload.move)
        for other, root in zip(folders, real, strict=True):
            if target == root or target.is_relative_to(root):
                raise ConfigError(
                    f"folders[{index}].after_upload",
                    f"move target {folder.after_upload.move} is inside the watched folder "
                    f"{other.path}; pick a directory outside every watched folder",
                )


def _check_journal(journal: JournalConfig | None) -> None:
    """``journal`` names exactly one place for the database URL."""
    if journal is not None and (journal.url_env is None) == (journal.url_file is None):
        raise ConfigError(
            "journal",
            "give url_env (an environment variable holding the postgresql:// URL) or url_file "
            "(a file holding it), exactly one; leave journal out for the SQLite journal",
        )


def _check_control(control: ControlConfig | None) -> None:
    """The control API changes what the daemon does: off this host only over TLS (issue 16)."""
    if control is None or control.tls is not None or urls.is_loopback_host(control.host):
        return
    raise ConfigError(
        "control.listen",
        f"{control.host} is not a loopback address; the control API pauses, retries and "
        "changes limits, so it listens on 127.0.0.1, ::1 or localhost unless control.tls "
        "names a certificate and key for HTTPS (docs/control.md, Security)",
    )


def _check_project_mappings(folders: tuple[FolderConfig, ...]) -> None:
    """Each folder says where its files go in exactly one way (issue 13)."""
    for index, folder in enumerate(folders):
        key = f"folders[{index}]"
        if folder.project_id is not None and folder.project is not None:
            raise ConfigError(
                f"{key}.project", "give either project_id or project (by name), not both"
            )
        subfolders = folder.projects_from_subfolders is not None
        if folder.project_id is None and folder.project is None and not subfolders:
            raise ConfigError(
                f"{key}.project_id",
                "is missing; it must be a FLORA project id starting with prj_ (e.g. prj_XXXX), "
                "or give project: {name: ...} or projects_from_subfolders: true",
            )
        if subfolders and not folder.recursive:
            raise ConfigError(
                f"{key}.projects_from_subfolders",
                "needs recursive: true (the subfolders hold the projects' files)",
            )


def _check_folder_ids(folders: tuple[FolderConfig, ...]) -> None:
    """Each folder's identity is its own: two folders with one ``id`` would be one folder."""
    seen: dict[str, int] = {}
    for index, folder in enumerate(folders):
        if folder.folder_id in seen:
            raise ConfigError(
                f"folders[{index}].id",
                f"{folder.folder_id!r} is already the id of folders[{seen[folder.folder_id]}]; "
                "each folder needs its own id (the same shared folder on another host keeps "
                "the same id there)",
            )
        seen[folder.folder_id] = index


def _check_folder_overlaps(folders: tuple[FolderConfig, ...]) -> None:
    """Refuse a folder mapped twice, or nested folders whose files would go two ways."""
    real = [_real(f.path) for f in folders]
    for j, later in enumerate(folders):
        for i in range(j):
            problem = _overlap(folders[i], real[i], f"folders[{i}]", later, real[j])
            if problem:
                raise ConfigError(f"folders[{j}].path", problem)


def _overlap(
    earlier: FolderConfig, real_e: Path, name: str, later: FolderConfig, real_l: Path
) -> str | None:
    """Why ``later`` cannot sit beside ``earlier`` (called ``name``), or None."""
    if real_e == real_l:
        return f"{later.path} is the same folder as {name} ({earlier.path}); map each folder once"
    if not (real_l.is_relative_to(real_e) or real_e.is_relative_to(real_l)):
        return None
    outer, inner = (earlier, later) if real_l.is_relative_to(real_e) else (later, earlier)
    conflict = _project_conflict(earlier, later)
    if conflict:
        return f"{inner.path} is inside {outer.path} (nested with {name}), but {conflict}"
    if not outer.recursive:
        return None
    if inner is later:
        return f"{later.path} is already covered by {name} ({earlier.path}, recursive)"
    return f"{later.path} (recursive) already covers {name} ({earlier.path}); remove one"


def _project_conflict(earlier: FolderConfig, later: FolderConfig) -> str | None:
    """Why nested folders' files would go two ways, or None when both map one same project."""
    for folder in (earlier, later):
        if folder.projects_from_subfolders is not None:
            return (
                f"{folder.path} maps {folder.project_label}; nested folders must map one and "
                "the same project; un-nest them"
            )
    if _single_project(earlier) != _single_project(later):
        return (
            f"they map to different projects ({earlier.project_label}, {later.project_label}); "
            "un-nest them"
        )
    return None


def _single_project(folder: FolderConfig) -> tuple[str, str | None]:
    """What identifies the folder's one project: its id, or its name (``create`` aside)."""
    if folder.project is not None:
        return ("name", folder.project.name)
    return ("id", folder.project_id)


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare the path as written
        return path


def check_folders(cfg: Config) -> None:
    """Check every folder (see ``check_folder``); the first problem is raised."""
    for index in range(len(cfg.folders)):
        check_folder(cfg, index)


def check_folder(cfg: Config, index: int) -> None:
    """Check that ``folders[index]`` exists, is a directory, and can be listed and read.

    Kept out of ``load`` so ``status`` works while a disk is unmounted.

    Raises:
        ConfigError: keyed ``folders[i].path``.
    """
    path, key = cfg.folders[index].path, f"folders[{index}].path"
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(key, f"{path} does not exist (not mounted? a typo?)") from None
    except OSError as exc:
        raise ConfigError(key, f"{path} cannot be reached: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise ConfigError(key, f"{path} is not a directory; it must be the folder to watch")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(key, f"{path} is not readable by this user; it needs r-x permission")
