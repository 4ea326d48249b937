"""Redis as the shared store of the scale-out mode (issue 14): v2 jobs with their inputs, the queue
order and attempt counts; API keys, credits and rate limits. Every replica of every host sees the
same state, and every read-modify-write is one Lua script, so that no interleaving of replicas can
double-spend a credit, run a job twice or lose one.

``RedisJobStore`` implements ``server.store.JobStore`` (the embedded engine can use it as is) and
adds what runners on other machines need: a job is handed out under a *dispatch token*, only the
holder of the current token may claim, complete or fail it, and the holder renews a *lease* while
it queues or runs the job. A job whose lease lapsed (its ingress or runner died) is taken over by
``reclaim``: a queued job is dispatched again, a running one is re-run up to the attempt limit and
then FAILED with the reason, the same semantics as a restart of the embedded server.

Layout (every name under ``prefix``): ``job:<id>`` hash (the SQLite columns, plus ``token``,
``runner``, ``cancel``), ``inputs:<id>`` hash (field → bytes), ``jobs:unfinished`` (created),
``queue:<slug>`` (created, QUEUED only), ``jobs:expires`` and ``jobs:leases`` sorted sets;
``runners:<slug>`` hash (replica → its last report); ``key:<id>`` hash, ``keyhash:<sha256>`` → id,
``keys`` set; ``rate:<id>`` sorted set of times.
Floats cross Lua only as the strings Python wrote (``repr``), never through Lua arithmetic, which
would round them to 14 digits.
"""
from __future__ import annotations

import dataclasses
import json
import secrets
import time
from dataclasses import asdict

import redis

from server.auth import ApiKey, hash_key
from server.jobs import COMPLETED, FAILED, PROCESSING, QUEUED, Job

DEFAULT_PREFIX = "facefoundry:"

# Column -> how its stored string reads back; the rows match SqliteJobStore's.
JOB_COLUMNS = {
    "id": str, "slug": str, "key_id": str, "status": str, "params": str, "seed": int, "fmt": str,
    "quality": int, "cost": float, "created": float, "deadline": float, "expires": float,
    "started": float, "finished": float, "attempts": int, "error": str, "result": str,
    "request_id": str, "webhook": str,
}

# KEYS: job, unfinished, queue, expires. ARGV: id, created, expires, then field/value pairs.
INSERT = """
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"""

# KEYS: job, leases, queue prefix. ARGV: id, token ('' = any), started, runner, lease until.
# The attempt count rises here, atomically with the state change (what a restart reads).
CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'QUEUED' then return false end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return false end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'PROCESSING', 'started', ARGV[3], 'runner', ARGV[4])
redis.call('ZREM', KEYS[3] .. redis.call('HGET', KEYS[1], 'slug'), ARGV[1])
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1]) end
return attempts
"""

# KEYS: job, queue prefix. ARGV: id, new token ('' keeps it). Back to the queue, in its old place.
REQUEUE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'QUEUED' and status ~= 'PROCESSING' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'QUEUED', 'runner', '')
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'token', ARGV[2]) end
local created = redis.call('HGET', KEYS[1], 'created')
redis.call('ZADD', KEYS[2] .. redis.call('HGET', KEYS[1], 'slug'), created, ARGV[1])
return 1
"""

# KEYS: job, unfinished, queue prefix, leases. ARGV: id, token ('' = any), status, finished,
# field, value. Ends a job once: 1 when this call ended it (the caller then settles its credits).
FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'QUEUED' and status ~= 'PROCESSING' then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished', ARGV[4], ARGV[5], ARGV[6], 'runner', '')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3] .. redis.call('HGET', KEYS[1], 'slug'), ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""

# KEYS: job, leases. ARGV: id, token, expected status, lease until. Only the current holder renews.
RENEW = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[3] then return 0 end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""

