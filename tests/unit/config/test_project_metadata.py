"""What a project is called, versioned and which Python it allows, for every shape of
pyproject.toml: PEP 621 [project] (also Poetry 2), Poetry 1's [tool.poetry], and none at
all (only tool tables): named by `tool.pydeploy.name` or the directory, tagged by git."""

from __future__ import annotations

import re
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.version import Version

from pydeploy.config.project import (
    POETRY_PYTHON,
    REQUIRES_PYTHON,
    check_python_allowed,
    load_project,
    poetry_specifiers,
    resolve_python,
)
from pydeploy.errors import ConfigError
from pydeploy.plan.planner import Overrides, make_plan

APP = "from flask import Flask\napp = Flask(__name__)\n"


def project_at(root: Path, pyproject: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(pyproject), encoding="utf-8")
    (root / "app.py").write_text(APP, encoding="utf-8")
    for name, text in (files or {}).items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def commit_all(repo: Path) -> str:
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "initial")
    return git(repo, "rev-parse", "--short", "HEAD")


def message_of(call: Callable[[], object]) -> str:
    """The one paragraph the CLI would print for the ConfigError `call` raises."""
    with pytest.raises(ConfigError) as caught:
        call()
    return caught.value.message


ONLY_TABLE = '[tool.pydeploy]\napp = "app:app"\n'


# --- no [project]: only tool tables -----------------------------------------------------


def test_a_pyproject_holding_only_the_table_is_a_project(tmp_path: Path) -> None:
    project = load_project(project_at(tmp_path / "My Shop_2", ONLY_TABLE))
    assert (project.metadata, project.name, project.name_origin) == (
        "none",
        "My Shop_2",
        "directory name",
    )
    # Outside a git checkout, the tag is `latest` and says why.
    assert (project.version, project.version_origin) == ("latest", "default: not a git checkout")
    assert project.python_constraint is None
    plan = make_plan(project, Overrides(base_image="local/base:1"))
    assert (plan.image_name, plan.image_name_origin) == ("my-shop_2", "directory name")
    assert plan.tags == ("my-shop_2:latest",)
    document = plan.to_json()
    assert document["image_name"] == {"name": "my-shop_2", "origin": "directory name"}
    assert document["project"]["version_origin"] == "default: not a git checkout"
    assert document["tags_origin"] == "default: not a git checkout"


def test_other_tool_tables_beside_it_change_nothing(tmp_path: Path) -> None:
    text = "[tool.black]\nline-length = 99\n[tool.ruff]\nselect = ['E']\n" + ONLY_TABLE
    project = load_project(project_at(tmp_path / "svc", text))
    assert (project.name, project.metadata) == ("svc", "none")


def test_tool_pydeploy_name_names_it(tmp_path: Path) -> None:
    root = project_at(tmp_path / "whatever", ONLY_TABLE + 'name = "team/shop"\n')
    project = load_project(root)
    assert (project.name, project.name_origin) == ("team/shop", "tool.pydeploy.name")
    plan = make_plan(project, Overrides(base_image="local/base:1"))
    assert (plan.image_name, plan.image_name_origin) == ("team/shop", "tool.pydeploy.name")


def test_a_directory_name_without_ascii_needs_a_name(tmp_path: Path) -> None:
    project = load_project(project_at(tmp_path / "日本", ONLY_TABLE))
    text = message_of(lambda: make_plan(project, Overrides(base_image="local/base:1")))
    assert re.search(r"directory name '日本' of .*tool\.pydeploy\.name", text), text


def test_git_describe_tags_it_short_commit_then_nearest_tag_then_dirty(tmp_path: Path) -> None:
    root = project_at(tmp_path / "svc", ONLY_TABLE)
    short = commit_all(root)
    project = load_project(root)
    assert (project.version, project.version_origin) == (short, "git describe")
    git(root, "tag", "release/1.2")  # `/` is not allowed in an image tag
    assert load_project(root).version == "release-1.2"
    (root / "app.py").write_text(APP + "# changed\n", encoding="utf-8")
    assert load_project(root).version == "release-1.2-dirty"
    plan = make_plan(load_project(root), Overrides(base_image="local/base:1"))
    assert plan.tags == ("svc:release-1.2-dirty",)
    assert plan.tags_origin == "git describe"


