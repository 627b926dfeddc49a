"""What the cli writes and where: progress lines (timestamps off a terminal and under CI,
bold step names on a terminal unless NO_COLOR), failure paragraphs and the bug line."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

from pydeploy.cli import render
from pydeploy.errors import EngineError

STAMP = r"\d\d:\d\d:\d\d "


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines_on(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, **env: str) -> render.Lines:
    for name in ("CI", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stderr", stream)
    return render.Lines()


def test_progress_off_a_terminal_is_timestamped_and_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    lines = lines_on(monkeypatch, stream)
    lines("install", 12.34, "3 packages")
    lines("app", 1.0, None, who="api")
    assert re.fullmatch(
        rf"{STAMP}\[   12.3s\] install: 3 packages\n{STAMP}\[api\] \[    1.0s\] app\n",
        stream.getvalue(),
    )


def test_progress_under_ci_is_timestamped_even_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = Terminal()
    lines = lines_on(monkeypatch, stream, CI="true")
    lines("install", 2.0, None)
    assert re.fullmatch(rf"{STAMP}\[    2.0s\] install\n", stream.getvalue())


def test_progress_on_a_terminal_is_bold_unless_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Terminal()
    lines_on(monkeypatch, stream)("install", 2.0, None)
    assert stream.getvalue() == "[    2.0s] \x1b[1minstall\x1b[0m\n"
    plain = Terminal()
    lines_on(monkeypatch, plain, NO_COLOR="1")("install", 2.0, None)
    assert plain.getvalue() == "[    2.0s] install\n"


def test_a_warning_step_reads_as_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Terminal()
    lines_on(monkeypatch, stream)("warning", 3.0, "no memory limit")
    assert stream.getvalue() == "pydeploy: warning: no memory limit\n"


def test_a_failure_is_one_paragraph(capsys: pytest.CaptureFixture[str]) -> None:
    render.failure(EngineError("No engine.", hint="Start one."), None)
    render.failure(EngineError("Refused."), Path("/cache/logs/build-failure-1.log"))
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "pydeploy: engine error: No engine. Start one.\n"
        "pydeploy: engine error: Refused. The full tool output is in "
        "/cache/logs/build-failure-1.log.\n"
    )


def test_a_bug_is_named_by_its_first_line_cut_short(capsys: pytest.CaptureFixture[str]) -> None:
    render.internal_error(ValueError("x" * 300 + "\nmore"), None, debug=True)
    err = capsys.readouterr().err
    assert err.startswith(f"pydeploy: internal error: ValueError: {'x' * 200}. This is a bug")
    assert "the traceback could not be saved;" in err
    assert "more" not in err
    assert err.count("\n") == 1


def test_the_layer_table_fits_the_longest_role(capsys: pytest.CaptureFixture[str]) -> None:
    layers = [
        {"role": "base", "digest": None, "diff_id": "sha256:" + "0" * 64, "size": None},
        {"role": "app", "digest": "sha256:" + "a" * 64, "diff_id": "x", "size": 20_000},
        {"role": "dependencies-pydantic-core", "digest": "sha256:" + "b" * 64,
         "diff_id": "y", "size": 2_200_000},
    ]  # fmt: skip
    document = {"image_id": "sha256:" + "c" * 64, "tags": ["api:1"], "layers": layers}
    render.unchanged(render.Lines(), document, [], summary=True)
    rows = [line for line in capsys.readouterr().err.splitlines() if " MB" in line]
    assert [row.index("sha256:") for row in rows] == [29, 29]
    assert rows[0].startswith("  app ")
    assert rows[1].startswith("  dependencies-pydantic-core ")
