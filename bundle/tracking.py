"""Where bundles are registered: can the MLflow store be reached and written, before any work is done?

A tracking server must answer a TCP connect; a SQLite store must take a write transaction (not
locked, not read-only); a local artifact folder must take a file. Each check returns a sentence
saying what is wrong, or None.
"""

from __future__ import annotations

import socket
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname


def tracking_server_problem(uri: str | None, timeout: float = 3.0) -> str | None:
    """Why an http(s) tracking URI cannot be reached (one TCP connect), or None.

    MLflow's own client retries an unreachable server with back-off for minutes; a service
    starting up or a training run should learn that at once instead.
    """
    parsed = urlparse(uri or "")
    if parsed.scheme not in ("http", "https"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout):
            return None
    except OSError as exc:
        return f"MLflow tracking server {parsed.scheme}://{parsed.hostname}:{port} is unreachable ({exc.strerror or exc})"


def sqlite_store_problem(uri: str | None, timeout: float = 2.0) -> str | None:
    """Why a `sqlite:///` tracking store cannot take a write now (locked, read-only, not a folder), or None.

    One write transaction is opened and rolled back (`BEGIN IMMEDIATE`), so a database that another
    process holds locked is found in `timeout` seconds instead of at the end of a training run.
    """
    if not (uri or "").startswith("sqlite:///"):
        return None
    path = Path(unquote(uri.removeprefix("sqlite:///").split("?", 1)[0]))
    path = path if path.is_absolute() else Path.cwd() / path
    folder = path.parent
    if not folder.is_dir():
        return f"the MLflow store's folder {folder} does not exist"
    if not path.exists():
        return folder_write_problem(folder, "the MLflow store's folder")
    try:
        connection = sqlite3.connect(path, timeout=timeout)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        reason = "locked by another process" if "locked" in str(exc) else "not writable"
        return f"the MLflow store {path} is {reason} ({exc})"
    return folder_write_problem(folder, "the MLflow store's folder")  # SQLite writes its journal beside it


def folder_write_problem(folder: Path, what: str) -> str | None:
    """Why a file cannot be created in `folder` (tried for real: permissions alone do not stop root), or None."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        return f"{what} {folder} is not writable ({exc.strerror or exc})"
    return None


def artifact_location_problem(location: str | None) -> str | None:
    """Why a local artifact location (file URI or path) cannot receive artifacts, or None (remote: the
    server's business). Missing folders are created, as MLflow would."""
    if not location:
        return None
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    folder = Path(url2pathname(parsed.path) if parsed.scheme == "file" else location)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"the MLflow artifact folder {folder} cannot be created ({exc.strerror or exc})"
    if not folder.is_dir():
        return f"the MLflow artifact folder {folder} is not a folder"
    return folder_write_problem(folder, "the MLflow artifact folder")