def test_tags_from_the_table_still_win(tmp_path: Path) -> None:
    root = project_at(tmp_path / "svc", ONLY_TABLE + 'tags = ["edge"]\n')
    plan = make_plan(load_project(root), Overrides(base_image="local/base:1"))
    assert (plan.tags, plan.tags_origin) == (("svc:edge",), "tool.pydeploy.tags")


def test_an_empty_project_table_is_still_an_error_that_says_what_else_works(
    tmp_path: Path,
) -> None:
    root = project_at(tmp_path / "svc", "[project]\n" + ONLY_TABLE)
    text = message_of(lambda: load_project(root))
    assert re.search(r"without `project.name`.*holding only \[tool.pydeploy\]", text), text


# --- PEP 621 (unchanged) and Poetry 2 -------------------------------------------------------


def test_project_metadata_is_read_as_before(tmp_path: Path) -> None:
    root = project_at(
        tmp_path / "p",
        """\
        [project]
        name = "Café Shop"
        version = "2.0"
        requires-python = ">=3.11"

        [tool.pydeploy]
        app = "app:app"
        """,
    )
    commit_all(root)  # git never replaces a written version
    project = load_project(root)
    assert (project.name, project.version, project.metadata) == ("Café Shop", "2.0", "project")
    assert (project.name_origin, project.version_origin) == ("project.name", "project.version")
    assert project.python_constraint is not None
    assert project.python_constraint.key == REQUIRES_PYTHON
    assert project.requires_python == ">=3.11"
    plan = make_plan(project, Overrides(base_image="local/base:1"))
    assert plan.tags == ("cafe-shop:2.0",)
    assert (plan.image_name_origin, plan.tags_origin) == ("project.name", "project.version")


def test_a_dynamic_version_is_latest_as_before(tmp_path: Path) -> None:
    root = project_at(
        tmp_path / "p",
        '[project]\nname = "p"\ndynamic = ["version"]\n' + ONLY_TABLE,
    )
    commit_all(root)
    project = load_project(root)
    assert (project.version, project.version_origin) == (
        "latest",
        "default: project.version is dynamic",
    )


POETRY2 = """\
    [project]
    name = "shop"
    dynamic = ["version"]
    dependencies = ["flask>=3"]

    [tool.poetry]
    version = "3.1.0"

    [tool.poetry.dependencies]
    python = "^3.11"

    [tool.pydeploy]
    app = "app:app"
    """


def test_poetry_2_uses_project_and_its_dynamic_version_from_tool_poetry(tmp_path: Path) -> None:
    project = load_project(project_at(tmp_path / "p", POETRY2))
    assert (project.metadata, project.name, project.version) == ("project", "shop", "3.1.0")
    assert project.version_origin == "tool.poetry.version"
    # No requires-python: Poetry's python dependency constrains the interpreter.
    assert project.python_constraint is not None
    assert project.python_constraint.key == POETRY_PYTHON
    assert project.python_constraint.allows("3.12")
    assert not project.python_constraint.allows("3.10")


def test_requires_python_wins_over_poetry_s_python(tmp_path: Path) -> None:
    text = POETRY2.replace('name = "shop"', 'name = "shop"\n    requires-python = ">=3.12"')
    project = load_project(project_at(tmp_path / "p", text))
    assert project.python_constraint is not None
    assert project.python_constraint.key == REQUIRES_PYTHON


# --- Poetry 1 -----------------------------------------------------------------------------

POETRY1 = """\
    [tool.poetry]
    name = "fastapi-shop"
    version = "0.4.2"
    description = "A shop"

    [tool.poetry.dependencies]
    python = "^3.9"
    fastapi = "^0.110"

    [tool.poetry.dev-dependencies]
    pytest = "^8"

    [tool.pydeploy]
    app = "app:app"
    """


def test_poetry_1_gives_name_version_and_python(tmp_path: Path) -> None:
    project = load_project(project_at(tmp_path / "rw", POETRY1))
    assert (project.metadata, project.name, project.version) == (
        "poetry",
        "fastapi-shop",
        "0.4.2",
    )
    assert (project.name_origin, project.version_origin) == (
        "tool.poetry.name",
        "tool.poetry.version",
    )
    assert project.description == "A shop"
    assert project.python_constraint is not None
    assert project.python_constraint.text == "^3.9"
    assert str(project.python_constraint) == "<4,>=3.9"
    assert resolve_python(project) == ("3.13", POETRY_PYTHON)
    plan = make_plan(project, Overrides(base_image="local/base:1"))
    assert plan.tags == ("fastapi-shop:0.4.2",)
    assert plan.to_json()["project"]["metadata"] == "poetry"


