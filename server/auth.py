"""API keys: a JSON file of hashed keys with credits, allowed models and a requests-per-minute cap.

Keys are random secrets (generated, or chosen by the operator and refused by ``key_weakness``
when guessable), so one SHA-256 per key is enough (no password stretching needed); they are
compared in constant time. The server and ``facefoundry keys``
share the file: every use is a read (and, for changes, a write) under an exclusive lock, so
credits added from the CLI apply at once.
"""
from __future__ import annotations

import collections
import fcntl
import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from server.datafiles import PRIVATE_FILE, make_private_parent, write_private
from server.errors import INSUFFICIENT_CREDITS, INVALID_KEY, MISSING_KEY, ApiError
from server.settings import Settings


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEY_PREFIX = "SG_"
# What a generated key carries (SG_ + 16 random hex digits): at 10^10 SHA-256 guesses a second,
# a stolen keys file still takes decades to invert, and online guessing is hopeless.
MIN_KEY_BITS = 64
MAX_KEY_CHARS = 256
HEX_DIGITS = frozenset("0123456789abcdef")


def new_key() -> str:
    """A key in Segmind's format: ``SG_`` + 16 hex characters (segmind-api.md §3 "Key format")."""
    return KEY_PREFIX + secrets.token_hex(8)


def alphabet_size(text: str) -> int:
    """How many symbols each character of ``text`` was plausibly drawn from."""
    if set(text.lower()) <= HEX_DIGITS and (text.islower() or text.isupper() or text.isdigit()):
        return 10 if text.isdigit() else 16
    size = 0
    size += 26 if any(c.islower() for c in text) else 0
    size += 26 if any(c.isupper() for c in text) else 0
    size += 10 if any(c.isdigit() for c in text) else 0
    size += 33 if any(not c.isalnum() for c in text) else 0
    return size


def is_predictable(text: str, i: int) -> bool:
    """Whether ``text[i]`` follows from what precedes it: the 4th+ character of a run (aaaa,
    1234, dcba), or one that completes a third repeat of a 2-4 character block (ababab)."""
    if i >= 3:
        steps = {ord(text[j]) - ord(text[j - 1]) for j in range(i - 2, i + 1)}
        if len(steps) == 1 and abs(steps.pop()) <= 1:
            return True
    for period in (2, 3, 4):
        start = i + 1 - 3 * period
        if start >= 0 and text[start:start + period] == text[start + period:start + 2 * period] \
                == text[start + 2 * period:i + 1]:
            return True
    return False


def estimated_key_bits(key: str) -> float:
    """A conservative entropy estimate: log2(alphabet) per character that is not predictable
    from the ones before it; the ``SG_`` prefix carries none."""
    body = key.removeprefix(KEY_PREFIX)
    if not body:
        return 0.0
    per_character = math.log2(alphabet_size(body))
    return per_character * sum(not is_predictable(body, i) for i in range(len(body)))


def key_weakness(key: str) -> str | None:
    """Why ``key`` may not be used as an API key, or None when it is strong enough."""
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        return "an API key must be printable ASCII without spaces (it travels in an HTTP header)"
    if len(key) > MAX_KEY_CHARS:
        return f"an API key may be at most {MAX_KEY_CHARS} characters long"
    bits = estimated_key_bits(key)
    if bits < MIN_KEY_BITS:
        return (f"this key is too easy to guess (about {bits:.0f} bits of entropy, {MIN_KEY_BITS} needed): "
                "use at least 16 random characters, or leave KEY out and one will be generated")
    return None


@dataclass
class ApiKey:
    id: str  # the hash's first 12 hex digits: enough to name a key in logs, useless to an attacker
    hash: str
    hint: str
    credits: float | None = None  # None: unlimited
    models: list[str] | None = None  # None: every model
    rpm: int | None = None  # None: no cap
    revoked: bool = False
    created: float = field(default_factory=time.time)


