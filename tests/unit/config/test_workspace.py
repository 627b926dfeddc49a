"""uv workspace discovery on examples/monorepo, and `changed_since` in real git repos."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pydeploy.config.workspace import (
    Member,
    changed_since,
    closure,
    deployable,
    find_workspace_root,
    members,
    select,
)
from pydeploy.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
MONOREPO = ROOT / "examples" / "monorepo"


def names(found: list[Member]) -> list[str]:
    return [m.name for m in found]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding a copy of the example monorepo, one commit deep."""
    root = tmp_path / "repo"
    shutil.copytree(MONOREPO, root, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "initial")
    return root


# ---------------------------------------------------------------------------
# Discovery on the example


def test_example_members_and_their_workspace_dependencies() -> None:
    found = members(MONOREPO)
    assert names(found) == ["api", "shared", "web"]
    by_name = {m.name: m for m in found}
    assert by_name["api"].path == MONOREPO / "services" / "api"
    assert by_name["api"].workspace_deps == ("shared",)
    assert by_name["web"].workspace_deps == ("shared",)
    assert by_name["shared"].workspace_deps == ()
    assert by_name["shared"].path == MONOREPO / "libs" / "shared"
    assert [m.has_pydeploy for m in found] == [True, False, True]
    assert names(deployable(MONOREPO)) == ["api", "web"]


def test_example_lock_references_only_pypi() -> None:
    # The lock is shared with every builder container: no host-only indexes or wheel paths.
    lock = (MONOREPO / "uv.lock").read_text(encoding="utf-8")
    assert "file://" not in lock
    assert "/opt/" not in lock
    assert 'registry = "https://pypi.org/simple"' in lock
    assert 'editable = "libs/shared"' in lock


@pytest.mark.parametrize(
    "start", ["", "services/api", "services/api/main.py", "libs/shared/src/shared"]
)
def test_find_workspace_root_from_anywhere_inside(start: str) -> None:
    assert find_workspace_root(MONOREPO / start) == MONOREPO


def test_find_workspace_root_outside_a_workspace() -> None:
    assert find_workspace_root(ROOT / "examples" / "flask-app") is None


def test_members_of_a_non_workspace_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"no \[tool\.uv\.workspace\]"):
        members(ROOT / "examples" / "flask-app")


# ---------------------------------------------------------------------------
# Synthetic workspaces: globs, exclude, root member, transitive closure


def make_member(root: Path, rel: str, name: str, deps: list[str], pydeploy: bool) -> None:
    quoted = ", ".join(f'"{d}"' for d in deps)
    text = f'[project]\nname = "{name}"\nversion = "1"\ndependencies = [{quoted}]\n'
    if pydeploy:
        text += '[tool.pydeploy]\napp = "main:app"\n'
    write(root / rel / "pyproject.toml", text)


def test_globs_exclude_hidden_empty_and_root_member(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "Root_App"\nversion = "1"\ndependencies = ["svc-a"]\n'
        '[tool.pydeploy]\napp = "main:app"\n'
        '[tool.uv.workspace]\nmembers = ["packages/*", "tools/one"]\n'
        'exclude = ["packages/skip*"]\n',
    )
    make_member(tmp_path, "packages/a", "svc-a", ["Lib_B>=1", "requests"], pydeploy=True)
    make_member(tmp_path, "packages/b", "lib.b", ["lib-c; python_version >= '3'"], pydeploy=False)
    make_member(tmp_path, "packages/skipped", "skipped", [], pydeploy=True)
    make_member(tmp_path, "tools/one", "lib-c", [], pydeploy=False)
    make_member(tmp_path, "tools/two", "not-listed", [], pydeploy=True)
    make_member(tmp_path, "packages/.hidden", "hidden", [], pydeploy=True)
    (tmp_path / "packages" / "empty").mkdir()
    write(tmp_path / "packages" / "README.md", "not a member\n")

    found = members(tmp_path)
    assert names(found) == ["lib-b", "lib-c", "root-app", "svc-a"]
    by_name = {m.name: m for m in found}
    assert by_name["root-app"].path == tmp_path.resolve()
    assert by_name["svc-a"].workspace_deps == ("lib-b",)
    assert by_name["lib-b"].workspace_deps == ("lib-c",)
    assert names(closure(by_name["root-app"], found)) == ["lib-b", "lib-c", "svc-a"]
    assert names(closure(by_name["svc-a"], found)) == ["lib-b", "lib-c"]
    assert closure(by_name["lib-c"], found) == []
    assert names(deployable(tmp_path)) == ["root-app", "svc-a"]


def test_closure_survives_a_dependency_cycle(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.uv.workspace]\nmembers = ["m/*"]\n')
    make_member(tmp_path, "m/x", "x", ["y"], pydeploy=True)
    make_member(tmp_path, "m/y", "y", ["x"], pydeploy=False)
    found = members(tmp_path)
    assert names(closure(found[0], found)) == ["y"]
    assert names(closure(found[1], found)) == ["x"]


def test_matched_directory_without_pyproject_is_named(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.uv.workspace]\nmembers = ["m/*"]\n')
    write(tmp_path / "m" / "junk" / "notes.txt", "x\n")
    with pytest.raises(ConfigError) as info:
        members(tmp_path)
    assert "m/junk (matched by `tool.uv.workspace.members`" in info.value.message
    assert "`tool.uv.workspace.exclude`" in info.value.message


