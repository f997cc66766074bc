"""``florasync projects``: list the workspace's projects, to write folder mappings.

Owns the table / JSON rendering of the project list; read-only.
"""

from __future__ import annotations

import argparse
import json

from florasync.config import runtime
from florasync.errors import ExitCode


def run_from_args(args: argparse.Namespace) -> ExitCode:
    return projects(config_path=args.config, as_json=args.json)


def projects(*, config_path: str | None, as_json: bool) -> ExitCode:
    """Print every project of the configured workspace (id and name)."""
    rt = runtime.load(config_path)
    with rt.client() as client:
        found = list(client.list_projects(rt.cfg.workspace_id))
    mapped = {f.project_id for f in rt.cfg.folders}
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
