"""The launcher runs any command given to the image (one-offs, release commands, other
processes): its own modes are options before the command, the command runs with the venv
active in the app directory, exec'd or supervised as PID 1, its exit code passed on."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pydeploy.payload import launcher

SCRIPT = Path(launcher.__file__)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ("serve", None, [])),
        (["--config", "/c.json"], ("serve", "/c.json", [])),
        (["--healthcheck"], ("--healthcheck", None, [])),
        (["--config=/c.json", "--print-command"], ("--print-command", "/c.json", [])),
        (["python", "manage.py", "migrate"], ("command", None, ["python", "manage.py", "migrate"])),
        # The launcher's words are not reserved: a program named like a mode runs.
        (["healthcheck"], ("command", None, ["healthcheck"])),
        # The command's own options stay the command's, even ones the launcher knows.
        (["python", "--help", "--config", "x"],
         ("command", None, ["python", "--help", "--config", "x"])),
        (["--config", "/c.json", "--", "-dash"], ("command", "/c.json", ["-dash"])),
        (["--", "--healthcheck"], ("command", None, ["--healthcheck"])),
    ],
)  # fmt: skip
def test_parse_args(argv: list[str], expected: tuple[str, str | None, list[str]]) -> None:
    assert launcher.parse_args(argv) == expected


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--serve"], "unexpected option '--serve'"),
        (["--healthcheck", "python"], "--healthcheck takes no command"),
        (["--config"], "--config needs a path"),
    ],
)
def test_parse_args_errors(argv: list[str], fragment: str) -> None:
    with pytest.raises(launcher.LaunchError, match=fragment):
        launcher.parse_args(argv)


def test_command_environ_activates_the_venv() -> None:
    env = launcher.command_environ(
        {"PATH": "/usr/bin:/opt/venv/bin", "PYTHONHOME": "/x"}, "/opt/venv"
    )
    assert env["PATH"] == "/opt/venv/bin:/usr/bin"
    assert env["VIRTUAL_ENV"] == "/opt/venv"
    assert "PYTHONHOME" not in env
    assert launcher.command_environ({}, "/v")["PATH"] == "/v/bin"
    same = "/opt/venv/bin:/usr/local/bin:/usr/bin"
    assert launcher.command_environ({"PATH": same}, "/opt/venv")["PATH"] == same


def project(tmp_path: Path) -> tuple[Path, Path]:
    """A launch.json whose venv holds a `probe` program, and its app directory."""
    venv, app_dir = tmp_path / "venv", tmp_path / "app"
    (venv / "bin").mkdir(parents=True)
    app_dir.mkdir()
    probe = venv / "bin" / "probe"
    probe.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv, 'cwd': os.getcwd(), 'pid': os.getpid(),\n"
        "    'path': os.environ['PATH'], 'venv': os.environ.get('VIRTUAL_ENV')}))\n"
        "sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)\n",
        encoding="utf-8",
    )
    probe.chmod(0o755)
    (venv / "bin" / "not-executable").write_text("#!/bin/sh\n", encoding="utf-8")
    config = tmp_path / "launch.json"
    document = {"app": "m:app", "server": "gunicorn", "venv": str(venv), "app_dir": str(app_dir)}
    config.write_text(json.dumps(document), encoding="utf-8")
    return config, venv


def launch(
    config: Path, *command: str, path: str = "/usr/bin:/bin"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(config), *command],
        env={"PATH": path}, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_a_command_is_execd_with_the_venv_in_the_app_dir(tmp_path: Path) -> None:
    config, venv = project(tmp_path)
    proc = launch(config, "probe", "7")
    assert proc.returncode == 7, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["argv"][1:] == ["7"]
    assert seen["cwd"] == str(tmp_path / "app")
    assert seen["path"].split(":")[0] == str(venv / "bin")
    assert seen["venv"] == str(venv)
    assert proc.stderr == ""  # no startup line: the server is not starting


@pytest.mark.parametrize(
    ("command", "code", "fragment"),
    [
        ("no-such-program", 127, "no-such-program: command not found (PATH="),
        ("/nowhere/prog", 127, "/nowhere/prog: no such file"),
        ("not-executable", 126, "not-executable: not an executable file"),
    ],
)
def test_a_missing_command_is_one_line_and_a_shells_code(
    tmp_path: Path, command: str, code: int, fragment: str
) -> None:
    config, venv = project(tmp_path)
    if command == "not-executable":
        command = str(venv / "bin" / command)
    proc = launch(config, command)
    assert proc.returncode == code
    assert proc.stderr.count("\n") == 1
    assert fragment in proc.stderr


def test_as_pid1_a_command_is_supervised_and_its_exit_code_passed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config, venv = project(tmp_path)
    code = launcher.main(
        ["--config", str(config), "probe", "5"], environ={"PATH": "/usr/bin"}, pid1=True
    )
    assert code == 5
    seen = json.loads(capfd.readouterr().out)
    assert seen["pid"] != os.getpid()  # a child: PID 1 stays to forward and reap
    assert seen["cwd"] == str(tmp_path / "app")
    assert seen["path"].startswith(f"{venv / 'bin'}:")


def test_as_pid1_sigterm_reaches_the_command(tmp_path: Path) -> None:
    config, _ = project(tmp_path)
    ready = tmp_path / "ready"
    code = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(30)\n"
    )
    main = threading.main_thread().ident
    assert main is not None

    def stop_when_ready() -> None:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        signal.pthread_kill(main, signal.SIGTERM)  # as docker stop, at the waiting thread

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=stop_when_ready, daemon=True)
    thread.start()
    started = time.monotonic()
    argv = ["--config", str(config), sys.executable, "-c", code]
    assert launcher.main(argv, environ={"PATH": "/usr/bin"}, pid1=True) == 42
    thread.join()
    assert time.monotonic() - started < 15
    assert signal.getsignal(signal.SIGTERM) == before


# Runs as a session leader with a pseudo-terminal as its controlling terminal (as PID 1 of
# `docker run -it`): supervises a child that reports whether it owns the terminal.
TERMINAL_HELPER = """
import fcntl, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
sys.path.insert(0, sys.argv[1])
import launcher
child = "import os; print('foreground' if os.tcgetpgrp(0) == os.getpgrp() else 'background')"
sys.exit(launcher.supervise([sys.executable, "-c", child], foreground=True))
"""


def test_an_interactive_command_gets_the_terminal(tmp_path: Path) -> None:
    """`docker run -it IMAGE python manage.py createsuperuser`: the command is the
    terminal's foreground group, so its prompts work and Ctrl-C reaches it once."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", TERMINAL_HELPER, str(SCRIPT.parent)],
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        assert proc.wait(timeout=30) == 0
        output = b""
        while b"ground" not in output:
            output += os.read(master, 1024)
    finally:
        os.close(master)
    assert b"foreground" in output


