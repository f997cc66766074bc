"""``florasync demo``: florasync end to end against a built-in sandbox, no account needed.

Owns the guided tour: start a sandbox, write sample images into three folders (one mapped by
project id, one by project name, one whose subfolders are projects), run ``check``,
``projects`` and ``run --scan``, copy a file into another project's folder (reused, only
attached), add a subfolder (a new project), rescan (nothing to do), print what landed where,
then start the daemon with its control page (issue 16) and print the page's URL: with ``--keep``
it stays up for a look until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import yaml

from florasync.commands import check, projects, run, status
from florasync.errors import ExitCode
from florasync.sandbox import Sandbox


def run_from_args(args: argparse.Namespace) -> ExitCode:
    return demo(files=args.files, keep=args.keep)


def demo(*, files: int = 12, keep: bool = False) -> ExitCode:
    """Run the tour; returns the exit code of the first sync."""
    workdir = Path(tempfile.mkdtemp(prefix="florasync-demo-"))
    try:
        with Sandbox() as sb:
            os.environ["FLORA_API_KEY"] = sb.api_key  # this process only: never on argv
            code = _tour(sb, workdir, max(2, files))
            _show_page(workdir / "florasync.yaml", keep=keep)
            return code
    finally:
        if keep:
            print(f"\ndemo files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _tour(sb: Sandbox, workdir: Path, files: int) -> ExitCode:
    spring, shots, campaigns = (
        workdir / d for d in ("spring-campaign", "product-shots", "campaigns")
    )
    names = sb.project_names()
    folders: list[dict[str, Any]] = [
        {"path": str(spring), "project_id": sb.project_ids[0]},
        {"path": str(shots), "project": {"name": names[sb.project_ids[1]]}},
        {"path": str(campaigns), "projects_from_subfolders": True},
    ]
    config_path = _write_config(workdir, sb, folders)
    places = (spring, shots, campaigns / "Autumn Launch", campaigns / "Lookbook 2027")
    for n in range(files):
        _write_png(places[n % len(places)] / f"render-{n:03d}.png", seed=n)
    cfg = str(config_path)
    _title(f"sandbox at {sb.base_url}; {files} sample images in {workdir}")
    _title(f"florasync check -c {config_path.name}")
    if (code := check.check(config_path=cfg)) != ExitCode.OK:
        return code
    _title("florasync projects")
    projects.projects(config_path=cfg, as_json=False)
    _title("florasync run --scan")
    code = run.scan(config_path=cfg)
    _title("same bytes copied into another project's folder: reused, only attached")
    shutil.copy2(spring / "render-000.png", shots / "copy-of-render-000.png")
    run.scan(config_path=cfg)
    _title("a new subfolder of campaigns/: a new project of its name, created once")
    _write_png(campaigns / "Winter Teaser" / "teaser.png", seed=files)
    run.scan(config_path=cfg)
    _title("rescan: nothing changed, nothing sent")
    run.scan(config_path=cfg)
    _title("florasync status")
    status.status(config_path=cfg, as_json=False)
    _title("what landed in FLORA (the sandbox's view)")
    _print_landed(sb)
    return code


def _show_page(config_path: Path, *, keep: bool) -> None:
    """The daemon on the demo's folders, with its control page: its URL and token, and with
    ``keep`` up until Ctrl-C."""
    from florasync.config import runtime
    from florasync.service.control import access, endpoint
    from florasync.service.control.client import Client
    from florasync.service.daemon import Daemon

    rt = runtime.load(str(config_path))
    daemon = Daemon(rt, grace_seconds=5.0)
    thread = threading.Thread(target=daemon.run, name="florasync-demo-daemon", daemon=True)
    thread.start()
    try:
        found = None
        deadline = time.monotonic() + 30
        while found is None and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
            found = endpoint.read(rt.cfg.state_dir)
        if found is None:
            print("the daemon did not start its control page; see the log above")
            return
        _title("florasync run: the daemon, with its control page (control: {listen: ...})")
        live = Client(found["url"], None).get("status")
        print(f"control page: {found['url']}  ({live['totals']['synced']} files synced)")
        print(f"token for Pause/Retry: {access.read_token(rt.cfg.state_dir)}")
        if keep:
            print("the daemon keeps running for a look: open the page; Ctrl-C stops it", flush=True)
            previous = signal.signal(signal.SIGTERM, lambda *_: daemon.request_stop())
            try:
                while thread.is_alive():
                    thread.join(0.5)
            finally:
                signal.signal(signal.SIGTERM, previous)
        else:
            print("(florasync demo --keep leaves it running for a look)")
    except KeyboardInterrupt:
        pass
    finally:
        daemon.request_stop()
        thread.join(30)


def _write_config(workdir: Path, sb: Sandbox, folders: list[dict[str, Any]]) -> Path:
    doc = {
        "api": {"base_url": sb.base_url},
        "workspace_id": sb.workspace_id,
        "state_dir": str(workdir / "state"),
        "workers": 4,
        "control": {"listen": "127.0.0.1:0"},
        "folders": folders,
    }
    for folder in folders:
        Path(folder["path"]).mkdir(parents=True, exist_ok=True)
    config_path = workdir / "florasync.yaml"
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config_path


def _print_landed(sb: Sandbox) -> None:
    state = sb.state()
    names = {p["project_id"]: p["name"] for p in state["projects"]}
    assets = {a["asset_id"]: a for a in state["assets"]}
    for project_id, nodes in sorted(state["nodes"].items()):
        print(f"{project_id} {names.get(project_id, '')!r}: {len(nodes)} node(s)")
        for node in nodes:
            asset = assets.get(node["asset_id"], {})
            print(f"  {node['node_id']}  {asset.get('name')}  {asset.get('size_bytes')} bytes"
                  f"  {asset.get('status')}  {node.get('url')}")  # fmt: skip
    print(f"assets in the workspace: {len(assets)} (one per distinct content)")


def _title(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _write_png(path: Path, *, seed: int, size: int = 64) -> None:
    """A small real PNG (a colour gradient), so the demo's files open in any viewer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    r, g, b = (seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256
    rows = b"".join(
        b"\x00" + bytes(c for x in range(size) for c in (r, (g + x * 3) % 256, (b + y * 3) % 256))
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(png + chunk(b"IEND", b""))
