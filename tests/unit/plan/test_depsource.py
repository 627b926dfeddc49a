"""Which dependency source a build uses and why: `auto`'s order of precedence, shown by
`plan`; dependency files that disagree with the chosen one; production requirements
only (never requirements-dev.txt), with includes from elsewhere in the repository sent
to the builder and those from outside it refused. No engine."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from pydeploy.config.project import load_project
from pydeploy.errors import ConfigError
from pydeploy.plan import depinputs
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PROJECT = """\
    [project]
    name = "svc"
    version = "1.0"
    requires-python = ">=3.10"
    dependencies = ["six", "idna"]

    [tool.pydeploy]
    app = "app:app"
    """
UV_LOCK = 'version = 1\n[[package]]\nname = "six"\nversion = "1.16.0"\n'
PYLOCK = 'lock-version = "1.0"\n[[packages]]\nname = "six"\nversion = "1.16.0"\n'


def plan_of(root: Path) -> BuildPlan:
    return make_plan(load_project(root), Overrides(base_image="local/base:1"))


def project(root: Path, files: dict[str, str], table: str = PROJECT) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(table), encoding="utf-8")
    (root / "app.py").write_text("def app(environ, start_response):\n    return []\n", "utf-8")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def locks_from(root: Path, *names: str) -> dict[str, str]:
    return {name: (root / name).read_text(encoding="utf-8") for name in names}


def test_auto_precedence_is_the_documented_order(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "pipenv_app", tmp_path / "pipenv")
    shutil.copytree(FIXTURES / "pdm_app", tmp_path / "pdm")
    texts = {
        **locks_from(tmp_path / "pipenv", "Pipfile.lock"),
        **locks_from(tmp_path / "pdm", "pdm.lock"),
    }
    files_by_step = [
        {"requirements.txt": "six==1.16.0\n"},
        {"Pipfile.lock": texts["Pipfile.lock"]},
        {"pdm.lock": texts["pdm.lock"]},
        {"pylock.toml": PYLOCK},
        {"uv.lock": UV_LOCK},
    ]
    chosen = ["requirements", "Pipfile.lock", "pdm.lock", "pylock", "uv.lock"]
    root = project(tmp_path / "p", {})
    assert plan_of(root).dependency_source == "project"
    for step, source in zip(files_by_step, chosen, strict=True):
        project(root, step)
        plan = plan_of(root)
        assert plan.dependency_source == source
        assert plan.to_json()["dependencies"]["source_origin"].startswith("auto: ")
    origin = plan_of(root).dependency_origin
    assert "uv.lock is the first present of uv.lock > pylock.toml > poetry.lock" in origin
    assert "agreeing: pylock.toml, pdm.lock, Pipfile.lock, requirements.txt" in origin


def test_an_explicit_source_says_so_and_is_not_compared(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "poetry2_app", tmp_path / "p")
    root = tmp_path / "p"
    (root / "requirements.txt").write_text("itsdangerous==2.1.2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        plan_of(root)
    message = str(caught.value)
    assert "poetry.lock and requirements.txt, which disagree" in message
    assert "poetry.lock pins itsdangerous 2.2.0, requirements.txt pins 2.1.2" in message
    assert '`tool.pydeploy.dependencies.source = "poetry.lock"`' in (caught.value.hint or "")
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    (root / "pyproject.toml").write_text(
        text + '\n[tool.pydeploy.dependencies]\nsource = "requirements"\n', encoding="utf-8"
    )
    plan = plan_of(root)
    assert (plan.dependency_source, plan.dependency_origin) == (
        "requirements",
        "tool.pydeploy.dependencies.source",
    )


def test_a_missing_chosen_lock_and_a_broken_one_fail_at_plan(tmp_path: Path) -> None:
    table = PROJECT + '[tool.pydeploy.dependencies]\nsource = "pdm.lock"\n'
    root = project(tmp_path / "p", {}, table)
    with pytest.raises(ConfigError, match=r"is 'pdm.lock' but .*pdm.lock does not exist"):
        plan_of(root)
    shutil.copytree(FIXTURES / "pipenv_app", tmp_path / "q")
    lock = json.loads((tmp_path / "q" / "Pipfile.lock").read_text(encoding="utf-8"))
    lock["default"]["idna"]["hashes"] = []
    (tmp_path / "q" / "Pipfile.lock").write_text(json.dumps(lock), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"package `idna` 3\.7 has no hashes"):
        plan_of(tmp_path / "q")


def test_only_production_requirements_are_guessed(tmp_path: Path) -> None:
    dev = {"requirements-dev.txt": "pytest\n", "requirements-test.txt": "pytest\n"}
    plan = plan_of(project(tmp_path / "a", {**dev, "requirements.txt": "six\n"}))
    assert plan.dependencies.requirements == ("requirements.txt",)
    layout = {"requirements/base.txt": "six\n", "requirements/dev.txt": "-r base.txt\npytest\n"}
    plan = plan_of(
        project(tmp_path / "b", {**layout, "requirements/production.txt": "-r base.txt\n"})
    )
    assert plan.dependencies.requirements == ("requirements/production.txt",)
    plan = plan_of(project(tmp_path / "c", {**layout, "requirements/prod.txt": "-r base.txt\n"}))
    assert plan.dependencies.requirements == ("requirements/prod.txt",)
    # Only development files: [project] decides, and `plan` says why.
    plan = plan_of(project(tmp_path / "d", dev))
    assert plan.dependency_source == "project"
    assert "requirements-dev.txt, requirements-test.txt are not production's" in (
        plan.dependency_origin
    )
    # ... or, with nothing to resolve, the key to set is named.
    bare = '[tool.pydeploy]\napp = "app:app"\n'
    with pytest.raises(ConfigError, match="does not guess") as caught:
        plan_of(project(tmp_path / "e", layout, bare))
    assert "tool.pydeploy.dependencies.requirements" in (caught.value.hint or "")


def test_includes_from_the_repository_reach_the_builder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "common").mkdir()
    (repo / "common" / "base.txt").write_text("six==1.16.0\n", encoding="utf-8")
    root = project(repo / "services" / "api", {"requirements.txt": "-r ../../common/base.txt\n"})
    inputs = depinputs.dependency_inputs(plan_of(root))
    assert inputs.mount_root == repo
    assert inputs.copies == ("common/base.txt", "services/api")
    assert inputs.cwd == "services/api"
    assert "common/base.txt" in inputs.files
    assert ("requirements:../../common/base.txt", inputs.digests[0][1]) in inputs.digests


def test_includes_from_outside_the_repository_are_refused(tmp_path: Path) -> None:
    (tmp_path / "shared.txt").write_text("six\n", encoding="utf-8")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    root = project(repo, {"requirements.txt": "-r ../shared.txt\n"})
    with pytest.raises(ConfigError, match=r"includes .*shared\.txt, which is outside the git"):
        depinputs.dependency_inputs(plan_of(root))


def test_a_lock_is_judged_for_the_probed_python(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "pdm_app", tmp_path / "p")
    plan = plan_of(tmp_path / "p")
    unknown = depinputs.dependency_inputs(plan)
    probed = depinputs.dependency_inputs(plan, "3.11.2")
    assert any(line.startswith("tomli==2.0.1 ; ") for line in unknown.requirement_lines)
    assert not any(line.startswith("tomli") for line in probed.requirement_lines)
    assert probed.source == "pdm.lock"
    assert probed.digests[0][0] == "pdm.lock"


def test_locked_git_and_sdist_urls_may_be_built_by_the_light_builder(tmp_path: Path) -> None:
    """The wheels-only first attempt builds local packages only; a lock's git dependency
    is built from source too, so its name joins theirs (`--no-binary`)."""
    lock = {
        "_meta": {"hash": {"sha256": "x"}},
        "default": {
            "lib": {"git": "https://git.example/lib.git", "ref": "cafe1234"},
            "whl": {"file": "https://files.example/whl-1.0-py3-none-any.whl"},
        },
        "develop": {},
    }
    root = project(tmp_path / "p", {"Pipfile.lock": json.dumps(lock)})
    inputs = depinputs.dependency_inputs(plan_of(root), "3.11.2")
    assert inputs.local_names == ("lib",)
    assert inputs.requirement_lines == (
        "lib @ git+https://git.example/lib.git@cafe1234",
        "whl @ https://files.example/whl-1.0-py3-none-any.whl",
    )
