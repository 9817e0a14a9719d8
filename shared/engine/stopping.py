"""Stopping a run gracefully: SIGTERM (the Functions host scaling in, a CI timeout) or SIGINT (Ctrl-C).

On the first signal the run takes no new work: the listing ends, queued batches are reported as not sent,
and requests already in flight get ``GRACE_SECONDS`` to finish; then they are cut (``on_abort``). The run
then reports what was not sent and ends: the CLI prints its summary, writes ``--report`` and exits with
128 + the signal number; a trigger raises, so the host retries it (or the next run picks the work up).
A second signal cuts the requests in flight at once.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

GRACE_SECONDS = 5.0


class StopSignal(threading.Event):
    """An event with the reason it was set ("SIGTERM", "SIGINT"): the engine, the lanes and the HTTP
    layer all watch the same one."""

    reason: str | None = None

    def request(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
        self.set()


class Stopper:
    """Turns signals into a ``StopSignal`` plus a grace period, then cuts what is still in flight."""

    def __init__(self, stop: StopSignal | None = None, grace: float = GRACE_SECONDS):
        self.stop = stop or StopSignal()
        self.grace = grace
        self.signum: int | None = None
        self._aborts: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._then_exit = False
        self._grace_over_for: int | None = None

    def on_abort(self, abort: Callable[[], None]) -> None:
        with self._lock:
            self._aborts.append(abort)

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT), *, then_exit: bool = False) -> bool:
        """Handle ``signals`` (main thread only; returns False elsewhere). ``then_exit``: after the grace
        period, let the signal do what it did before (a Functions worker must still go away)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self._then_exit = then_exit
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return True

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if self._timer is not None:
            self._timer.cancel()

    def _handle(self, signum: int, frame: Any) -> None:
        if self._grace_over_for == signum:
            # Sent by ourselves once the grace period ended (a worker must still go away): let the signal
            # do now what it did before we were installed. Only the main thread may change handlers.
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.stop.is_set():
            self.abort()  # a second signal: do not wait for the grace period
            return
        self.signum = signum
        self.stop.request(signal.Signals(signum).name)
        self._timer = threading.Timer(self.grace, self._grace_over, args=(signum,))
        self._timer.daemon = True
        self._timer.start()

    def _grace_over(self, signum: int) -> None:
        self.abort()
        if self._then_exit:
            self._grace_over_for = signum
            os.kill(os.getpid(), signum)  # handled on the main thread by ``_handle``

    def abort(self) -> None:
        with self._lock:
            aborts = list(self._aborts)
        for abort in aborts:
            try:
                abort()
            except Exception:  # noqa: BLE001 - aborting is best effort by nature
                pass

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)