@pytest.mark.parametrize(
    ("workspace", "message"),
    [
        ('members = "m/*"', r"`tool\.uv\.workspace\.members` must be a list"),
        ('members = ["/abs/*"]', r"points outside the workspace root"),
        ('members = ["../x"]', r"points outside the workspace root"),
    ],
)
def test_bad_workspace_table(tmp_path: Path, workspace: str, message: str) -> None:
    write(tmp_path / "pyproject.toml", f"[tool.uv.workspace]\n{workspace}\n")
    with pytest.raises(ConfigError, match=message):
        members(tmp_path)


def test_duplicate_and_nameless_members(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.uv.workspace]\nmembers = ["m/*"]\n')
    make_member(tmp_path, "m/one", "Same_Name", [], pydeploy=False)
    make_member(tmp_path, "m/two", "same-name", [], pydeploy=False)
    with pytest.raises(ConfigError, match=r"Two workspace members are named"):
        members(tmp_path)
    write(tmp_path / "m" / "two" / "pyproject.toml", "[tool.pydeploy]\n")
    with pytest.raises(ConfigError, match=r"m/two/pyproject\.toml has no `project\.name`"):
        members(tmp_path)


def test_invalid_dependency_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.uv.workspace]\nmembers = ["m/*"]\n')
    make_member(tmp_path, "m/x", "x", ["not a requirement!!"], pydeploy=False)
    with pytest.raises(ConfigError, match=r"m/x/pyproject\.toml: `project\.dependencies`"):
        members(tmp_path)


# ---------------------------------------------------------------------------
# select


def test_select_by_any_spelling_keeps_order() -> None:
    found = deployable(MONOREPO)
    assert names(select(found, ())) == ["api", "web"]
    assert names(select(found, ("WEB", "Api"))) == ["api", "web"]
    assert names(select(found, ("web",))) == ["web"]


def test_select_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        select(deployable(MONOREPO), ("apii",))
    assert "`--only apii` names no workspace member" in info.value.message
    assert "Did you mean 'api'?" in info.value.message
    assert "Valid names: api, web." in info.value.message


def test_select_refuses_a_member_without_pydeploy() -> None:
    with pytest.raises(ConfigError, match=r"libs/shared has no \[tool\.pydeploy\] table"):
        select(members(MONOREPO), ("shared",))


# ---------------------------------------------------------------------------
# changed_since, in a real git repository


def test_nothing_changed(repo: Path) -> None:
    assert changed_since(repo, members(repo), "HEAD") == []


def test_library_change_marks_both_services(repo: Path) -> None:
    init = repo / "libs" / "shared" / "src" / "shared" / "__init__.py"
    init.write_text(init.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert names(changed_since(repo, members(repo), "HEAD")) == ["api", "web"]


def test_service_change_marks_only_that_service(repo: Path) -> None:
    app = repo / "services" / "web" / "app.py"
    app.write_text(app.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert names(changed_since(repo, members(repo), "HEAD")) == ["web"]


def test_lock_change_marks_every_service(repo: Path) -> None:
    lock = repo / "uv.lock"
    lock.write_text(lock.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert names(changed_since(repo, members(repo), "HEAD")) == ["api", "web"]


def test_committed_untracked_and_deleted_files_count(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    write(repo / "services" / "api" / "routes.py", "X = 1\n")
    git(repo, "add", "-A")
    git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "api: routes")
    assert names(changed_since(repo, members(repo), base)) == ["api"]
    # Relative to the new HEAD nothing changed; an untracked file and a deletion do count.
    assert changed_since(repo, members(repo), "HEAD") == []
    write(repo / "services" / "web" / "templates" / "new.html", "<p>\n")
    assert names(changed_since(repo, members(repo), "HEAD")) == ["web"]
    (repo / "services" / "web" / "templates" / "new.html").unlink()
    (repo / "services" / "api" / "routes.py").unlink()
    assert names(changed_since(repo, members(repo), "HEAD")) == ["api"]


def test_workspace_nested_in_a_larger_repository(tmp_path: Path) -> None:
    # Like examples/monorepo inside pydeploy's own repository: git paths are relative to
    # the repository's top level, not to the workspace root.
    top = tmp_path / "top"
    root = top / "deploy" / "monorepo"
    shutil.copytree(MONOREPO, root, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    write(top / "other" / "services" / "web" / "app.py", "x = 1\n")
    git(top, "init", "-q", "-b", "main")
    git(top, "add", "-A")
    git(top, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "initial")
    write(top / "other" / "services" / "web" / "app.py", "x = 2\n")
    write(top / "uv.lock", "not this workspace's lock\n")
    assert changed_since(root, members(root), "HEAD") == []
    write(root / "services" / "web" / "new.py", "y = 1\n")
    (root / "libs" / "shared" / "README.md").unlink()
    assert names(changed_since(root, members(root), "HEAD")) == ["api", "web"]


def test_ignored_and_unowned_files_do_not_count(repo: Path) -> None:
    write(repo / ".gitignore", "*.log\n")
    git(repo, "add", "-A")
    git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "ignore logs")
    write(repo / "services" / "api" / "debug.log", "noise\n")
    write(repo / "README.md", "# monorepo\n")
    write(repo / "docs" / "notes.md", "x\n")
    assert changed_since(repo, members(repo), "HEAD") == []


@pytest.mark.parametrize("ref", ["no-such-branch", "--output=/tmp/x", ""])
def test_bad_ref_is_a_config_error_naming_it(repo: Path, ref: str) -> None:
    with pytest.raises(ConfigError) as info:
        changed_since(repo, members(repo), ref)
    assert f"`--changed-since {ref}`" in info.value.message
    assert "is not a commit" in info.value.message


def test_not_a_git_repository(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    shutil.copytree(MONOREPO, root)
    with pytest.raises(ConfigError, match=r"is not inside a git repository"):
        changed_since(root, members(root), "HEAD")
