"""Per-portal REST rate limiting shared by every process: a GCRA leaky bucket plus the operating guard.

Bitrix24 counts requests per portal (and per source IP) in a leaky bucket: burst X, drain Y/s
(`Portal.rest_rate_limit`: (2/s, 50), Enterprise (5/s, 250)). We run below it by `B24_RATE_HEADROOM`
(default 0.8) because other apps on our egress IP fill the same bucket. One permit = one HTTP request:
a batch of 50 commands costs one.

Why a Lua GCRA and not a library: `limits` (the maintained choice on PyPI) only offers fixed, moving and
sliding windows (no leaky bucket with a fractional rate such as 1.6/s and a burst), and no library
offers "push the bucket forward so every process slows down" after a 503. GCRA stores one number per
portal (the theoretical arrival time, TAT) and is ~20 lines of Lua, atomic in Redis, on Redis's clock.

`acquire(portal, max_wait)` *reserves* the next slot when it is at most `max_wait` seconds away and returns
how long to sleep before sending; otherwise it reserves nothing and raises `B24RateLimited(retry_after=...)`.
Reserving (instead of "try, fail, poll") keeps many processes in a fair queue without a thundering herd.

Without REDIS_URL (embedded dev defaults, one machine) the same algorithm runs on a JSON file per portal
under `var/ratelimit/`, serialised by `fcntl.flock`, so web, worker and beat processes still share it.

The operating guard: Bitrix24 reports each method's running total of execution seconds (`time.operating`,
10-minute window) and `operating_reset_at`. We keep the latest value per (portal, method) in the cache
(overwritten, never summed) and defer a method above `B24_OPERATING_DEFER_RATIO` (0.85) of
`B24_OPERATING_LIMIT` (480 s) until its reset time.

Time: every reading and every wait for a permit go through one injectable `TimeSource` (`now()`,
`sleep()`). By default it is the wall clock, and the Lua script reads Redis `TIME`; `use_time_source(src)`
(tests, benchmarks) swaps it, and the script is then handed `src.now()` instead of reading Redis `TIME`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.core.cache import cache

from b24portal.redis import get_redis

from .errors import B24OperationLimit, B24RateLimited

if TYPE_CHECKING:
    from tenants.models import Portal

logger = logging.getLogger(__name__)

KEY_PREFIX = "b24:rl:"
OPERATING_PREFIX = "b24:op:"
# The operating window is 10 minutes; keep the last figure a little longer than that.
OPERATING_TTL = 15 * 60


class TimeSource(Protocol):
    """Unix seconds and a way to wait for them (`tests.fakes.clock.Clock` is one)."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class WallClock:
    """The default time source: `time.time()` and `time.sleep()`."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_WALL = WallClock()
# None: the wall clock here and Redis TIME in the Lua script (one clock for every host).
_time_source: TimeSource | None = None


def use_time_source(source: TimeSource | None) -> TimeSource | None:
    """Read and wait on `source` from now on (None: back to the wall clock and Redis TIME). Returns the
    previous source, so a caller can put it back."""
    global _time_source
    previous, _time_source = _time_source, source
    return previous


def now() -> float:
    """Unix seconds on the limiter's time source."""
    return (_time_source or _WALL).now()


def sleep(seconds: float) -> None:
    """Wait `seconds` on the limiter's time source (the wait `acquire()` asked for, an operating window)."""
    if seconds > 0:
        (_time_source or _WALL).sleep(seconds)


@dataclass(frozen=True)
class Bucket:
    """Our share of a portal's leaky bucket: `rate` permits per second, `burst` permits at once."""

    rate: float
    burst: int

    @property
    def interval(self) -> float:
        return 1.0 / self.rate


def bucket_for(portal: Portal) -> Bucket:
    """The portal's plan limit scaled by the headroom (never below one permit)."""
    rate, burst = portal.rest_rate_limit
    headroom = float(settings.B24_RATE_HEADROOM)
    return Bucket(rate=max(rate * headroom, 0.01), burst=max(math.floor(burst * headroom), 1))