def test_poetry_python_decides_the_default_interpreter(tmp_path: Path) -> None:
    text = POETRY1.replace('python = "^3.9"', 'python = "~3.11"')
    project = load_project(project_at(tmp_path / "rw", text))
    assert resolve_python(project) == ("3.11", POETRY_PYTHON)
    with pytest.raises(ConfigError, match=r"3\.12 \(from base image b\).*tool\.poetry"):
        check_python_allowed(project, "3.12", "base image b")
    check_python_allowed(project, "3.11.9", "base image b")


def test_poetry_python_as_a_table(tmp_path: Path) -> None:
    text = POETRY1.replace('python = "^3.9"', 'python = { version = ">=3.10,<3.13" }')
    project = load_project(project_at(tmp_path / "rw", text))
    assert project.python_constraint is not None
    assert project.python_constraint.allows("3.12")
    assert not project.python_constraint.allows("3.13")


@pytest.mark.parametrize("python", ["'^three'", "'>=3.x'", "3"])
def test_a_bad_poetry_python_names_the_key(tmp_path: Path, python: str) -> None:
    text = POETRY1.replace('python = "^3.9"', f"python = {python}")
    root = project_at(tmp_path / "rw", text)
    message = message_of(lambda: load_project(root))
    assert re.search(r"`tool\.poetry\.dependencies\.python` = .*Poetry's syntax", message)


def test_poetry_without_version_is_tagged_by_git(tmp_path: Path) -> None:
    root = project_at(tmp_path / "rw", POETRY1.replace('version = "0.4.2"\n', ""))
    assert load_project(root).version_origin == "default: not a git checkout"
    short = commit_all(root)
    assert load_project(root).version == short


@pytest.mark.parametrize(
    ("constraint", "allowed", "refused"),
    [
        ("^3.9", ["3.9", "3.13"], ["3.8", "4.0"]),
        ("~3.11", ["3.11", "3.11.9"], ["3.10", "3.12"]),
        ("~3", ["3.0", "3.14"], ["4.0"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
        ("3.11", ["3.11", "3.11.4"], ["3.12"]),
        ("==3.11", ["3.11.4"], ["3.12"]),
        ("3.11.*", ["3.11.2"], ["3.12"]),
        (">=3.8,<3.12", ["3.8", "3.11"], ["3.12"]),
        (">= 3.8 < 3.12", ["3.11"], ["3.12"]),
        ("~=3.10", ["3.10", "3.13"], ["3.9"]),
        (">=2.7,<2.8 || >=3.10", ["2.7", "3.12"], ["3.9"]),
        ("*", ["3.9", "3.14"], []),
    ],
)
def test_poetry_constraints_become_pep_440(
    constraint: str, allowed: list[str], refused: list[str]
) -> None:

    alternatives = poetry_specifiers(constraint)
    for version in allowed:
        assert any(s.contains(Version(version)) for s in alternatives), version
    for version in refused:
        assert not any(s.contains(Version(version)) for s in alternatives), version


# --- .python-version beside the constraints -----------------------------------------------


def test_python_version_file_wins_and_is_a_pin(tmp_path: Path) -> None:
    root = project_at(tmp_path / "rw", POETRY1, {".python-version": "3.12.4\n"})
    project = load_project(root)
    assert resolve_python(project) == ("3.12", ".python-version")
    assert project.python_version_path == root / ".python-version"
    plan = make_plan(project, Overrides(base_image="local/base:1"))
    assert plan.python_pin is not None
    assert (plan.python_pin.version, plan.python_pin.origin) == ("3.12", ".python-version")


def test_python_version_file_outside_the_poetry_constraint_is_refused(tmp_path: Path) -> None:
    text = POETRY1.replace('python = "^3.9"', 'python = "~3.11"')
    root = project_at(tmp_path / "rw", text, {".python-version": "3.12\n"})
    with pytest.raises(ConfigError, match=r"3\.12 \(from \.python-version\).*~3\.11"):
        resolve_python(load_project(root))