# KEYS: job, unfinished, queue prefix, leases. ARGV: id, now, new token, lease until, max
# attempts, finished, reason, expected token ('' = the lease must have lapsed instead).
# Takes over a job whose holder is gone: 'dispatch' (queued again, the caller now holds it under
# the new token), 'failed' (out of attempts: FAILED with the reason), or '' (nothing to take).
RECLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'QUEUED' and status ~= 'PROCESSING' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return ''
end
if ARGV[8] ~= '' then
  if redis.call('HGET', KEYS[1], 'token') ~= ARGV[8] then return '' end
else
  local lease = redis.call('ZSCORE', KEYS[4], ARGV[1])
  if lease and tonumber(lease) >= tonumber(ARGV[2]) then return '' end
end
local slug = redis.call('HGET', KEYS[1], 'slug')
if status == 'PROCESSING' and tonumber(redis.call('HGET', KEYS[1], 'attempts')) >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'status', 'FAILED', 'finished', ARGV[6], 'error', ARGV[7], 'runner', '')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3] .. slug, ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 'failed'
end
redis.call('HSET', KEYS[1], 'status', 'QUEUED', 'token', ARGV[3], 'runner', '')
redis.call('ZADD', KEYS[3] .. slug, redis.call('HGET', KEYS[1], 'created'), ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
return 'dispatch'
"""

# KEYS: job, unfinished, queue prefix, leases. ARGV: id, finished, message.
# A queued job ends at once; a running one is flagged for its runner's next stage boundary.
CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'QUEUED' then
  redis.call('HSET', KEYS[1], 'status', 'FAILED', 'finished', ARGV[2], 'error', ARGV[3], 'cancel', '1')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3] .. redis.call('HGET', KEYS[1], 'slug'), ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 'FAILED'
end
if status == 'PROCESSING' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  return 'PROCESSING'
end
return ''
"""

# KEYS: expires, unfinished, leases. ARGV: now, key prefix. Every job whose record expired.
EXPIRE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, id in ipairs(ids) do
  local slug = redis.call('HGET', ARGV[2] .. 'job:' .. id, 'slug')
  if slug then redis.call('ZREM', ARGV[2] .. 'queue:' .. slug, id) end
  redis.call('DEL', ARGV[2] .. 'job:' .. id, ARGV[2] .. 'inputs:' .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
return ids
"""

# KEYS: key hash. ARGV: amount. Check and debit in one step: 1 taken (or unlimited), 0 refused.
RESERVE = """
local credits = redis.call('HGET', KEYS[1], 'credits')
if not credits or credits == '' then return 1 end
if tonumber(credits) < tonumber(ARGV[1]) then return 0 end
redis.call('HINCRBYFLOAT', KEYS[1], 'credits', '-' .. ARGV[1])
return 1
"""

# KEYS: key hash. ARGV: amount, set_if_unlimited ('1': an unlimited key gets ``amount`` as its
# balance, as ``keys credit`` does; '0': it stays unlimited, as a refund does).
CREDIT = """
local credits = redis.call('HGET', KEYS[1], 'credits')
if not credits then return false end
if credits == '' then
  if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'credits', ARGV[1]) end
  return redis.call('HGET', KEYS[1], 'credits')
end
return redis.call('HINCRBYFLOAT', KEYS[1], 'credits', ARGV[1])
"""

# KEYS: the key's window. ARGV: now, now - 60, rpm, member. Sliding one-minute window: nil when
# admitted, else the oldest time in the window (the window frees up 60 s after it).
RATE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], 61)
return false
"""


def connect(url: str) -> redis.Redis:
    """A client of ``redis://host:port/db`` (bytes in, bytes out: inputs are binary)."""
    return redis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


def number(value: float) -> str:
    """A float as Redis keeps it: ``repr`` round-trips exactly."""
    return repr(float(value))


def job_row(fields: dict[bytes, bytes]) -> dict:
    """A stored job hash as the row SqliteJobStore returns (typed columns, None for unset)."""
    texts = {k.decode(): v.decode() for k, v in fields.items()}
    return {column: (kind(texts[column]) if texts.get(column, "") != "" else None)
            for column, kind in JOB_COLUMNS.items()} | {"attempts": int(texts.get("attempts") or 0)}


class RedisJobStore:
    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX):
        self.redis = client
        self.prefix = prefix
        self.unfinished_key = prefix + "jobs:unfinished"
        self.expires_key = prefix + "jobs:expires"
        self.leases_key = prefix + "jobs:leases"
        self.queue_prefix = prefix + "queue:"
        self._insert = client.register_script(INSERT)
        self._claim = client.register_script(CLAIM)
        self._requeue = client.register_script(REQUEUE)
        self._finish = client.register_script(FINISH)
        self._renew = client.register_script(RENEW)
        self._reclaim = client.register_script(RECLAIM)
        self._cancel = client.register_script(CANCEL)
        self._expire = client.register_script(EXPIRE)

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def inputs_key(self, job_id: str) -> str:
        return f"{self.prefix}inputs:{job_id}"

    def _ending_keys(self, job_id: str) -> list[str]:
        return [self.job_key(job_id), self.unfinished_key, self.queue_prefix, self.leases_key]

    # -- JobStore ---------------------------------------------------------------------------

    def insert(self, job: Job, expires: float, token: str = "") -> None:
        fields = {
            "id": job.id, "slug": job.slug, "key_id": job.key_id or "", "status": QUEUED,
            "params": json.dumps(dataclasses.asdict(job.params)), "seed": str(job.seed), "fmt": job.fmt,
            "quality": str(job.quality), "cost": number(job.cost), "created": number(job.created),
            "deadline": number(job.deadline), "expires": number(expires), "attempts": "0",
            "request_id": job.request_id or "",
            "webhook": json.dumps({"url": job.webhook, "base": job.public_base}) if job.webhook else "",
            "token": token,
        }
        pairs = [item for pair in fields.items() for item in pair]
        self._insert(keys=[self.job_key(job.id), self.unfinished_key, self.queue_prefix + job.slug,
                           self.expires_key], args=[job.id, number(job.created), number(expires), *pairs])

    def mark_processing(self, job_id: str, started: float) -> None:
        self.claim(job_id, "", started, runner="", lease_until=None)

    def requeue(self, job_id: str) -> None:
        self._requeue(keys=[self.job_key(job_id), self.queue_prefix], args=[job_id, ""])

    def complete(self, job_id: str, finished: float, result: dict, token: str = "") -> bool:
        return bool(self._finish(keys=self._ending_keys(job_id),
                                 args=[job_id, token, COMPLETED, number(finished), "result", json.dumps(result)]))

    def fail(self, job_id: str, finished: float, error: str, token: str = "") -> bool:
        """True when this call ended the job (its reservation is then refunded by the caller)."""
        return bool(self._finish(keys=self._ending_keys(job_id),
                                 args=[job_id, token, FAILED, number(finished), "error", error]))

    def get(self, job_id: str) -> dict | None:
        fields = self.redis.hgetall(self.job_key(job_id))
        return job_row(fields) if fields else None

    def unfinished(self) -> list[dict]:
        ids = [i.decode() for i in self.redis.zrange(self.unfinished_key, 0, -1)]
        rows = [self.get(job_id) for job_id in ids]
        return [row for row in rows if row is not None and row["status"] in (QUEUED, PROCESSING)]

    def expire(self, now: float) -> list[str]:
        ids = self._expire(keys=[self.expires_key, self.unfinished_key, self.leases_key],
                           args=[number(now), self.prefix])
        return [i.decode() for i in ids]

    def close(self) -> None:
        self.redis.close()

    # -- inputs -----------------------------------------------------------------------------

    def save_inputs(self, job_id: str, raw: dict[str, bytes], expires: float) -> None:
        if not raw:
            return
        key = self.inputs_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=raw)
            pipe.expireat(key, int(expires) + 1)
            pipe.execute()

    def read_inputs(self, job_id: str) -> dict[str, bytes]:
        return {k.decode(): v for k, v in self.redis.hgetall(self.inputs_key(job_id)).items()}

    def drop_inputs(self, job_id: str) -> None:
        self.redis.delete(self.inputs_key(job_id))

    # -- distributed running ----------------------------------------------------------------

    def claim(self, job_id: str, token: str, started: float, runner: str, lease_until: float | None) -> int | None:
        """QUEUED → PROCESSING for the holder of ``token`` (any holder when empty); the attempt
        number, or None when the job is not there to run (finished, cancelled, taken over)."""
        attempts = self._claim(keys=[self.job_key(job_id), self.leases_key, self.queue_prefix],
                               args=[job_id, token, number(started), runner,
                                     "" if lease_until is None else number(lease_until)])
        return int(attempts) if attempts is not None else None

    def renew(self, job_id: str, token: str, status: str, lease_until: float) -> bool:
        """Extend the lease of a job its caller holds in ``status``; False once it lost it."""
        return bool(self._renew(keys=[self.job_key(job_id), self.leases_key],
                                args=[job_id, token, status, number(lease_until)]))

    def reclaim(self, job_id: str, now: float, lease_until: float, max_attempts: int, reason: str,
                holder: str = "") -> tuple[str, str]:
        """Take over a job whose holder is gone: the one holding ``holder`` (it saw its runner
        die), or, without ``holder``, any whose lease lapsed before ``now``. Returns (action, new
        token): ``dispatch`` (queued under the new token, which the caller now holds),
        ``failed`` (its attempts are spent: FAILED with ``reason``), or ``""``."""
        token = new_token()
        action = self._reclaim(keys=self._ending_keys(job_id),
                               args=[job_id, number(now), token, number(lease_until), str(max_attempts),
                                     number(now), reason, holder])
        return action.decode(), token

    def lapsed(self, now: float) -> list[str]:
        """Unfinished jobs whose lease ran out before ``now``."""
        return [i.decode() for i in self.redis.zrangebyscore(self.leases_key, "-inf", f"({number(now)}")]

    def cancel(self, job_id: str, finished: float, message: str) -> str:
        """FAILED (it was queued: ended now), PROCESSING (its runner stops at its next stage
        boundary) or "" (already finished or unknown)."""
        return self._cancel(keys=self._ending_keys(job_id), args=[job_id, number(finished), message]).decode()

    def cancel_requested(self, job_id: str) -> bool:
        return self.redis.hget(self.job_key(job_id), "cancel") == b"1"

    def runner(self, job_id: str) -> str:
        return (self.redis.hget(self.job_key(job_id), "runner") or b"").decode()

    def depth(self, slug: str) -> int:
        """Queued v2 jobs of ``slug``."""
        return self.redis.zcard(self.queue_prefix + slug)

    # -- runner reports (what /ready shows in the Ray mode) -------------------------------------

    def report_runner(self, slug: str, runner: str, report: dict) -> None:
        self.redis.hset(f"{self.prefix}runners:{slug}", runner, json.dumps(report))

    def forget_runner(self, slug: str, runner: str) -> None:
        self.redis.hdel(f"{self.prefix}runners:{slug}", runner)

    def runner_reports(self, slug: str, since: float) -> dict[str, dict]:
        """The reports of ``slug``'s runners made after ``since``; older ones (a runner that died
        without a word) are dropped."""
        key = f"{self.prefix}runners:{slug}"
        reports = {name.decode(): json.loads(value) for name, value in self.redis.hgetall(key).items()}
        stale = [name for name, report in reports.items() if report["at"] < since]
        if stale:
            self.redis.hdel(key, *stale)
        return {name: report for name, report in reports.items() if report["at"] >= since}


