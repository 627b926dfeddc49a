"""Helpers for driving the CLI in-process with click's CliRunner: a project, a fake
engine that records what the command's session did with it, a bug to plant, and the
shapes every failure must have (one paragraph, or the internal-error line + its log)."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from pydeploy.cli.main import cli
from pydeploy.engine.client import Engine

VALID = '[project]\nname = "demo"\nversion = "1.0"\n[tool.pydeploy]\napp = "main:app"\n'


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def after(self, lines: int) -> Outcome:
        """The same, without its first stderr lines (progress before the report)."""
        return Outcome(self.code, self.stdout, "".join(self.stderr.splitlines(True)[lines:]))


class BugError(ZeroDivisionError):
    """What a planted bug raises: not a PydeployError."""


@dataclass
class FakeEngine:
    """What a command's session may ask of an engine; `calls` records the cleanup."""

    build_id: str = "0123456789ab"
    calls: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        self.calls.append("cleanup")

    def close(self) -> None:
        self.calls.append("close")

    def has_bridge(self) -> bool:
        return True

    def inspect_image(self, _name: str) -> None:
        return None  # it has no images


class Cli:
    def __init__(self, cache: Path) -> None:
        self.cache = cache

    @staticmethod
    def bug(*_args: object, **_kwargs: object) -> None:
        """Plant it where a command calls its implementation."""
        raise BugError("division by zero\nsecond line")

    def run(self, *args: str) -> Outcome:
        result = CliRunner().invoke(cli, list(args))
        # Only SystemExit (the CLI's own exit) may leave a command.
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(
            result.exception
        )
        return Outcome(result.exit_code, result.stdout, result.stderr)

    def assert_paragraph(self, outcome: Outcome, code: int, kind: str, *fragments: str) -> None:
        """A PydeployError: its exit code and one line on stderr, no traceback."""
        assert outcome.code == code, outcome.output
        assert "Traceback" not in outcome.output
        assert outcome.stderr.startswith(f"pydeploy: {kind} error: "), outcome.stderr
        assert outcome.stderr.count("\n") == 1, outcome.stderr
        for fragment in fragments:
            assert fragment in outcome.stderr

    def assert_bug(self, outcome: Outcome, *, debug: bool = False) -> str:
        """The internal-error report of `bug`; returns the log's text."""
        assert outcome.code == 1, outcome.output
        line = outcome.stderr.splitlines()[-1]
        assert line.startswith(
            "pydeploy: internal error: BugError: division by zero. This is a bug"
        )
        assert line.endswith("please report it with that traceback and the command you ran.")
        [log] = (self.cache / "logs").glob("internal-error-*.log")
        assert f"the traceback is in {log}" in line
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        if debug:
            assert outcome.stderr.startswith("Traceback (most recent call last):")
            assert "(--debug prints it)" not in line
        else:
            assert outcome.stderr.count("\n") == 1, "one line"
            assert "(--debug prints it)" in line
        text = log.read_text()
        assert "Traceback (most recent call last)" in text
        assert "BugError: division by zero" in text
        return text


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Logs go to a private cache, never the user's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PYDEPLOY_CACHE_DIR", str(cache))
    monkeypatch.delenv("CI", raising=False)
    return cache


@pytest.fixture
def runner(cache_dir: Path) -> Cli:
    return Cli(cache_dir)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text(VALID)
    (root / "main.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    return root


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """Engine.connect answers with a FakeEngine, which notes it in `calls`."""
    engine = FakeEngine()

    def connect(*_args: object, **_kwargs: object) -> FakeEngine:
        engine.calls.append("connect")
        return engine

    monkeypatch.setattr(Engine, "connect", connect)
    return engine
