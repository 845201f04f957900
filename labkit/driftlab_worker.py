"""The DriftLab's background worker: a result cache and one thread that computes only the latest setting.

Independent of the model (tests drive it with a fake compute function):

* :class:`ResultCache`: a setting already computed (in this session, or shipped in a precomputed sweep in
  ``data/``) comes back at once;
* :class:`LatestWorker`: one background thread computes only the most recently requested setting. A newer
  request makes the running computation stop at its next progress checkpoint (:class:`Cancelled`), and a
  result that finishes after the settings changed is cached but never shown (it is *stale*).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from labkit.drift import DriftResult, DriftSettings, LabUnavailable

__all__ = ["Cancelled", "ResultCache", "LatestWorker"]


class Cancelled(Exception):
    """Raised inside a computation by its progress callback when a newer setting has been requested."""



class ResultCache:
    """Least-recently-used store of results by ``DriftSettings.key()``; thread-safe. Remembers each source."""

    def __init__(self, max_items: int = 128):
        self.max_items = max_items
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, settings: DriftSettings):
        """(result, source) or (None, None); ``source`` is "computed" or "precomputed"."""
        with self._lock:
            item = self._items.get(settings.key())
            if item is None:
                return None, None
            self._items.move_to_end(settings.key())
            return item

    def put(self, result: DriftResult, source: str = "computed") -> None:
        with self._lock:
            self._items[result.settings.key()] = (result, source)
            self._items.move_to_end(result.settings.key())
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def items(self) -> list:
        """A snapshot of every (result, source) held, least recently used first."""
        with self._lock:
            return list(self._items.values())

    def __contains__(self, settings: DriftSettings) -> bool:
        with self._lock:
            return settings.key() in self._items

    def __len__(self) -> int:
        return len(self._items)


class LatestWorker:
    """One background thread that computes the most recently requested setting, and only that.

    ``request(settings)`` answers from the cache at once when it can; otherwise it records the setting as
    the latest wish and wakes the thread. The thread calls ``compute(settings, progress)``; ``progress``
    reports a fraction and raises :class:`Cancelled` as soon as a newer request exists, so a slider moved
    again abandons the old work at its next checkpoint. A result that completes for a superseded request is
    cached (it may be asked for again) but dropped, never shown. Callbacks run on the worker thread:
    ``on_result(result, source, seconds)``, ``on_progress(fraction, message)``, ``on_error(message)``.
    ``idle()``, if given, is called whenever nothing is pending: it does one small piece of background work and
    returns whether more is left (the lab draws the views of the precomputed sweep this way).
    """

    def __init__(self, compute, on_result, on_progress=None, on_error=None, cache: ResultCache | None = None,
                 idle=None):
        self.compute = compute
        self.idle = idle
        self._idle_left = idle is not None
        self.on_result, self.on_progress, self.on_error = on_result, on_progress, on_error
        self.cache = cache if cache is not None else ResultCache()
        self._cond = threading.Condition()
        self._generation = 0        # bumped by every request: a computation of an older one is stale
        self._pending = None        # (generation, settings, requested_at) waiting for the thread
        self._busy = False
        self._closed = False
        self._deliver_lock = threading.Lock()   # a stale result can't overtake a newer one on its way out
        self.stats = {"computed": 0, "cancelled": 0, "dropped": 0, "cache_hits": 0, "errors": 0}
        self._thread = threading.Thread(target=self._loop, name="DriftLabWorker", daemon=True)
        self._thread.start()

    def request(self, settings: DriftSettings) -> str:
        """Ask for ``settings``. Returns "cache" if answered at once, else "queued"."""
        requested_at = time.perf_counter()
        with self._cond:
            self._generation += 1
            generation = self._generation
            result, source = self.cache.get(settings)
            if result is None:
                self._pending = (generation, settings, requested_at)
                self._cond.notify_all()
                return "queued"
            self._pending = None
            self.stats["cache_hits"] += 1
        self._deliver(generation, result, "cache" if source == "computed" else source,
                      time.perf_counter() - requested_at)
        return "cache"

    def is_current(self, generation: int) -> bool:
        return generation == self._generation and not self._closed

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing is pending or running (tests and notebooks use it). False on timeout."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._generation += 1
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _deliver(self, generation, result, source, seconds) -> bool:
        with self._deliver_lock:
            if not self.is_current(generation):
                self.stats["dropped"] += 1
                return False
            try:
                self.on_result(result, source, seconds)
            except Exception as err:  # a view that fails to draw must not kill the worker
                self._error(f"could not show the result: {type(err).__name__}: {err}")
            return True

    def _error(self, message):
        self.stats["errors"] += 1
        if self.on_error is not None:
            self.on_error(message)

    def _loop(self):
        warm_up = getattr(self.compute, "warm_up", None)
        if warm_up is not None:  # load the model now, so the first new setting doesn't pay for it
            with self._cond:
                self._busy = True
            try:
                warm_up()
            except Exception as err:
                self._error(_describe(err, "could not load the generator"))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        while True:
            with self._cond:
                while self._pending is None and not self._closed and not self._idle_left:
                    self._cond.wait()
                if self._closed:
                    return
                if self._pending is None:  # nothing asked for: one piece of background work, then look again
                    idle_now = True
                else:
                    idle_now = False
                    generation, settings, requested_at = self._pending
                    self._pending = None
                    self._busy = True
            if idle_now:
                try:
                    self._idle_left = bool(self.idle())
                except Exception:  # noqa: BLE001 - background work is optional; never let it stop the worker
                    self._idle_left = False
                continue

            def progress(fraction, message="", _generation=generation):
                if not self.is_current(_generation):
                    raise Cancelled
                if self.on_progress is not None:
                    self.on_progress(float(fraction), message)

            try:
                progress(0.0, "starting")
                result = self.compute(settings, progress)
                self.stats["computed"] += 1
                self.cache.put(result, "computed")
                self._deliver(generation, result, "computed", time.perf_counter() - requested_at)
            except Cancelled:
                self.stats["cancelled"] += 1
            except Exception as err:  # shown in the app as a message; the worker keeps serving
                if self.is_current(generation):
                    self._error(_describe(err, "generation failed"))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _describe(err: Exception, what: str) -> str:
    """The message the app shows for an exception: a LabUnavailable speaks for itself."""
    if isinstance(err, LabUnavailable):
        return str(err)
    return f"{what}: {type(err).__name__}: {err}"

