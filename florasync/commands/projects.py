"""``florasync projects``: list the workspace's projects, to write folder mappings.

Owns the table / JSON rendering of the project list; read-only. A project is "mapped" when a
folder names it by id or by name, or a subfolder of a ``projects_from_subfolders`` folder does.
"""

from __future__ import annotations

import argparse
import json

from florasync.config import config, runtime
from florasync.errors import ExitCode
from florasync.flora import models
from florasync.local import scanner
from florasync.local.placement import mapped_targets
from florasync.local.rules import FolderRules


def run_from_args(args: argparse.Namespace) -> ExitCode:
    return projects(config_path=args.config, as_json=args.json)


def projects(*, config_path: str | None, as_json: bool) -> ExitCode:
    """Print every project of the configured workspace (id and name)."""
    rt = runtime.load(config_path)
    with rt.client() as client:
        found = list(client.list_projects(rt.cfg.workspace_id))
    mapped = _mapped(rt.cfg, found)
    if as_json:
        rows = [
            {"project_id": p.project_id, "name": p.name, "mapped": p.project_id in mapped}
            for p in found
        ]
        print(json.dumps({"workspace_id": rt.cfg.workspace_id, "projects": rows}, indent=2))
        return ExitCode.OK
    width = max((len(p.project_id) for p in found), default=10)
    for p in found:
        mark = "  (mapped)" if p.project_id in mapped else ""
        print(f"{p.project_id:<{width}}  {p.name}{mark}")
    if not found:
        print(f"no projects in workspace {rt.cfg.workspace_id}")
    return ExitCode.OK


def _mapped(cfg: config.Config, found: list[models.Project]) -> set[str]:
    """The ids of the projects the folders map now (by id, by name, by subfolder)."""
    ids: set[str] = set()
    names: set[str] = set()
    for folder in cfg.folders:
        rules = FolderRules(tuple(folder.include), tuple(folder.exclude))
        for target in mapped_targets(folder, rules, scanner.subdirectories(folder.path)):
            if target.project_id:
                ids.add(target.project_id)
            elif target.name:
                names.add(target.name)
    return ids | {p.project_id for p in found if p.name in names}
