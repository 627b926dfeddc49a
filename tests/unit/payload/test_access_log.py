"""The buffered access-log handler (payload/access_log.py), on real pipes and processes."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pydeploy.payload import access_log
from pydeploy.payload.access_log import BufferedHandler

if TYPE_CHECKING:
    from collections.abc import Iterator

NEVER = 3600.0  # a flush delay no test waits for: only flush(), size or exit write


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    yield read, write
    for fd in (read, write):
        os.close(fd)


def drain(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def run_python(program: str) -> subprocess.CompletedProcess[str]:
    """`program` in a fresh interpreter that imports this checkout's pydeploy."""
    env = {**os.environ, "PYTHONPATH": str(Path(access_log.__file__).parents[2])}
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, check=False
    )


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("access", logging.INFO, __file__, 1, message, None, None)


def test_lines_wait_for_the_batch_and_go_out_in_one_write(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    read, write = pipe
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        writes.append(fd)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    handler = BufferedHandler(fd=write, delay=NEVER)
    for n in range(100):
        handler.handle(record(f"GET /{n} 200"))
    assert drain(read) == ""
    handler.flush()
    assert drain(read).splitlines() == [f"GET /{n} 200" for n in range(100)]
    assert writes == [write]
    handler.close()


def test_a_full_batch_is_written_without_waiting(pipe: tuple[int, int]) -> None:
    read, write = pipe
    handler = BufferedHandler(fd=write, delay=NEVER)
    line = "x" * 1023  # 1 KiB with its newline
    for _ in range(access_log.MAX_BATCH_BYTES // 1024):
        handler.handle(record(line))
    assert len(drain(read)) == access_log.MAX_BATCH_BYTES
    handler.close()


def test_the_flusher_writes_a_lone_line_after_the_delay(pipe: tuple[int, int]) -> None:
    read, write = pipe
    handler = BufferedHandler(fd=write, delay=0.01)
    handler.handle(record("GET / 200"))
    ready, _, _ = select.select([read], [], [], 30)  # arrives long before; never relied on
    assert ready
    assert drain(read) == "GET / 200\n"
    handler.handle(record("GET /again 200"))  # a second batch wakes the flusher again
    ready, _, _ = select.select([read], [], [], 30)
    assert ready
    assert drain(read) == "GET /again 200\n"
    handler.close()


def test_a_fork_writes_the_pending_lines_once_and_the_child_its_own(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    handler = BufferedHandler(fd=write, delay=NEVER)
    handler.handle(record("parent before fork"))
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child reports through the pipe and its status
        try:
            handler.handle(record("child"))
            handler.flush()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    handler.handle(record("parent after fork"))
    handler.flush()
    assert drain(read).splitlines() == ["parent before fork", "child", "parent after fork"]
    handler.close()


def test_an_orderly_exit_flushes(tmp_path: Path) -> None:
    program = (
        "import logging, sys\n"
        "from pydeploy.payload.access_log import BufferedHandler\n"
        f"handler = BufferedHandler(delay={NEVER})\n"
        "log = logging.getLogger('access')\n"
        "log.addHandler(handler)\n"
        "log.setLevel(logging.INFO)\n"
        "for n in range(3):\n"
        "    log.info('GET /%d 200', n)\n"
        "sys.exit(0)\n"
    )
    result = run_python(program)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["GET /0 200", "GET /1 200", "GET /2 200"]


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("", 0.1),
        ("0.5", 0.5),
        ("0", 0.0),
        ("soon", 0.1),
        ("-1", 0.1),
        ("inf", 0.1),
        ("3600", 3600.0),
    ],
)
def test_flush_seconds_from_the_environment(raw: str, seconds: float) -> None:
    assert access_log.flush_seconds({access_log.FLUSH_ENV: raw}) == seconds


def test_zero_delay_writes_every_line(pipe: tuple[int, int]) -> None:
    read, write = pipe
    handler = BufferedHandler(fd=write, delay=0)
    handler.handle(record("GET / 200"))
    assert drain(read) == "GET / 200\n"
    handler.close()


def test_uvicorn_handler_flushes_before_sigterms_default_action() -> None:
    # uvicorn ends a graceful stop by re-raising SIGTERM with the handler it found.
    program = (
        "import logging, os, signal\n"
        f"os.environ[{access_log.FLUSH_ENV!r}] = '{NEVER}'\n"
        "from pydeploy.payload.access_log import uvicorn_handler\n"
        "log = logging.getLogger('uvicorn.access')\n"
        "log.addHandler(uvicorn_handler())\n"
        "log.setLevel(logging.INFO)\n"
        "log.info('GET / 200')\n"
        "signal.raise_signal(signal.SIGTERM)\n"
        "print('not reached')\n"
    )
    result = run_python(program)
    assert result.returncode == -15, "it still dies of SIGTERM"
    assert result.stdout == "GET / 200\n"
