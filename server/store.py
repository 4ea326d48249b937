"""Where v2 jobs live: a small interface (``JobStore``) and its SQLite implementation.

The engine only uses the methods of ``JobStore``, so another backend (the scale-out issue's
Redis) replaces SQLite without touching it. A row is a plain dict with the columns below.
"""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from server.jobs import COMPLETED, FAILED, PROCESSING, QUEUED, Job


class JobStore(Protocol):
    def insert(self, job: Job, expires: float) -> None: ...
    def mark_processing(self, job_id: str, started: float) -> None: ...
    def requeue(self, job_id: str) -> None: ...
    def complete(self, job_id: str, finished: float, result: dict) -> None: ...
    def fail(self, job_id: str, finished: float, error: str) -> None: ...
    def get(self, job_id: str) -> dict | None: ...
    def unfinished(self) -> list[dict]: ...
    def expire(self, now: float) -> list[str]: ...
    def close(self) -> None: ...


class SqliteJobStore:
    """The v2 jobs in SQLite; one connection guarded by a lock (writes are small and rare).
    ``webhook`` holds ``{"url", "base"}`` as JSON."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, slug TEXT NOT NULL, key_id TEXT, status TEXT NOT NULL,
        params TEXT NOT NULL, seed INTEGER NOT NULL, fmt TEXT NOT NULL, quality INTEGER NOT NULL,
        cost REAL NOT NULL, created REAL NOT NULL, deadline REAL NOT NULL, expires REAL NOT NULL,
        started REAL, finished REAL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, result TEXT,
        request_id TEXT, webhook TEXT
    )"""
    # Columns added after the first release, added to an older file on open.
    ADDED_COLUMNS = {"request_id": "TEXT", "webhook": "TEXT"}

    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(self.SCHEMA)
        present = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in self.ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    def _run(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def insert(self, job: Job, expires: float) -> None:
        self._run(
            "INSERT INTO jobs (id, slug, key_id, status, params, seed, fmt, quality, cost, created,"
            " deadline, expires, request_id, webhook) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.slug, job.key_id, QUEUED, json.dumps(dataclasses.asdict(job.params)), job.seed,
             job.fmt, job.quality, job.cost, job.created, job.deadline, expires, job.request_id,
             json.dumps({"url": job.webhook, "base": job.public_base}) if job.webhook else None),
        )

    def mark_processing(self, job_id: str, started: float) -> None:
        self._run("UPDATE jobs SET status=?, started=?, attempts=attempts+1 WHERE id=?",
                  (PROCESSING, started, job_id))

    def requeue(self, job_id: str) -> None:
        self._run("UPDATE jobs SET status=? WHERE id=?", (QUEUED, job_id))

    def complete(self, job_id: str, finished: float, result: dict) -> None:
        self._run("UPDATE jobs SET status=?, finished=?, result=? WHERE id=?",
                  (COMPLETED, finished, json.dumps(result), job_id))

    def fail(self, job_id: str, finished: float, error: str) -> None:
        self._run("UPDATE jobs SET status=?, finished=?, error=? WHERE id=?",
                  (FAILED, finished, error, job_id))

    def get(self, job_id: str) -> dict | None:
        rows = self._run("SELECT * FROM jobs WHERE id=?", (job_id,))
        return dict(rows[0]) if rows else None

    def unfinished(self) -> list[dict]:
        rows = self._run("SELECT * FROM jobs WHERE status IN (?, ?) ORDER BY created", (QUEUED, PROCESSING))
        return [dict(row) for row in rows]

    def expire(self, now: float) -> list[str]:
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE expires < ?", (now,))]
            self._db.execute("DELETE FROM jobs WHERE expires < ?", (now,))
        return ids

    def close(self) -> None:
        with self._lock:
            self._db.close()
