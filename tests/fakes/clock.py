"""An injectable clock for the fakes (standard library only).

Every time-dependent rule of a fake (token and auth-code expiry, the leaky bucket, the operating window, a
carrier's duplicate window, injected latency) reads one :class:`Clock` instead of :func:`time.time`, so a
test decides when time passes::

    clock = Clock.manual()              # frozen: time moves only when the test says so
    cloud = FakeBitrix24Cloud(clock=clock)
    ...
    clock.advance(0.5)                  # buckets drain by 0.5 s worth, tokens age 0.5 s, sleepers wake

Two modes, switchable at any time:

* **running** (``Clock()``, the default of every fake): ``now()`` is the wall clock plus whatever
  :meth:`Clock.advance` added, so live-server, browser and benchmark tests see time pass by itself.
* **frozen** (``Clock.manual()`` or :meth:`Clock.freeze`): ``now()`` stands still until :meth:`Clock.advance`.
  :meth:`Clock.sleep` (used for injected latency) then blocks until the test has advanced the clock past
  the sleeper's deadline; :meth:`Clock.wait_for_sleepers` lets a test wait until N threads are parked
  there. A sleeper that is never woken gives up with :class:`TimeoutError` after ``sleep_timeout`` real
  seconds, so a forgotten ``advance`` fails the test instead of hanging it.

``now()`` is a float of unix seconds in both modes; a manual clock starts at the current wall time unless
told otherwise, so timestamps the fakes hand out (``expires``, ``ts``, ``date_*``) stay plausible.
"""

from __future__ import annotations

import threading
import time

__all__ = ["Clock"]


class Clock:
    """Unix-seconds clock; thread-safe. See the module docstring."""

    def __init__(self, start: float | None = None, *, frozen: bool = False, sleep_timeout: float = 30.0) -> None:
        self._cond = threading.Condition(threading.Lock())
        wall = time.time()
        self._offset = 0.0 if start is None else float(start) - wall  # running mode: now = wall + offset
        self._frozen_at: float | None = (wall + self._offset) if frozen else None
        self._sleepers = 0
        self.sleep_timeout = sleep_timeout

    @classmethod
    def manual(cls, start: float | None = None, *, sleep_timeout: float = 30.0) -> Clock:
        """A frozen clock (at ``start``, default: now): it moves only by :meth:`advance`."""
        return cls(start, frozen=True, sleep_timeout=sleep_timeout)

    # -- reading --------------------------------------------------------------------------------------

    def _now_locked(self) -> float:
        return self._frozen_at if self._frozen_at is not None else time.time() + self._offset

    def now(self) -> float:
        """Unix seconds (float)."""
        with self._cond:
            return self._now_locked()

    def __call__(self) -> float:
        return self.now()

    @property
    def frozen(self) -> bool:
        with self._cond:
            return self._frozen_at is not None

    # -- moving ---------------------------------------------------------------------------------------

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (never back) in either mode; wakes sleepers. Returns the new now()."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._cond:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds
            self._cond.notify_all()
            return self._now_locked()

    def freeze(self) -> float:
        """Stop the clock at its current reading (no-op when already frozen). Returns that reading."""
        with self._cond:
            if self._frozen_at is None:
                self._frozen_at = time.time() + self._offset
            self._cond.notify_all()
            return self._frozen_at

    def unfreeze(self) -> float:
        """Let real time flow again from the current reading (no jump). Returns that reading."""
        with self._cond:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - time.time()
                self._frozen_at = None
            self._cond.notify_all()
            return self._now_locked()

    # -- waiting --------------------------------------------------------------------------------------

    @property
    def sleepers(self) -> int:
        """How many threads are inside :meth:`sleep` right now."""
        with self._cond:
            return self._sleepers

    def sleep(self, seconds: float) -> None:
        """Wait until ``now()`` has moved ``seconds`` ahead: real sleeping when running; when frozen, until
        the test advances the clock far enough (or ``sleep_timeout`` real seconds pass: TimeoutError)."""
        if seconds <= 0:
            return
        with self._cond:
            deadline = self._now_locked() + seconds
            give_up = time.monotonic() + self.sleep_timeout
            self._sleepers += 1
            self._cond.notify_all()
            try:
                while (remaining := deadline - self._now_locked()) > 0:
                    if self._frozen_at is None:
                        self._cond.wait(remaining)
                        continue
                    budget = give_up - time.monotonic()
                    if budget <= 0:
                        raise TimeoutError(
                            f"frozen clock: nobody advanced it by {remaining:.3f} s within {self.sleep_timeout} s"
                        )
                    self._cond.wait(budget)
            finally:
                self._sleepers -= 1
                self._cond.notify_all()

    def wait_for_sleepers(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` threads sit in :meth:`sleep` (real ``timeout``); True if they do."""
        with self._cond:
            return self._cond.wait_for(lambda: self._sleepers >= count, timeout)

    def __repr__(self) -> str:
        mode = "frozen" if self.frozen else "running"
        return f"<Clock {mode} at {self.now():.3f}>"
