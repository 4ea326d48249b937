"""Where keys, rate limits and v2 jobs live: the keys file, in-process windows and SQLite on one
box; Redis when ``store`` names one (issue 14), so that every replica shares them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.auth import KeyStore, RateLimiter
from server.settings import Settings

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class Backend:
    keys: Any  # KeyStore or RedisKeyStore
    limiter: Any  # RateLimiter or RedisRateLimiter
    jobs: Any  # a JobStore; None: the engine opens the SQLite store at settings.job_store


def open_backend(settings: Settings) -> Backend:
    if not settings.store:
        return Backend(KeyStore(settings.keys_file), RateLimiter(), None)
    if not settings.store.startswith(REDIS_SCHEMES):
        raise ValueError(f"store must be a Redis URL ({', '.join(REDIS_SCHEMES)}…), not {settings.store!r}")
    from server.redis_store import RedisJobStore, RedisKeyStore, RedisRateLimiter, connect

    client = connect(settings.store)
    return Backend(RedisKeyStore(client), RedisRateLimiter(client), RedisJobStore(client))
