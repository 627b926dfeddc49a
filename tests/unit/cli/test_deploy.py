"""`manifest`, `dockerfile` and `run` (cli/deploy.py) against a fake engine: bad input is
a paragraph with exit 2 before any engine work, a bug the internal-error line and its log
(`--debug`: its traceback), a cancellation exit 130; however the command ends, the session
removed its containers and closed the engine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pydeploy.build
from pydeploy.deploy import dockerfile, manifests
from pydeploy.deploy import run as runner_mod

if TYPE_CHECKING:
    from tests.unit.cli.conftest import Cli, FakeEngine

DONE = ["connect", "cleanup", "close"]
DIGEST = "sha256:" + "a" * 64


def debug_flag(debug: bool) -> list[str]:
    return ["--debug"] if debug else []


@pytest.fixture
def local_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --no-build` finds an image and a free port without an engine or a socket."""
    monkeypatch.setattr(runner_mod, "find_image", lambda *_args: DIGEST)
    monkeypatch.setattr(runner_mod, "check_port_free", lambda *_args, **_kwargs: None)


def container(monkeypatch: pytest.MonkeyPatch, outcome: BaseException | int) -> None:
    def run(*_args: object) -> int:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(runner_mod.Runner, "run", run)


# --- manifest --------------------------------------------------------------------------------


def test_manifest_with_an_unpinned_image_is_exit_2(
    runner: Cli, project: Path, fake_engine: FakeEngine
) -> None:
    out = runner.run("manifest", str(project), "--image", "demo:1.0")
    runner.assert_paragraph(out, 2, "config", "--image 'demo:1.0' is not pinned by digest.")
    assert fake_engine.calls == []


def test_manifest_with_a_pinned_image_needs_no_engine(
    runner: Cli, project: Path, fake_engine: FakeEngine
) -> None:
    out = runner.run("manifest", str(project), "--image", f"demo@{DIGEST}", "--format", "compose")
    assert out.code == 0, out.output
    assert f"image: demo@{DIGEST}" in out.stdout
    assert fake_engine.calls == []


def test_manifest_with_an_unknown_format_is_a_usage_error(runner: Cli, project: Path) -> None:
    out = runner.run("manifest", str(project), "--format", "helm")
    assert out.code == 2
    assert "Invalid value for '--format'" in out.stderr


def test_a_cancelled_manifest_build_is_exit_130_after_the_cleanup(
    runner: Cli, project: Path, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pydeploy.build, "build", interrupted)
    out = runner.run("manifest", str(project))
    runner.assert_paragraph(
        out.after(1), 130, "interrupted", "Build interrupted; its containers were removed."
    )
    assert fake_engine.calls == DONE


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_bug_in_manifest_is_reported(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    monkeypatch.setattr(manifests, "spec_from_plan", runner.bug)
    out = runner.run(*debug_flag(debug), "manifest", str(project), "--image", f"demo@{DIGEST}")
    runner.assert_bug(out, debug=debug)


# --- dockerfile ------------------------------------------------------------------------------


def test_dockerfile_without_a_project_is_exit_2(runner: Cli, tmp_path: Path) -> None:
    out = runner.run("dockerfile", str(tmp_path / "nowhere"))
    runner.assert_paragraph(out, 2, "config", "pyproject.toml")


def test_dockerfile_write_refuses_a_hand_written_one(runner: Cli, project: Path) -> None:
    (project / "Dockerfile").write_text("FROM scratch\n")
    out = runner.run("dockerfile", str(project), "--write")
    runner.assert_paragraph(out, 2, "config", "--force")
    assert (project / "Dockerfile").read_text() == "FROM scratch\n"


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_bug_in_dockerfile_is_reported(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    monkeypatch.setattr(dockerfile, "render", runner.bug)
    out = runner.run(*debug_flag(debug), "dockerfile", str(project))
    runner.assert_bug(out, debug=debug)


# --- run -------------------------------------------------------------------------------------


def test_run_with_a_missing_env_file_is_exit_2_before_the_engine(
    runner: Cli, project: Path, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    out = runner.run("run", str(project), "--env-file", str(tmp_path / "missing.env"))
    runner.assert_paragraph(out, 2, "config", "Cannot read --env-file")
    assert fake_engine.calls == []


def test_run_with_a_bad_port_is_a_usage_error(runner: Cli, project: Path) -> None:
    out = runner.run("run", str(project), "--port", "0")
    assert out.code == 2
    assert "Invalid value for '--port'" in out.stderr


@pytest.mark.usefixtures("local_run")
def test_run_exits_with_the_containers_code_after_the_cleanup(
    runner: Cli, project: Path, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    container(monkeypatch, 3)
    out = runner.run("run", str(project), "--no-build")
    assert out.code == 3
    assert out.stderr.splitlines()[-1].startswith("pydeploy: pydeploy-run-demo-")
    assert out.stderr.splitlines()[-1].endswith(" exited with 3")
    assert fake_engine.calls == DONE


@pytest.mark.usefixtures("local_run")
def test_a_cancelled_run_is_exit_130_after_the_cleanup(
    runner: Cli, project: Path, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    container(monkeypatch, KeyboardInterrupt())
    out = runner.run("run", str(project), "--no-build")
    runner.assert_paragraph(out, 130, "interrupted", "Interrupted; the container was removed.")
    assert fake_engine.calls == DONE


@pytest.mark.usefixtures("local_run")
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_bug_in_run_is_reported_after_the_cleanup(
    runner: Cli,
    project: Path,
    fake_engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    debug: bool,
) -> None:
    monkeypatch.setattr(runner_mod.Runner, "run", runner.bug)
    out = runner.run(*debug_flag(debug), "run", str(project), "--no-build")
    runner.assert_bug(out, debug=debug)
    assert fake_engine.calls == DONE