def new_token() -> str:
    return secrets.token_hex(12)


class RedisKeyStore:
    """``server.auth.KeyStore``'s interface over Redis: the balance lives in one hash field that
    only Lua scripts change, so concurrent reservations on any number of replicas cannot overdraw.

    A presented key is looked up by its SHA-256 (``keyhash:<digest>``) instead of the file
    store's constant-time scan: the lookup's timing depends on the digest, which says nothing
    about the key's characters."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX):
        self.redis = client
        self.prefix = prefix
        self._reserve = client.register_script(RESERVE)
        self._credit = client.register_script(CREDIT)

    def _key(self, key_id: str) -> str:
        return f"{self.prefix}key:{key_id}"

    def _read(self, key_id: str) -> ApiKey | None:
        fields = {k.decode(): v.decode() for k, v in self.redis.hgetall(self._key(key_id)).items()}
        if not fields:
            return None
        return ApiKey(id=fields["id"], hash=fields["hash"], hint=fields["hint"],
                      credits=float(fields["credits"]) if fields["credits"] else None,
                      models=json.loads(fields["models"]) if fields["models"] else None,
                      rpm=int(fields["rpm"]) if fields["rpm"] else None,
                      revoked=fields["revoked"] == "1", created=float(fields["created"]))

    def _id_of(self, key: str) -> str | None:
        """The id of ``key`` given as the key itself or as its id."""
        found = self.redis.get(f"{self.prefix}keyhash:{hash_key(key)}")
        if found is not None:
            return found.decode()
        return key if self.redis.exists(self._key(key)) else None

    def find(self, key: str) -> ApiKey | None:
        found = self.redis.get(f"{self.prefix}keyhash:{hash_key(key)}")
        entry = self._read(found.decode()) if found is not None else None
        return None if entry is None or entry.revoked else entry

    def get(self, key_id: str) -> ApiKey | None:
        return self._read(key_id)

    def all(self) -> list[ApiKey]:
        ids = sorted(i.decode() for i in self.redis.smembers(self.prefix + "keys"))
        return [entry for entry in map(self._read, ids) if entry is not None]

    def add(self, key: str, credits: float | None = None, models: list[str] | None = None,
            rpm: int | None = None) -> ApiKey:
        digest = hash_key(key)
        entry = ApiKey(id=digest[:12], hash=digest, hint=key[:5] + "…", credits=credits, models=models, rpm=rpm)
        if not self.redis.set(f"{self.prefix}keyhash:{digest}", entry.id, nx=True):
            raise ValueError("this key is already in the key store")
        self.redis.hset(self._key(entry.id), mapping=key_fields(entry))
        self.redis.sadd(self.prefix + "keys", entry.id)
        return entry

    def import_entry(self, entry: ApiKey) -> bool:
        """Copy a key of the keys file (hash only) unless it is already here."""
        if not self.redis.set(f"{self.prefix}keyhash:{entry.hash}", entry.id, nx=True):
            return False
        self.redis.hset(self._key(entry.id), mapping=key_fields(entry))
        self.redis.sadd(self.prefix + "keys", entry.id)
        return True

    def revoke(self, key: str) -> ApiKey:
        key_id = self._id_of(key)
        if key_id is None:
            raise KeyError("no such key")
        self.redis.hset(self._key(key_id), "revoked", "1")
        return self._read(key_id)

    def credit(self, key: str, amount: float) -> ApiKey:
        key_id = self._id_of(key)
        if key_id is None:
            raise KeyError("no such key")
        self._credit(keys=[self._key(key_id)], args=[number(amount), "1"])
        return self._read(key_id)

    def reserve(self, key_id: str, amount: float) -> bool:
        return bool(self._reserve(keys=[self._key(key_id)], args=[number(amount)]))

    def refund(self, key_id: str, amount: float) -> None:
        self._credit(keys=[self._key(key_id)], args=[number(amount), "0"])


def key_fields(entry: ApiKey) -> dict[str, str]:
    values = asdict(entry)
    return {
        "id": entry.id, "hash": entry.hash, "hint": entry.hint,
        "credits": "" if entry.credits is None else number(entry.credits),
        "models": "" if entry.models is None else json.dumps(values["models"]),
        "rpm": "" if entry.rpm is None else str(entry.rpm),
        "revoked": "1" if entry.revoked else "0", "created": number(entry.created),
    }


class RedisRateLimiter:
    """``server.auth.RateLimiter``'s sliding one-minute window, shared by every replica."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX):
        self.prefix = prefix
        self._rate = client.register_script(RATE)

    def admit(self, key_id: str, rpm: int, now: float | None = None) -> float | None:
        now = time.time() if now is None else now
        oldest = self._rate(keys=[f"{self.prefix}rate:{key_id}"],
                            args=[number(now), number(now - 60), str(rpm), f"{number(now)}:{new_token()}"])
        return None if oldest is None else float(oldest) + 60
