"""Member selection for `build --all` (no engine): a changed library marks its dependents."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pydeploy.errors import ConfigError, PydeployError
from pydeploy.multibuild import ServiceOutcome, exit_code, select_members

MONOREPO = Path(__file__).resolve().parents[2] / "examples" / "monorepo"


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-C", str(root), *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "mono"
    shutil.copytree(MONOREPO, root)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "init")
    return root


def names(root: Path, changed_since: str | None = None, only: tuple[str, ...] = ()) -> list[str]:
    return [m.name for m in select_members(root, only, changed_since)]


def test_all_deployable_members(repo: Path) -> None:
    assert names(repo) == ["api", "web"]
    assert names(repo / "services" / "api") == ["api", "web"], "found from inside a member"


def test_library_change_selects_its_dependents(repo: Path) -> None:
    lib = next((repo / "libs" / "shared").rglob("__init__.py"))
    lib.write_text(lib.read_text() + "\n# changed\n")
    assert names(repo, "HEAD") == ["api", "web"]


def test_service_change_selects_only_that_service(repo: Path) -> None:
    app = repo / "services" / "web" / "app.py"
    app.write_text(app.read_text() + "\n# changed\n")
    assert names(repo, "HEAD") == ["web"]
    assert names(repo, "HEAD", ("api",)) == []


def test_nothing_changed(repo: Path) -> None:
    assert names(repo, "HEAD") == []


def test_outside_a_workspace(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    with pytest.raises(ConfigError, match=r"--all needs a uv workspace"):
        select_members(tmp_path, (), None)


def test_exit_code_is_the_first_failure_by_order() -> None:
    ok = ServiceOutcome("a", Path())
    failed = ServiceOutcome("b", Path(), error=ConfigError("bad"))
    other = ServiceOutcome("c", Path(), error=PydeployError("bug"))
    assert exit_code([failed, other]) == 2
    assert exit_code([other, failed]) == 1
    assert exit_code([]) == 0
    assert not ok.ok


@pytest.mark.parametrize("fails", [False, True], ids=["built", "failed"])
def test_each_members_engine_is_cleaned_up_and_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    from pydeploy import build as build_mod
    from pydeploy import multibuild
    from pydeploy.config.workspace import Member
    from pydeploy.engine.client import Engine
    from pydeploy.errors import BuildError

    calls: list[str] = []

    class FakeEngine:
        # Engine's own __exit__ (cleanup, then close) is tested with the engine client.
        __exit__ = Engine.__exit__

        def __enter__(self) -> FakeEngine:
            return self

        def cleanup(self) -> None:
            calls.append("cleanup")

        def close(self) -> None:
            calls.append("close")

    def build(*_args: object) -> object:
        if fails:
            raise BuildError("no wheel")
        return object()

    monkeypatch.setattr(multibuild, "load_project", lambda path: path)
    monkeypatch.setattr(multibuild, "make_plan", lambda project, _overrides, _environ=None: project)
    monkeypatch.setattr(Engine, "connect", FakeEngine)
    monkeypatch.setattr(build_mod, "build", build)
    members = [Member("api", tmp_path, has_pydeploy=True, workspace_deps=())]
    progress: list[str] = []

    def report(who: str, step: str, *_rest: object) -> None:
        progress.append(f"{who} {step}")

    [outcome] = multibuild.build_members(members, None, None, report)  # type: ignore[arg-type]
    assert outcome.ok is not fails
    assert calls == ["cleanup", "close"]
    assert progress == [f"api {'failed' if fails else 'done'}"]
