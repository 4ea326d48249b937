"""The data directory is readable by the server's user only: directories 0700, files 0600.

Results, fetched inputs, the job store and the key hashes belong to the API's callers; any
other local user (another service on the same host) must not read them (issue 13, "Files").
Explicit modes rather than a process umask: they hold however the server is started (CLI,
``uvicorn --factory``, tests) and do not change the mode of files other code creates.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from server.settings import Settings

log = logging.getLogger("facefoundry")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# SQLite creates its -wal and -shm files with the database file's mode.
JOB_STORE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents as 0700 (``Path.mkdir`` gives parents the
    default mode), and tighten ``path`` itself to 0700."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    os.chmod(missing[0] if missing else path, PRIVATE_DIR)


def make_private_parent(path: Path) -> None:
    """Create the folder that holds ``path`` as 0700 when it is missing. An existing one may be
    shared (a home directory, the working directory), so its mode is left alone."""
    if not Path(path).parent.exists():
        make_private_dir(Path(path).parent)


def warn_if_listable(folder: Path) -> None:
    if folder.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s can be listed by other users; the data files in it are 0600, but a 0700 "
                    "directory also hides their names", folder)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that is 0600 from the moment it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), PRIVATE_FILE)
        out.write(data)


def make_private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 if missing, else tighten it to 0600."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    os.chmod(path, PRIVATE_FILE)


def secure_data_paths(settings: Settings) -> None:
    """Before the job store opens: private directories for results and inputs, and the job
    store and keys file 0600 (created empty so that SQLite's companions inherit the mode)."""
    make_private_dir(settings.outputs_dir)
    make_private_dir(settings.inputs_dir)
    for path in (settings.job_store, settings.keys_file):
        make_private_parent(path)
        warn_if_listable(path.parent)
    for suffix in JOB_STORE_COMPANIONS:
        companion = settings.job_store.with_name(settings.job_store.name + suffix)
        if suffix == "" or companion.exists():
            make_private_file(companion)
    for path in (settings.keys_file, settings.keys_file.with_name(settings.keys_file.name + ".lock")):
        if path.exists():
            os.chmod(path, PRIVATE_FILE)
    for folder in (settings.outputs_dir, settings.inputs_dir):
        for entry in folder.rglob("*"):
            os.chmod(entry, PRIVATE_DIR if entry.is_dir() else PRIVATE_FILE)
