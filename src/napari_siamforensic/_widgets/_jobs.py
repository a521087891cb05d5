"""Run core generators off the Qt thread, one job per widget, with progress, cancel and errors.

A widget owns one :class:`JobRunner`. ``runner.start(factory, ...)`` calls ``factory()`` in a
napari thread worker (``napari.qt.threading.create_worker``); the iterator it returns is
drained there and every item is handed to ``on_yield`` on the Qt thread (through a queued Qt
signal). Cancelling sets a flag the worker checks after each item; the worker then *closes*
the core generator in the worker thread (so, for example, ``iter_train`` writes its final
checkpoint) and the job ends with ``on_cancelled``. The draining loop is our own function
rather than napari's generator worker, whose loop stops without closing the generator when
its signals are gone (the viewer closed mid-job): then no checkpoint would be written. An exception in the job becomes a napari error notification (and
``on_error``); nothing else is touched, so the layers stay as they were.

Synchronous mode (``JobRunner(synchronous=True)``, or the environment variable
``SIAMFORENSIC_SYNC_JOBS=1``) runs the same code on the calling thread: handy in scripts and
in tests that do not want to wait for threads.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal
from qtpy.QtCore import QObject
from qtpy.QtCore import Signal as QtSignal

SYNC_ENV = "SIAMFORENSIC_SYNC_JOBS"

_FINISHED = "finished"
_CANCELLED = "cancelled"


class _Emitter(QObject):
    """Carries job items from the worker thread to the Qt thread (a queued connection)."""

    item = QtSignal(object)


def _sync_default() -> bool:
    return os.environ.get(SYNC_ENV, "").strip().lower() in ("1", "true", "yes")


class JobRunner:
    """At most one background job at a time for one widget.

    Parameters
    ----------
    name : str
        How notifications call this job's owner ("Training", "Duplicates", ...).
    synchronous : bool, optional
        Run jobs on the calling thread. None (default): read ``SIAMFORENSIC_SYNC_JOBS``.

    Signals
    -------
    busy_changed(bool)
        Emitted when a job starts (True) and when it has ended in any way (False).
    """

    busy_changed = Signal(bool)

    def __init__(self, name: str, *, synchronous: bool | None = None):
        self.name = name
        self.synchronous = _sync_default() if synchronous is None else bool(synchronous)
        self._worker = None
        self._emitter = None
        self._cancel = threading.Event()
        self._progress = None
        self._busy = False
        self._callbacks: dict[str, Callable | None] = {}
        self.last_error: BaseException | None = None
        self.last_outcome: str | None = None    # "finished", "cancelled" or "error"

    # ------------------------------------------------------------------ state
    @property
    def busy(self) -> bool:
        return self._busy

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            self.busy_changed.emit(busy)

    # ------------------------------------------------------------------ start / cancel
    def start(self, factory: Callable[[], Iterable[Any]], *,
              on_yield: Callable[[Any], None] | None = None,
              on_done: Callable[[], None] | None = None,
              on_cancelled: Callable[[], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None,
              total: int | None = None, desc: str | None = None,
              progress_of: Callable[[Any], int | None] | None = None) -> bool:
        """Start ``factory()`` (called in the worker) and drain the iterator it returns.

        ``progress_of(item)`` gives the progress bar's position after ``item`` (default: one
        more per item); ``total`` its length (None: indeterminate). Returns False, with a
        warning notification, when a job of this runner is already running.
        """
        if self._busy:
            show_warning(f"{self.name} is already running: wait for it or press Cancel.")
            return False
        self._cancel.clear()
        self.last_error = None
        self.last_outcome = None
        self._callbacks = dict(on_yield=on_yield, on_done=on_done, on_cancelled=on_cancelled,
                               on_error=on_error, progress_of=progress_of)
        self._progress = napari_progress(total=total, desc=desc or self.name)
        self._set_busy(True)
        cancel = self._cancel
        emitter = _Emitter()
        emitter.item.connect(self._on_yielded)
        self._emitter = emitter      # PyQt's bound signal does not keep its QObject alive

        def run(emit, _keep=emitter):      # _keep: the emitter lives as long as the job
            # Drain the core iterator here (a plain function worker, not napari's generator
            # worker) so that closing it - and a training run's last checkpoint - happens in
            # this thread whatever becomes of the widgets and the worker's Qt signals.
            iterator = factory()
            try:
                for item in iterator:
                    try:
                        emit(item)
                    except RuntimeError:      # the receiving widgets are gone
                        cancel.set()
                    if cancel.is_set():
                        return _CANCELLED
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()      # in the worker: a training run writes its last checkpoint here
            return _CANCELLED if cancel.is_set() else _FINISHED

        if self.synchronous:
            self._run_sync(lambda: run(self._on_yielded))
            return True
        worker = create_worker(run, emitter.item.emit, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()
        return True

    def _run_sync(self, job) -> None:
        try:
            self._on_returned(job())
        except Exception as exc:     # noqa: BLE001 - every job error becomes a notification
            self._on_errored(exc)
        finally:
            self._on_finished()

    def cancel(self) -> None:
        """Ask the running job to stop after its current item (no-op when idle)."""
        if self._busy:
            self._cancel.set()
            if self._progress is not None:
                self._progress.set_description(f"{self.name}: cancelling")

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel, stop calling back into widgets, and wait (bounded) for the thread to end.

        Called when the owning widget is destroyed (e.g. the viewer closes mid-job).
        """
        self._callbacks = {}
        self._cancel.set()
        self.busy_changed.disconnect()
        worker = self._worker
        if self._emitter is not None:
            try:
                self._emitter.item.disconnect()
            except (TypeError, RuntimeError):
                pass
        if worker is not None:
            for sig in (worker.returned, worker.errored):
                try:
                    sig.disconnect()
                except (TypeError, RuntimeError):
                    pass
            deadline = time.monotonic() + timeout
            while getattr(worker, "_running", False) and time.monotonic() < deadline:
                time.sleep(0.02)
        self._close_progress()

    def wait(self, timeout: float = 60.0, poll: Callable[[], None] | None = None) -> bool:
        """Block until idle (processing Qt events via ``poll``); True when idle in time."""
        deadline = time.monotonic() + timeout
        while self._busy and time.monotonic() < deadline:
            if poll is not None:
                poll()
            time.sleep(0.01)
        return not self._busy

    # ------------------------------------------------------------------ worker signals (Qt thread)
    def _on_yielded(self, item) -> None:
        if self._progress is not None:
            pos_of = self._callbacks.get("progress_of")
            pos = pos_of(item) if pos_of is not None else None
            if pos is None:
                self._progress.update(1)
            else:
                self._progress.update(max(0, int(pos) - self._progress.n))
        cb = self._callbacks.get("on_yield")
        if cb is not None:
            try:
                cb(item)
            except Exception as exc:   # noqa: BLE001 - a widget bug must not kill the job silently
                self.cancel()
                self._on_errored(exc)

    def _on_returned(self, outcome) -> None:
        if self.last_outcome == "error":    # a callback failed and cancelled the job: keep "error"
            return
        if outcome == _CANCELLED:
            self.last_outcome = "cancelled"
            show_info(f"{self.name} cancelled.")
            cb = self._callbacks.get("on_cancelled")
        else:
            self.last_outcome = "finished"
            cb = self._callbacks.get("on_done")
        if cb is not None:
            try:
                cb()
            except Exception as exc:   # noqa: BLE001
                self._on_errored(exc)

    def _on_errored(self, exc: BaseException) -> None:
        self.last_error = exc
        self.last_outcome = "error"
        show_error(f"{self.name} failed: {exc}")
        cb = self._callbacks.get("on_error")
        if cb is not None:
            try:
                cb(exc)
            except Exception:     # noqa: BLE001 - already reporting an error
                pass

    def _on_finished(self) -> None:
        self._close_progress()
        self._worker = None
        self._emitter = None
        self._set_busy(False)

    def _close_progress(self) -> None:
        if self._progress is not None:
            try:
                self._progress.close()
            except Exception:     # noqa: BLE001 - the viewer may be gone
                pass
            self._progress = None


def stop_on_destroy(widget, *runners: JobRunner) -> None:
    """Shut the runners down when ``widget`` (a QWidget) is destroyed, e.g. the viewer closes."""
    def _shutdown(*_):
        for r in runners:
            r.shutdown()

    widget.destroyed.connect(_shutdown)
