"""`init`, `check` and `plan` on the project shapes that have no [project] table: no
pyproject.toml at all, and a uv workspace root (a virtual one, or one holding a table)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner, Result

from pydeploy.cli.main import cli
from pydeploy.config.models import read_pyproject

ROOT = Path(__file__).resolve().parents[3]
MONOREPO = ROOT / "examples" / "monorepo"
FLASK = "from flask import Flask\n\napp = Flask(__name__)\n"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_paragraph(result: Result) -> str:
    text = result.output.strip()
    assert "\n" not in text, text
    assert "Traceback" not in text
    return text


# --- no pyproject.toml ---------------------------------------------------------------------


def test_commands_without_pyproject_say_to_run_init(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(FLASK, encoding="utf-8")
    for command in ("plan", "check", "build"):
        result = run(command, str(tmp_path))
        assert result.exit_code != 0
        text = one_paragraph(result)
        assert "No pyproject.toml in" in text, text
        assert f"pydeploy init {tmp_path}" in text


def test_init_creates_a_pyproject_holding_only_the_table(tmp_path: Path) -> None:
    project = tmp_path / "Shop API"
    project.mkdir()
    (project / "server.py").write_text(FLASK, encoding="utf-8")
    (project / "requirements.txt").write_text("flask>=3\n", encoding="utf-8")
    result = run("init", str(project))
    assert result.exit_code == 0, result.output
    assert "created" in result.output
    assert "server:app" in result.output
    data = read_pyproject(project)
    assert set(data) == {"tool"}
    assert set(data["tool"]) == {"pydeploy"}
    assert data["tool"]["pydeploy"] == {"app": "server:app", "server": {}, "healthcheck": {}}
    text = (project / "pyproject.toml").read_text(encoding="utf-8")
    assert '# name = "shop-api"' in text
    assert run("check", str(project)).exit_code == 0
    plan = run("plan", "--json", str(project))
    assert plan.exit_code == 0, plan.output
    document = json.loads(plan.output)
    assert document["image_name"] == {"name": "shop-api", "origin": "directory name"}
    assert document["dependencies"]["source"] == "requirements"


def test_init_without_an_app_still_creates_the_table_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "lib.py").write_text("x = 1\n", encoding="utf-8")
    result = run("init", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "no app object was found" in result.output
    assert "app" not in read_pyproject(tmp_path)["tool"]["pydeploy"]
    assert '# app = "main:app"' in (tmp_path / "pyproject.toml").read_text(encoding="utf-8")
    # What follows is the usual, clear "name the app" error, not a missing-file one.
    check = run("check", str(tmp_path))
    assert check.exit_code != 0
    assert "tool.pydeploy.app" in one_paragraph(check)


def test_init_with_app_creates_the_file_with_that_app(tmp_path: Path) -> None:
    result = run("init", str(tmp_path), "--app", "web.main:create")
    assert result.exit_code == 0, result.output
    assert read_pyproject(tmp_path)["tool"]["pydeploy"]["app"] == "web.main:create"


def test_init_all_outside_a_workspace_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(FLASK, encoding="utf-8")
    result = run("init", "--all", str(tmp_path))
    assert result.exit_code != 0
    assert "not a workspace root" in one_paragraph(result)
    assert not (tmp_path / "pyproject.toml").exists()


# --- a virtual uv workspace root -----------------------------------------------------------


def bare_monorepo(tmp_path: Path) -> Path:
    """examples/monorepo with every [tool.pydeploy] table removed from its members."""
    root = tmp_path / "mono"
    shutil.copytree(MONOREPO, root, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    for pyproject in root.glob("*/*/pyproject.toml"):
        kept: list[str] = []
        skipping = False
        for line in pyproject.read_text(encoding="utf-8").splitlines(keepends=True):
            if line.startswith("["):
                skipping = line.startswith("[tool.pydeploy")
            if not skipping:
                kept.append(line)
        pyproject.write_text("".join(kept), encoding="utf-8")
    return root


def test_init_at_a_virtual_root_lists_members_and_writes_nothing(tmp_path: Path) -> None:
    root = bare_monorepo(tmp_path)
    before = (root / "pyproject.toml").read_bytes()
    result = run("init", str(root))
    assert result.exit_code == 0, result.output
    assert "uv workspace root without [project]" in result.output
    assert "pydeploy init services/api" in result.output
    assert "pydeploy init services/web" in result.output
    assert "shared (libs/shared): no app object found" in result.output
    assert "pydeploy init --all" in result.output
    assert (root / "pyproject.toml").read_bytes() == before
    assert "pydeploy" not in read_pyproject(root / "services" / "api").get("tool", {})


def test_init_all_sets_up_every_member_with_an_app(tmp_path: Path) -> None:
    root = bare_monorepo(tmp_path)
    result = run("init", "--all", str(root))
    assert result.exit_code == 0, result.output
    for service in ("api", "web"):
        assert "pydeploy" in read_pyproject(root / "services" / service)["tool"]
    assert "pydeploy" not in read_pyproject(root / "libs" / "shared").get("tool", {})
    assert "pydeploy" not in read_pyproject(root).get("tool", {})
    again = run("init", str(root))
    assert "api (services/api): has a [tool.pydeploy] table" in again.output
    assert "pydeploy init services" not in again.output
    # check at the root now validates each member.
    check = run("check", str(root))
    assert check.exit_code == 0, check.output
    assert "deployable members are valid" in check.output
    assert "(services/api): app " in check.output
    assert "(services/web): app " in check.output


def test_check_and_plan_at_a_root_without_members_set_up_explain(tmp_path: Path) -> None:
    root = bare_monorepo(tmp_path)
    for command in ("check", "plan"):
        result = run(command, str(root))
        assert result.exit_code != 0
        text = one_paragraph(result)
        assert "uv workspace root without [project]" in text, text
        assert "No member has a [tool.pydeploy] table yet" in text
        assert "`pydeploy init --all`" in text


def test_a_table_at_a_virtual_root_is_explained(tmp_path: Path) -> None:
    root = tmp_path / "mono"
    shutil.copytree(MONOREPO, root, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    with (root / "pyproject.toml").open("a", encoding="utf-8") as file:
        file.write("\n[tool.pydeploy]\nport = 9000\n")
    for command in ("check", "plan"):
        result = run(command, str(root))
        assert result.exit_code != 0
        text = one_paragraph(result)
        assert "configures no image (members do not inherit it)" in text, text
        assert "api (services/api)" in text
        assert "Move the table's keys" in text
    # Members still plan and build on their own.
    assert run("plan", str(root / "services" / "api")).exit_code == 0


def test_plan_at_a_virtual_root_with_members_points_at_them(tmp_path: Path) -> None:
    root = tmp_path / "mono"
    shutil.copytree(MONOREPO, root, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    result = run("plan", str(root))
    assert result.exit_code != 0
    text = one_paragraph(result)
    assert "`pydeploy build --all`" in text, text
    assert "`pydeploy plan services/api`" in text
    assert run("check", str(root)).exit_code == 0
