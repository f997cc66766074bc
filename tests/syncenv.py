"""A sync environment for end-to-end tests: a sandbox, two folders, a config, the real CLI."""

from __future__ import annotations

import json
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from florasync.sandbox import Sandbox

from .helpers import cli_command, cli_env, run_cli, write_config, write_file

FAST_RETRIES = {"backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.2, "max_attempts": 14}


@dataclass
class SyncEnv:
    """Two folders mapped to the sandbox's two projects, and helpers to run florasync on them."""

    sb: Sandbox
    root: Path
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folders = [self.root / "spring", self.root / "shots"]
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
        self.write_config()

    @property
    def projects(self) -> list[str]:
        return self.sb.project_ids[:2]

    @property
    def config(self) -> Path:
        return self.root / "florasync.yaml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def write_config(self, **overrides: Any) -> Path:
        settings = {"settle_seconds": 0, "workers": 4, "retry": FAST_RETRIES, **self.settings}
        settings.update(overrides)
        folders = settings.pop("folders", None) or [
            {"path": str(f), "project_id": p}
            for f, p in zip(self.folders, self.projects, strict=True)
        ]
        return write_config(
            self.config,
            base_url=self.sb.base_url,
            workspace_id=self.sb.workspace_id,
            folders=folders,
            state_dir=self.state_dir,
            **settings,
        )

    def add(self, folder: int, name: str, size: int = 4096, seed: int | None = None) -> Path:
        """Write a file of distinct content (seed defaults to a hash of its name)."""
        path = self.folders[folder] / name
        write_file(path, size, seed=zlib.crc32(name.encode()) if seed is None else seed)
        return path

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(args[0], "-c", str(self.config), *args[1:], api_key=self.sb.api_key, **kw)

    def scan(self, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.cli("run", "--scan", **kw)

    def popen(
        self, *args: str, extra_env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.Popen[str]:
        """Start florasync without waiting (for signals and kill -9)."""
        argv = cli_command(args[0], "-c", str(self.config), *args[1:])
        env = cli_env(self.sb.api_key, extra_env)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(argv, env=env, text=True, **kw)

    @staticmethod
    def kill(proc: subprocess.Popen[str]) -> tuple[str, str]:
        """SIGKILL a florasync started by ``popen`` and collect its output (closes the pipes)."""
        proc.kill()
        return proc.communicate()

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json", "--failures", "200")
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def expected(self) -> dict[Path, str]:
        """Every wanted file on disk and its project (what FLORA should hold)."""
        out = {}
        for folder, project in zip(self.folders, self.projects, strict=True):
            for path in folder.rglob("*"):
                if path.is_file() and not path.name.startswith(".") and path.suffix == ".png":
                    out[path] = project
        return out
