"""`plan` and `build` (cli/build.py) against a fake engine: bad input is a paragraph with
exit 2 before any engine work, a bug the internal-error line and its log (`--debug`: its
traceback), a cancelled build exit 130; however the build ends, the session removed its
containers and closed the engine."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pydeploy.build
from pydeploy.errors import CompileError
from pydeploy.plan import planner

if TYPE_CHECKING:
    from tests.unit.cli.conftest import Cli, FakeEngine

DONE = ["connect", "cleanup", "close"]


@dataclass(frozen=True)
class FakeLayer:
    role: str
    digest: str
    size: int


@dataclass(frozen=True)
class FakeImage:
    image_id: str = "sha256:" + "1" * 64
    own_layers: tuple[FakeLayer, ...] = (FakeLayer("app", "sha256:" + "2" * 64, 1_500_000),)


@dataclass(frozen=True)
class FakeResult:
    tags: tuple[str, ...] = ("demo:1.0",)
    image: FakeImage = field(default_factory=FakeImage)
    base_image_id: str = ""  # unknown: no no-change record is written

    def to_json(self) -> dict[str, Any]:
        return {"tags": list(self.tags), "image_id": self.image.image_id}


def pipeline(monkeypatch: pytest.MonkeyPatch, outcome: BaseException | FakeResult) -> None:
    def build(*_args: object, **_kwargs: object) -> FakeResult:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(pydeploy.build, "build", build)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--only", "api"], "--only, --changed-since and --jobs go with --all."),
        (["--jobs", "2"], "--only, --changed-since and --jobs go with --all."),
        (["--output", "tarball"], "--output 'tarball' is not a known output."),
        (["--tag", "Bad Repo:1"], "--tag: "),
    ],
)
def test_bad_build_input_is_exit_2_before_any_engine_work(
    runner: Cli, project: Path, args: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline(monkeypatch, AssertionError("the build ran"))
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # an engine that is not there
    out = runner.run("build", str(project), *args)
    runner.assert_paragraph(out, 2, "config", fragment)


def test_a_build_prints_its_result_and_closes_the_engine(
    runner: Cli, project: Path, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline(monkeypatch, FakeResult())
    out = runner.run("build", str(project))
    assert out.code == 0, out.output
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert lines[0].endswith(f"pydeploy: building demo:1.0 from {project} (build 0123456789ab)")
    assert lines[1:] == [
        f"built sha256:{'1' * 64} (demo:1.0)",
        f"  app           sha256:{'2' * 12}      1.50 MB",
    ]
    assert fake_engine.calls == DONE


def test_build_json_goes_to_stdout_and_the_metadata_file(
    runner: Cli,
    project: Path,
    fake_engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pipeline(monkeypatch, FakeResult())
    metadata = tmp_path / "out" / "build.json"
    metadata.parent.mkdir()
    out = runner.run("build", str(project), "--json", "--metadata-file", str(metadata))
    assert out.code == 0, out.output
    document = {"tags": ["demo:1.0"], "image_id": "sha256:" + "1" * 64}
    assert json.loads(out.stdout) == document
    assert json.loads(metadata.read_text()) == document
    assert fake_engine.calls == DONE


def test_an_unwritable_metadata_file_is_a_publish_error(
    runner: Cli,
    project: Path,
    fake_engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pipeline(monkeypatch, FakeResult())
    out = runner.run("build", str(project), "--metadata-file", str(tmp_path / "no" / "x.json"))
    assert out.stderr.startswith("pydeploy: building demo:1.0")
    runner.assert_paragraph(
        out.after(1), 8, "publish", f"Cannot write {tmp_path / 'no' / 'x.json'}"
    )
    assert fake_engine.calls == DONE


def test_a_cancelled_build_is_exit_130_after_the_cleanup(
    runner: Cli, project: Path, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline(monkeypatch, KeyboardInterrupt())
    out = runner.run("build", str(project))
    assert out.code == 130
    assert out.stderr.splitlines()[-1] == (
        "pydeploy: interrupted error: Build interrupted; its containers were removed."
    )
    assert fake_engine.calls == DONE


def test_a_failed_build_is_its_paragraph_after_the_cleanup(
    runner: Cli, project: Path, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline(monkeypatch, CompileError("psycopg2 failed to compile."))
    out = runner.run("build", str(project))
    runner.assert_paragraph(out.after(1), 6, "compile", "psycopg2 failed to compile.")
    assert fake_engine.calls == DONE


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_bug_in_the_build_is_reported_after_the_cleanup(
    runner: Cli,
    project: Path,
    fake_engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    debug: bool,
) -> None:
    monkeypatch.setattr(pydeploy.build, "build", runner.bug)
    out = runner.run(*(["--debug"] if debug else []), "build", str(project))
    assert out.stderr.startswith("pydeploy: building demo:1.0")
    runner.assert_bug(out.after(1), debug=debug)
    assert fake_engine.calls == DONE


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("command", ["plan", "build"])
def test_a_bug_in_planning_is_reported(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch, command: str, debug: bool
) -> None:
    monkeypatch.setattr(planner, "make_plan", runner.bug)
    out = runner.run(*(["--debug"] if debug else []), command, str(project))
    runner.assert_bug(out, debug=debug)


def test_build_all_without_members_says_so(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydeploy import multibuild

    monkeypatch.setattr(multibuild, "select_members", lambda *_args: [])
    out = runner.run("build", str(project), "--all", "--json")
    assert out.code == 0, out.output
    assert json.loads(out.stdout) == {"ok": True, "services": []}
    assert out.stderr == "pydeploy: no workspace member to build\nsummary:\n"


def test_a_cancelled_build_all_is_exit_130(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydeploy import multibuild

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(multibuild, "select_members", interrupted)
    out = runner.run("build", str(project), "--all")
    assert out.code == 130
    assert out.stderr.strip() == "pydeploy: interrupted."
