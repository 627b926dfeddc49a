"""One command's hold on the engine, and what must happen however the command ends.

`Session` is a context manager around a command that may start containers. While it is
open, SIGINT and SIGTERM (CI cancelling a job) both raise KeyboardInterrupt in the main
thread, so every cancellation takes the same path as Ctrl-C; `cancelling(message)` turns
one into an InterruptError (exit 130) that says what was cleaned up. On the way out it
removes every container the command's engine created, closes the engine's client and
restores the previous signal handlers, whether the command succeeded, failed or was
cancelled.

`save_log` keeps what a failure's one-line report points at: a build's full tool output
or an internal error's traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

from pydeploy.errors import EngineError, InterruptError

if TYPE_CHECKING:
    from pydeploy.engine.client import Engine

CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def _cancel(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Session:
    """`with Session() as session:` around a command; `session.connect()` for its engine."""

    def __init__(self, connect: Callable[[], Engine] | None = None) -> None:
        self._connect = connect
        self._engine: Engine | None = None
        self.unreachable: EngineError | None = None  # why engine_if_any found none
        self._previous: dict[int, _Handler] = {}

    def __enter__(self) -> Session:
        # Handlers can only be set from the main thread; a session opened elsewhere (a test
        # runner's thread) leaves signals as they are.
        if threading.current_thread() is threading.main_thread():
            for signum in CANCEL_SIGNALS:
                # A signal the parent made us ignore (`nohup`, a shell's background job)
                # stays ignored.
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, _cancel)
        return self

    def connect(self) -> Engine:
        """The engine for this command (connected once), cleaned up and closed on exit."""
        if self._engine is None:
            if self._connect is None:
                from pydeploy.engine.client import Engine  # noqa: PLC0415 - docker SDK: slow

                self._connect = Engine.connect
            self._engine = self._connect()
        return self._engine

    def engine_if_any(self) -> Engine | None:
        """The engine, or None when none answers (a build that can go without one);
        `unreachable` then says why."""
        from pydeploy.errors import NoEngineError  # noqa: PLC0415

        try:
            return self.connect()
        except NoEngineError as exc:
            self.unreachable = exc
            return None

    @contextlib.contextmanager
    def cancelling(self, message: str) -> Iterator[None]:
        """Ctrl-C or SIGTERM inside the block ends the command as InterruptError(message);
        outside any such block it ends as a bare interruption (`pydeploy: interrupted.`)."""
        try:
            yield
        except KeyboardInterrupt:
            raise InterruptError(message) from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Signals stay handled during the cleanup: a second Ctrl-C ends it early (the owner
        # label lets the next build or `prune` reap what is left).
        try:
            if self._engine is not None:
                try:
                    self._engine.cleanup()
                finally:
                    self._engine.close()
        finally:
            for signum, previous in self._previous.items():
                # None: a handler set outside Python, which cannot be put back.
                signal.signal(signum, signal.SIG_DFL if previous is None else previous)
            self._previous.clear()


def save_log(kind: str, text: str) -> Path | None:
    """Keep a failed build's full (masked) tool output, or an internal error's traceback,
    where the user can read it: `logs/` of pydeploy's cache, which `prune` ages out. None
    when it cannot be written (the report then says so)."""
    try:
        from pydeploy.cachedir import cache_root  # noqa: PLC0415 - only on a failure

        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = cache_root() / "logs" / f"{kind}-{stamp}-{os.getpid()}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only: a traceback can show paths and values of the user's project.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(text)
    except (OSError, ImportError):  # ImportError: the bug being reported may be one
        return None
    return path