class KeyStore:
    """The keys file, shared between the server and the ``facefoundry keys`` commands."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}

    @contextmanager
    def _exclusive(self):
        make_private_parent(self.path)
        lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
        with self._lock, os.fdopen(lock_fd, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                self._reload()
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _reload(self) -> None:
        # Re-read on every use (the file is small): an mtime check could miss a CLI edit made
        # within the filesystem's timestamp granularity of a server write.
        try:
            data = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            data = {}
        self._keys = {k["id"]: ApiKey(**k) for k in data.get("keys", [])}

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        write_private(tmp, json.dumps({"keys": [asdict(k) for k in self._keys.values()]}, indent=2).encode())
        os.replace(tmp, self.path)

    def _match(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        found = None
        # No early exit: every stored hash is compared, so timing says nothing about which matched.
        for entry in self._keys.values():
            if hmac.compare_digest(entry.hash, digest):
                found = entry
        return found

    def find(self, key: str) -> ApiKey | None:
        with self._exclusive():
            entry = self._match(key)
            return None if entry is None or entry.revoked else entry

    def get(self, key_id: str) -> ApiKey | None:
        with self._exclusive():
            return self._keys.get(key_id)

    def all(self) -> list[ApiKey]:
        with self._exclusive():
            return list(self._keys.values())

    def add(self, key: str, credits: float | None = None, models: list[str] | None = None,
            rpm: int | None = None) -> ApiKey:
        with self._exclusive():
            if self._match(key) is not None:
                raise ValueError("this key is already in the keys file")
            digest = hash_key(key)
            entry = ApiKey(id=digest[:12], hash=digest, hint=key[:5] + "…", credits=credits,
                           models=models, rpm=rpm)
            self._keys[entry.id] = entry
            self._save()
            return entry

    def revoke(self, key: str) -> ApiKey:
        with self._exclusive():
            entry = self._match(key) or self._keys.get(key)
            if entry is None:
                raise KeyError("no such key")
            entry.revoked = True
            self._save()
            return entry

    def credit(self, key: str, amount: float) -> ApiKey:
        """Add ``amount`` credits (negative to remove); a key with unlimited credits gets a balance."""
        with self._exclusive():
            entry = self._match(key) or self._keys.get(key)
            if entry is None:
                raise KeyError("no such key")
            entry.credits = (entry.credits or 0.0) + amount
            self._save()
            return entry

    def reserve(self, key_id: str, amount: float) -> bool:
        """Take ``amount`` from the balance if it is there (check and debit under one lock, so
        concurrent calls cannot overdraw); True when taken or the key is unlimited."""
        with self._exclusive():
            entry = self._keys.get(key_id)
            if entry is None or entry.credits is None:
                return True
            if entry.credits < amount:
                return False
            entry.credits -= amount
            self._save()
            return True

    def refund(self, key_id: str, amount: float) -> None:
        """Give back a reservation whose call did not succeed."""
        with self._exclusive():
            entry = self._keys.get(key_id)
            if entry is not None and entry.credits is not None:
                entry.credits += amount
                self._save()


@dataclass(frozen=True)
class Caller:
    """Who made a request: a key's id, or None when auth is off."""

    key_id: str | None


class RateLimiter:
    """Sliding one-minute window of submissions per key."""

    def __init__(self):
        self._lock = threading.Lock()
        self._times: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def admit(self, key_id: str, rpm: int, now: float | None = None) -> float | None:
        """Record a request and return None, or refuse it and return when the window frees up."""
        now = time.time() if now is None else now
        with self._lock:
            window = self._times[key_id]
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= rpm:
                return window[0] + 60
            window.append(now)
            return None


def presented_key(headers) -> str | None:
    """The key from ``x-api-key`` or ``Authorization: Bearer`` (segmind-api.md §1, item 6)."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class Gatekeeper:
    """Authentication, per-key model access, rate limits and credits, as the routes need them."""

    def __init__(self, settings: Settings, store: KeyStore, limiter: RateLimiter | None = None):
        self.settings = settings
        self.store = store  # or server.redis_store.RedisKeyStore, with the same methods
        self.limiter = limiter or RateLimiter()

    def authenticate(self, headers) -> Caller:
        if self.settings.no_auth:
            return Caller(None)
        key = presented_key(headers)
        if key is None:
            raise ApiError(401, MISSING_KEY)
        entry = self.store.find(key)
        if entry is None:
            raise ApiError(401, INVALID_KEY)
        return Caller(entry.id)

    def admit(self, caller: Caller, slug: str, cost: float) -> None:
        """Refuse a submission the key may not make: model (403), rate (429), credits (406)."""
        if caller.key_id is None:
            return
        entry = self.store.get(caller.key_id)
        if entry is None or entry.revoked:
            raise ApiError(401, INVALID_KEY)
        if entry.models is not None and slug not in entry.models:
            raise ApiError(403, f"this API key is not allowed to use {slug}")
        if entry.rpm is not None:
            reset_at = self.limiter.admit(entry.id, entry.rpm)
            if reset_at is not None:
                stamp = datetime.fromtimestamp(reset_at, timezone.utc).isoformat(timespec="seconds")
                raise ApiError(
                    429,
                    f"rate limit of {entry.rpm} requests per minute exceeded; retry after {stamp}",
                    {"x-rate-limit-reset-at-utc": stamp, "Retry-After": str(max(1, math.ceil(reset_at - time.time())))},
                )
        if entry.credits is not None and entry.credits < cost:
            raise ApiError(406, INSUFFICIENT_CREDITS)

    def remaining(self, caller: Caller) -> float:
        return self.balance(caller.key_id)

    def balance(self, key_id: str | None) -> float:
        """The key's credits for X-remaining-credits (the unmetered figure when unlimited or no auth)."""
        if key_id is None:
            return self.settings.unmetered_credits
        entry = self.store.get(key_id)
        if entry is None or entry.credits is None:
            return self.settings.unmetered_credits
        return entry.credits

    def reserve(self, caller: Caller, cost: float) -> None:
        """Hold a call's cost before it is queued (406 when the balance cannot cover it); the
        engine keeps it when the call succeeds and refunds it otherwise."""
        if caller.key_id is not None and not self.store.reserve(caller.key_id, cost):
            raise ApiError(406, INSUFFICIENT_CREDITS)

    def refund(self, key_id: str | None, cost: float) -> None:
        if key_id is not None:
            self.store.refund(key_id, cost)