# KEYS[1] = bucket key; ARGV = interval, burst, max_wait, penalty[, now]. Time from Redis (same clock for every
# host) unless a `now` is passed (an injected time source, see use_time_source).
# TAT is the time the bucket would be empty. A request may go at allow_at = TAT + interval - burst*interval.
# penalty >= 0: no permit is taken; the bucket is marked full from now and `penalty` seconds more.
_GCRA_LUA = """
local now = tonumber(ARGV[5] or '')
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local penalty = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ttl = math.ceil(burst * interval + penalty) + 60
if penalty >= 0 then
  local full = now + burst * interval + penalty
  if full > tat then redis.call('SET', KEYS[1], tostring(full), 'EX', ttl) end
  return '0'
end
local new_tat = tat + interval
local wait = new_tat - burst * interval - now
if wait < 0 then wait = 0 end
if wait > max_wait then return tostring(-wait) end
redis.call('SET', KEYS[1], tostring(new_tat), 'EX', ttl)
return tostring(wait)
"""


def _gcra_python(tat: float, now: float, interval: float, burst: int, max_wait: float,
                 penalty: float) -> tuple[float | None, float]:
    """The same algorithm for the file backend: returns (new tat or None, wait; negative = refused)."""
    tat = max(tat, now)
    if penalty >= 0:
        return max(tat, now + burst * interval + penalty), 0.0
    new_tat = tat + interval
    wait = max(new_tat - burst * interval - now, 0.0)
    if wait > max_wait:
        return None, -wait
    return new_tat, wait


class _RedisBackend:
    name = "redis"

    def __init__(self) -> None:
        self._get_redis = get_redis
        self._script: Any = None
        self._pid: int | None = None

    def run(self, key: str, bucket: Bucket, max_wait: float, penalty: float) -> float:
        client = self._get_redis()
        if self._script is None or self._pid != os.getpid():
            self._script, self._pid = client.register_script(_GCRA_LUA), os.getpid()
        args: list[Any] = [bucket.interval, bucket.burst, max_wait, penalty]
        if _time_source is not None:
            args.append(repr(_time_source.now()))
        answer = self._script(keys=[KEY_PREFIX + key], args=args, client=client)
        return float(answer.decode() if isinstance(answer, bytes) else answer)

    def reset(self, key: str) -> None:
        self._get_redis().delete(KEY_PREFIX + key)


