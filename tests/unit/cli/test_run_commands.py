"""`pydeploy run` with commands (against a fake engine): `-- CMD...` runs a one-off,
`--process NAME` a configured process, the release command runs first and a failure stops
the run with its exit code and its last lines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pydeploy.deploy import run as runner_mod
from pydeploy.engine.types import Mount, ResourceLimits

if TYPE_CHECKING:
    from tests.unit.cli.conftest import Cli, FakeEngine

DIGEST = "sha256:" + "a" * 64
TABLE = """
release-command = "python manage.py migrate"

[tool.pydeploy.processes]
worker = "celery -A demo worker"
"""


@pytest.fixture
def configured(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    with (project / "pyproject.toml").open("a", encoding="utf-8") as handle:
        handle.write(TABLE)
    monkeypatch.setattr(runner_mod, "find_image", lambda *_args: DIGEST)
    monkeypatch.setattr(runner_mod, "check_port_free", lambda *_args, **_kwargs: None)
    return project


def containers(monkeypatch: pytest.MonkeyPatch, codes: dict[str, int]) -> list[runner_mod.RunSpec]:
    """Fake containers: each run is recorded; one whose command starts with a key of
    `codes` writes a line and exits with that code, the others with 0."""
    ran: list[runner_mod.RunSpec] = []

    def run(self: runner_mod.Runner, on_output: runner_mod.OnOutput, _on_event: object) -> int:
        ran.append(self.spec)
        word = self.spec.command[0] if self.spec.command else ""
        on_output(f"output of {word or 'the server'}", True)
        return codes.get(word, 0)

    monkeypatch.setattr(runner_mod.Runner, "run", run)
    return ran


@pytest.mark.usefixtures("fake_engine")
def test_a_one_off_after_dashes_runs_alone_with_its_exit_code(
    runner: Cli, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = containers(monkeypatch, {"python": 7})
    out = runner.run("run", str(configured), "--no-build", "-e", "A=1", "--", "python", "-c", "x")
    assert out.code == 7, out.output
    (spec,) = ran  # no release command before a one-off
    assert spec.command == ("python", "-c", "x")
    assert spec.env["A"] == "1"
    assert spec.publish is None
    assert spec.name.endswith("-command")


@pytest.mark.usefixtures("fake_engine")
def test_the_release_command_runs_before_the_server(
    runner: Cli, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = containers(monkeypatch, {})
    prepared: list[object] = []
    monkeypatch.setattr(runner_mod, "prepare_volumes", lambda *args: prepared.append(args[2]))
    out = runner.run("run", str(configured), "--no-build", "-v", "data:/data")
    assert out.code == 0, out.output
    assert [s.command for s in ran] == [("python", "manage.py", "migrate"), ()]
    assert all(s.volumes == ran[0].volumes for s in ran)
    assert ran[0].volumes[0].source == "data"
    assert prepared == [ran[0].volumes]


@pytest.mark.usefixtures("fake_engine")
def test_a_failing_release_command_stops_the_run_with_its_code_and_tail(
    runner: Cli, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = containers(monkeypatch, {"python": 4})
    out = runner.run("run", str(configured), "--no-build")
    assert out.code == 4
    assert len(ran) == 1  # the server never started
    assert "the release command `python manage.py migrate` exited with 4" in out.stderr
    assert "  | output of python" in out.stderr


@pytest.mark.usefixtures("fake_engine")
def test_no_release_skips_it(
    runner: Cli, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = containers(monkeypatch, {"python": 4})
    assert runner.run("run", str(configured), "--no-build", "--no-release").code == 0
    assert [s.command for s in ran] == [()]


@pytest.mark.usefixtures("fake_engine")
def test_a_process_runs_its_command_after_the_release(
    runner: Cli, configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = containers(monkeypatch, {"celery": 3})
    out = runner.run("run", "--process", "worker", str(configured), "--no-build")
    assert out.code == 3
    assert [s.command for s in ran][1] == ("celery", "-A", "demo", "worker")
    assert ran[1].name.endswith("-worker")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--process", "mailer"], "--process mailer: tool.pydeploy.processes has no `mailer`"),
        (["--process", "worker", "--", "ls"], "both say what to run"),
        (["--volume", "/host/dir:/data"], "--volume '/host/dir:/data' is not NAME:/path"),
    ],
)
def test_bad_run_input_is_exit_2_before_the_engine(
    runner: Cli, configured: Path, fake_engine: FakeEngine, args: list[str], fragment: str
) -> None:
    dashes = args.index("--") if "--" in args else len(args)
    out = runner.run("run", str(configured), *args[:dashes], "--no-build", *args[dashes:])
    runner.assert_paragraph(out, 2, "config", fragment)
    assert fake_engine.calls == []


def test_a_volume_on_a_writable_directory_replaces_its_tmpfs() -> None:
    """The release command and the server share what a volume holds; a tmpfs over the same
    directory would give each container an empty one (the server then missed the tables
    the release command created)."""
    spec = runner_mod.RunSpec(
        image="app:1", name="run", network="host", port=8000, container_port=8000, env={},
        limits=ResourceLimits(), stop_timeout=10,
        tmpfs={"/app/instance": "uid=1", "/app/instance/cache": "uid=1", "/app/logs": "uid=1"},
        volumes=(Mount("/app/instance", "appdata"),),
    )  # fmt: skip
    assert spec.scratch_mounts == {"/app/logs": "uid=1"}