def test_pid1_command_reads_what_pid1_runs() -> None:
    path = "/opt/pydeploy/launcher.py"
    ours = b"/opt/venv/bin/python\0/opt/pydeploy/launcher.py\0celery\0-A\0proj\0worker\0"
    assert launcher.pid1_command(ours, path) == ["celery", "-A", "proj", "worker"]
    init = b"/sbin/docker-init\0--\0/opt/venv/bin/python\0" + ours.split(b"\0", 1)[1]
    assert launcher.pid1_command(init, path) == ["celery", "-A", "proj", "worker"]
    assert launcher.pid1_command(b"/opt/venv/bin/python\0/opt/pydeploy/launcher.py\0", path) is None
    assert launcher.pid1_command(b"/opt/venv/bin/gunicorn\0app:app\0", path) is None
    assert launcher.pid1_command(b"", path) is None


def test_the_healthcheck_of_a_container_running_a_command_is_healthy(tmp_path: Path) -> None:
    """A worker from the same image serves no HTTP: the image's HEALTHCHECK must not
    mark it unhealthy (Swarm would restart it)."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(f"/opt/venv/bin/python\0{SCRIPT}\0celery\0worker\0".encode())
    system = launcher.System(pid1_cmdline=cmdline, affinity=1)
    config = launcher.parse_config({"app": "m:app", "server": "gunicorn", "port": 1})
    code, report = launcher.container_health(config, {}, system)
    assert (code, report) == (0, "healthy: the container runs `celery worker`, not the server")
    cmdline.write_bytes(f"/opt/venv/bin/python\0{SCRIPT}\0".encode())
    code, report = launcher.container_health(config, {}, system)
    assert code == 1  # the server's own probe: nothing listens on port 1
    assert report.startswith("unhealthy: GET http://127.0.0.1:1/healthz failed")
