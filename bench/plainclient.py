"""The floor of ``bench cpu``: a plain client doing florasync's four requests per file.

``python bench/plainclient.py LIST`` with the sandbox's coordinates in the environment
(PLAIN_BASE_URL, PLAIN_WORKSPACE, PLAIN_PROJECT, FLORA_API_KEY, PLAIN_DB). What a developer
would write with the same libraries and no care for speed or for the promises: a thread pool of
``requests.Session``s, blake3 of each file, a SQLite (WAL) journal with a row written before
each mutating request, reserve / upload / complete / attach. No retries, no stat cache, no
settle, no symlink checks: whatever florasync spends beyond this is the price of its promises.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import requests

WORKERS = 4
_local = threading.local()
_db_lock = threading.Lock()


def main(list_file: str) -> int:
    paths = Path(list_file).read_text().splitlines()
    db = sqlite3.connect(os.environ["PLAIN_DB"], check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE IF NOT EXISTS steps (digest TEXT, step TEXT, value TEXT)")
    with ThreadPoolExecutor(WORKERS) as pool:
        done = sum(1 for ok in pool.map(lambda p: _sync(p, db), paths) if ok)
    return 0 if done == len(paths) else 1


def _sessions() -> tuple[requests.Session, requests.Session]:
    """This thread's API session (with the key) and upload session (without it)."""
    if not hasattr(_local, "api"):
        _local.api, _local.upload = requests.Session(), requests.Session()
        _local.api.headers["Authorization"] = f"Bearer {os.environ['FLORA_API_KEY']}"
    return _local.api, _local.upload


def _note(db: sqlite3.Connection, digest: str, step: str, value: str) -> None:
    with _db_lock:
        db.execute("INSERT INTO steps VALUES (?, ?, ?)", (digest, step, value))


def _sync(path: str, db: sqlite3.Connection) -> bool:
    base = os.environ["PLAIN_BASE_URL"]
    s, uploads = _sessions()
    data = Path(path).read_bytes()
    digest = blake3.blake3(data).hexdigest()
    name = Path(path).name
    _note(db, digest, "reserve", "")
    body = {"source": "signed-url", "workspace_id": os.environ["PLAIN_WORKSPACE"],
            "file_name": name, "content_type": "image/png"}  # fmt: skip
    asset = s.post(f"{base}/assets", json=body, headers={"Idempotency-Key": f"r-{digest}"}).json()
    up = asset["upload"]
    files = {up.get("file_field", "file"): (name, data, "image/png")}
    uploads.post(up["url"], data=up["form_fields"], files=files).raise_for_status()
    _note(db, digest, "uploaded", asset["asset_id"])
    s.post(f"{base}/assets/{asset['asset_id']}/complete").raise_for_status()
    project = os.environ["PLAIN_PROJECT"]
    _note(db, digest, "attach", project)
    url = f"{base}/projects/{project}/assets/{asset['asset_id']}/attach"
    return s.post(url, headers={"Idempotency-Key": f"a-{digest}"}).ok


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
