"""The engine session: SIGINT/SIGTERM become a clean cancellation (real signals, aimed at
the main thread, where Python runs handlers), and however the block ends the engine's
containers are removed and its client closed, and the old handlers come back."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pydeploy.cli.session import Session, save_log
from pydeploy.errors import InterruptError

if TYPE_CHECKING:
    from tests.unit.cli.conftest import FakeEngine

SIGNALS = pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])


def deliver(signum: int) -> None:
    """The signal to this process's main thread, then time for its handler to run (a
    handler that raises ends the sleep at once)."""
    signal.pthread_kill(threading.main_thread().ident or 0, signum)
    time.sleep(5)


def _harmless(_signum: int, _frame: object) -> None:
    pass


@pytest.fixture(autouse=True)
def restore_handlers() -> Iterator[None]:
    """Each test starts with handlers that neither raise nor kill, so a session that failed
    to install its own shows as a failed test (not as a dead test run), and the next test
    (and pytest) gets the real handlers back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in saved:
        signal.signal(signum, _harmless)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def session_with(engine: FakeEngine) -> Session:
    return Session(connect=lambda: engine)  # type: ignore[arg-type,return-value]


@SIGNALS
def test_a_signal_inside_cancelling_is_an_interrupt_error(signum: int) -> None:
    with pytest.raises(InterruptError) as caught, Session() as session:  # noqa: PT012
        with session.cancelling("Build interrupted; its containers were removed."):
            deliver(signum)
        pytest.fail("the signal did not interrupt the block")
    assert caught.value.exit_code == 130
    assert caught.value.message == "Build interrupted; its containers were removed."


@SIGNALS
def test_a_signal_outside_cancelling_is_a_keyboard_interrupt(signum: int) -> None:
    with pytest.raises(KeyboardInterrupt), Session():
        deliver(signum)


@SIGNALS
def test_the_engine_is_cleaned_up_and_closed_after_a_signal(
    signum: int, fake_engine: FakeEngine
) -> None:
    with pytest.raises(InterruptError), session_with(fake_engine) as session:  # noqa: PT012
        session.connect()
        with session.cancelling("stopped"):
            deliver(signum)
    assert fake_engine.calls == ["cleanup", "close"]


def test_handlers_are_restored_however_the_session_ends() -> None:
    def mine(_signum: int, _frame: object) -> None:
        pass

    signal.signal(signal.SIGTERM, mine)
    with Session():
        assert signal.getsignal(signal.SIGTERM) is not mine
    assert signal.getsignal(signal.SIGTERM) is mine
    with pytest.raises(ValueError, match="boom"), Session():
        raise ValueError("boom")
    assert signal.getsignal(signal.SIGTERM) is mine
    assert signal.getsignal(signal.SIGINT) is _harmless


def test_without_a_session_sigterm_reaches_the_old_handler() -> None:
    seen: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    with Session():
        pass
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
    time.sleep(0.1)
    assert seen == [signal.SIGTERM]


def test_an_ignored_signal_stays_ignored() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with Session():
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        time.sleep(0.1)  # nothing raised
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_a_session_off_the_main_thread_leaves_signals_alone() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def other() -> None:
        with Session():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [before]


def test_the_engine_is_connected_once_and_closed_on_success(fake_engine: FakeEngine) -> None:
    with session_with(fake_engine) as session:
        assert session.connect() is session.connect()
        assert fake_engine.calls == []
    assert fake_engine.calls == ["cleanup", "close"]


def test_the_engine_is_closed_after_an_error_and_the_error_kept(fake_engine: FakeEngine) -> None:
    with pytest.raises(ValueError, match="boom"), session_with(fake_engine) as session:  # noqa: PT012
        session.connect()
        raise ValueError("boom")
    assert fake_engine.calls == ["cleanup", "close"]


def test_the_engine_is_closed_even_when_cleanup_fails(fake_engine: FakeEngine) -> None:
    def failing() -> None:
        fake_engine.calls.append("cleanup")
        raise RuntimeError("engine gone")

    fake_engine.cleanup = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="engine gone"), session_with(fake_engine) as session:
        session.connect()
    assert fake_engine.calls == ["cleanup", "close"]


def test_a_session_that_never_connected_touches_no_engine() -> None:
    connected: list[bool] = []

    def connect() -> None:
        connected.append(True)

    with Session(connect=connect):  # type: ignore[arg-type]
        pass
    assert connected == []


def test_save_log_is_owner_only_under_the_cache(cache_dir: Path) -> None:
    path = save_log("internal-error", "Traceback ...\n")
    assert path is not None
    assert path.parent == cache_dir / "logs"
    assert path.name.startswith("internal-error-")
    assert path.name.endswith(f"-{os.getpid()}.log")
    assert path.read_text() == "Traceback ...\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_log_returns_none_when_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("PYDEPLOY_CACHE_DIR", str(blocker))
    assert save_log("internal-error", "x") is None
