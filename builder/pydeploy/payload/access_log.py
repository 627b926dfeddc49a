"""Buffered access logs for pydeploy's images: one write(2) per batch instead of per line.

pydeploy copies this file into the image as /opt/pydeploy/lib/pydeploy_accesslog.py (the
directory of the gunicorn worker classes); the launcher names `GunicornLogger` with
gunicorn's `--logger-class`, and uvicorn's `--log-config` file (uvicorn_logging.json,
copied next to it) names `BufferedHandler` for the `uvicorn.access` logger. It runs in the
image's virtualenv under the image's Python (>= 3.8 syntax), never imports pydeploy, and
is never imported on the host except by its tests.

Why: a container's stdout is a pipe the engine reads. One line per request is one write,
one wake-up of the engine's log copier and one log-driver message per request, on the
same CPUs as the app; on a small app that halved the requests per second. Lines are
collected and written together, at most FLUSH_SECONDS after the first of a batch (or at
once when MAX_BATCH_BYTES pile up), and on every orderly exit: the interpreter's exit
(a worker's, gunicorn's or uvicorn's after SIGTERM) runs logging.shutdown, which flushes.
uvicorn ends a graceful SIGTERM by raising it again with the handler it found, the default
one, which kills the process before any exit code runs: `uvicorn_handler` (what the log
config names) puts a handler there that flushes first, and pydeploy's gunicorn workers
flush when uvicorn's shutdown ends. Only a SIGKILL loses the last FLUSH_SECONDS of lines,
as it loses the requests in flight.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import weakref
from typing import Any

FLUSH_ENV = "PYDEPLOY_ACCESS_LOG_FLUSH_SECONDS"
DEFAULT_FLUSH_SECONDS = 0.1
# Write at once past this much: bounds memory under a burst, and is still many lines a write.
MAX_BATCH_BYTES = 64 * 1024

_HANDLERS: weakref.WeakSet[BufferedHandler] = weakref.WeakSet()


def flush_seconds(environ: Any = None) -> float:
    """FLUSH_ENV's value, else the default; a bad value is ignored, never fatal."""
    raw = (os.environ if environ is None else environ).get(FLUSH_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_FLUSH_SECONDS
    except ValueError:
        return DEFAULT_FLUSH_SECONDS
    return value if 0 <= value < float("inf") else DEFAULT_FLUSH_SECONDS


class BufferedHandler(logging.Handler):
    """Formats each record at once, writes them in batches to a file descriptor (stdout).

    A flusher thread, started by the first record of a process, sleeps until a batch
    begins, waits `delay` seconds and writes it; an idle server costs nothing.
    """

    def __init__(self, fd: int | None = None, delay: float | None = None) -> None:
        super().__init__()
        self.fd = sys.stdout.fileno() if fd is None else fd
        self.delay = flush_seconds() if delay is None else delay
        self._start()
        _HANDLERS.add(self)

    def _start(self) -> None:
        self._pending: list[str] = []
        self._size = 0
        self._batch = threading.Event()
        self._flusher: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            line = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 -- logging's contract: report, never raise
            self.handleError(record)
            return
        self._pending.append(line)
        self._size += len(line)
        if self._size >= MAX_BATCH_BYTES or self.delay == 0:
            self._write()
        elif len(self._pending) == 1:
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._run, name="pydeploy-access-log", daemon=True
                )
                self._flusher.start()
            self._batch.set()

    def _run(self) -> None:
        while True:
            self._batch.wait()
            time.sleep(self.delay)
            self.acquire()
            try:
                self._batch.clear()
                self._write()
            finally:
                self.release()

    def _write(self) -> None:
        """The pending lines in one write (more only if the pipe takes part of it)."""
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8", "backslashreplace")
        self._pending = []
        self._size = 0
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            pass  # stdout closed (a reader gone): the lines have nowhere to go

    def flush(self) -> None:
        self.acquire()
        try:
            self._write()
        finally:
            self.release()

    def close(self) -> None:
        self.flush()
        super().close()

    def _after_fork(self) -> None:
        # The child has no flusher thread, and the parent writes what was pending.
        self.createLock()
        self._start()


def flush_all() -> None:
    for handler in list(_HANDLERS):
        handler.flush()


def _flush_then_resignal(signum: int, _frame: object) -> None:
    flush_all()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)  # dies of it, as it would have without us


def uvicorn_handler() -> BufferedHandler:
    """The `uvicorn.access` handler of uvicorn_logging.json (dictConfig's `()` factory),
    with SIGTERM's default action made to flush first (see the module's docstring)."""
    handler = BufferedHandler()
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _flush_then_resignal)
    return handler


def _before_fork() -> None:
    for handler in list(_HANDLERS):
        handler.acquire()
        handler._write()  # the lock is held until after the fork


def _after_fork_in_parent() -> None:
    for handler in list(_HANDLERS):
        handler.release()


def _after_fork_in_child() -> None:
    for handler in list(_HANDLERS):
        handler._after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def _gunicorn_logger_class() -> type:
    from gunicorn.glogging import Logger  # noqa: PLC0415 -- only gunicorn images have it

    class GunicornLogger(Logger):  # type: ignore[misc]
        """gunicorn's logger, with its stdout access-log handler made a BufferedHandler.

        Everything else is gunicorn's: the access-log format and its atoms, the error log,
        SIGUSR1's reopening of log files. pydeploy's uvicorn-based workers hand the same
        handlers to uvicorn's access logger, so every gunicorn path is buffered.
        """

        def setup(self, cfg: Any) -> None:
            old = [h for h in self.access_log.handlers if isinstance(h, BufferedHandler)]
            super().setup(cfg)  # drops its own handlers (ours included) and adds new ones
            for handler in old:
                handler.close()
            for index, handler in enumerate(self.access_log.handlers):
                if type(handler) is logging.StreamHandler and handler.stream is sys.stdout:
                    buffered = BufferedHandler()
                    buffered.setFormatter(handler.formatter)
                    buffered._gunicorn = True  # type: ignore[attr-defined]
                    self.access_log.handlers[index] = buffered

    return GunicornLogger


def __getattr__(name: str) -> Any:
    # gunicorn imports `pydeploy_accesslog.GunicornLogger`; built on first use so that
    # uvicorn-only images, which have no gunicorn, can import the handler.
    if name == "GunicornLogger":
        cls = _gunicorn_logger_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