class _FileBackend:
    """One machine, many processes: a small JSON file per portal, read-modify-written under flock."""

    name = "file"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / f"{''.join(c for c in key if c.isalnum() or c in '-_')[:80]}.json"

    def run(self, key: str, bucket: Bucket, max_wait: float, penalty: float) -> float:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._path(key), "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0)
                try:
                    tat = float(json.loads(handle.read() or "{}").get("tat", 0.0))
                except (ValueError, AttributeError):
                    tat = 0.0
                new_tat, wait = _gcra_python(tat, now(), bucket.interval, bucket.burst, max_wait, penalty)
                if new_tat is not None:
                    handle.seek(0)
                    handle.truncate()
                    handle.write(json.dumps({"tat": new_tat}))
                    handle.flush()
                return wait
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def reset(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


_backend: _RedisBackend | _FileBackend | None = None


def get_backend() -> _RedisBackend | _FileBackend:
    global _backend
    if _backend is None:
        if settings.REDIS_URL:
            _backend = _RedisBackend()
        else:
            folder = Path(settings.VAR_DIR) / "ratelimit"
            logger.warning("REDIS_URL is not set: the REST rate limiter uses file locks in %s; it is shared by "
                           "the processes of this machine only", folder)
            _backend = _FileBackend(folder)
    return _backend


def _key(portal: Portal) -> str:
    return portal.member_id


def acquire(portal: Portal, *, max_wait: float) -> float:
    """Reserve one permit (one HTTP request) in the portal's bucket. Returns the seconds the caller must
    sleep before sending (0 within the burst). When the slot is more than `max_wait` away nothing is
    reserved and `B24RateLimited(code="RATE_LIMIT_WAIT", retry_after=...)` is raised."""
    wait = get_backend().run(_key(portal), bucket_for(portal), max(max_wait, 0.0), -1.0)
    if wait < 0:
        raise B24RateLimited("RATE_LIMIT_WAIT", f"next permit in {-wait:.1f}s", retry_after=-wait)
    return wait


def penalize(portal: Portal, seconds: float) -> None:
    """After a 503 QUERY_LIMIT_EXCEEDED: treat the bucket as full for `seconds` more, so that every process
    (not only the one that was refused) slows down."""
    get_backend().run(_key(portal), bucket_for(portal), 0.0, max(seconds, 0.0))


def reset(portal: Portal) -> None:
    """Forget the bucket state (tests, benchmarks, a staff "reset limiter")."""
    get_backend().reset(_key(portal))


# -- operating guard ------------------------------------------------------------------------------------
def _op_key(portal: Portal, method: str) -> str:
    return f"{OPERATING_PREFIX}{portal.member_id}:{method.lower()}"


def record_operating(portal: Portal, times: Iterable[tuple[str, Any]]) -> None:
    """Store the latest `time` block per method: `operating` is a running total, so overwrite."""
    values: dict[str, tuple[float, float | None]] = {}
    for method, block in times:
        if not isinstance(block, dict) or method.lower() == "batch":  # the outer batch is not counted
            continue
        try:
            operating = float(block["operating"])
        except (KeyError, TypeError, ValueError):
            continue
        try:
            reset_at = float(block["operating_reset_at"]) if block.get("operating_reset_at") else None
        except (TypeError, ValueError):
            reset_at = None
        values[_op_key(portal, method)] = (operating, reset_at)
    if values:
        try:
            cache.set_many(values, timeout=OPERATING_TTL)
        except Exception:  # the guard is advisory: a cache outage must not fail a call that succeeded
            logger.warning("could not store operating figures", exc_info=True)


def block_method(portal: Portal, method: str, reset_at: float | None) -> float:
    """A 429 OPERATION_TIME_LIMIT: remember the method as exhausted until `reset_at` (from the answer, else the
    last reset time we saw, else a minute from now: one cheap probe per minute). Returns reset_at."""
    current = now()
    if reset_at is None or reset_at <= current:
        previous = cache.get(_op_key(portal, method))
        reset_at = previous[1] if previous and previous[1] and previous[1] > current else current + 60.0
    cache.set(_op_key(portal, method), (operating_limit(), reset_at), timeout=OPERATING_TTL)
    return reset_at


def operating_limit() -> float:
    return float(settings.B24_OPERATING_LIMIT)


def check_operating(portal: Portal, methods: Iterable[str]) -> None:
    """Raise `B24OperationLimit(code="OPERATING_DEFERRED")` when any of these methods is above the defer
    threshold and its window has not reset yet."""
    names = {m.lower() for m in methods if m and m.lower() != "batch"}
    if not names:
        return
    threshold = operating_limit() * float(settings.B24_OPERATING_DEFER_RATIO)
    try:
        found = cache.get_many([_op_key(portal, m) for m in names])
    except Exception:
        logger.warning("could not read operating figures", exc_info=True)
        return
    current = now()
    worst: tuple[float, str] | None = None
    for key, value in found.items():
        operating, reset_at = value
        if operating >= threshold:
            until = reset_at if reset_at and reset_at > current else None
            if until is None:
                continue  # the window has turned over since; the next answer tells the new total
            if worst is None or until > worst[0]:
                worst = (until, key.rsplit(":", 1)[-1])
    if worst is not None:
        until, method = worst
        raise B24OperationLimit("OPERATING_DEFERRED",
                                f"{method} used {threshold:.0f}+ s of its {operating_limit():.0f} s; deferred",
                                method=method, reset_at=until, retry_after=until - current)
