"""What reaches the app layer: never secrets/VCS/venvs; ignore files and config honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeploy.appfiles import app_files
from pydeploy.plan import make_plan
from pydeploy.project import load_project

FILES = [
    "main.py",
    "pkg/__init__.py",
    "pkg/views.py",
    "pkg/__pycache__/views.cpython-311.pyc",
    "templates/index.html",
    ".env",
    ".env.production",
    ".git/config",
    ".venv/bin/python",
    "venv/lib/x.py",
    "tests/test_main.py",
    "test_top.py",
    "build/lib/main.py",
    "dist/demo-1.0.whl",
    "node_modules/x/index.js",
    "logs/debug.log",
    "pkg/local_settings.py",
    "static/app.js",
    "static/app.js.map",
    "docs/guide.md",
    "frontend/build/bundle.js",
    "id_rsa",
]


def make_project(tmp_path: Path, table: str = "") -> Path:
    for rel in FILES:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {rel}\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "1.0"\n[tool.pydeploy]\napp = "main:app"\n' + table
    )
    (tmp_path / ".gitignore").write_text("*.log\n")
    (tmp_path / "pkg" / ".gitignore").write_text("local_settings.py\n")
    (tmp_path / ".dockerignore").write_text("docs\nstatic/*.map\n")
    return tmp_path


def paths(root: Path) -> set[str]:
    plan = make_plan(load_project(root))
    return {e.path for e in app_files(plan).entries if e.kind == "file"}


def test_default_filtering(tmp_path: Path) -> None:
    kept = paths(make_project(tmp_path))
    assert kept == {
        "app/main.py",
        "app/pkg/__init__.py",
        "app/pkg/views.py",
        "app/templates/index.html",
        "app/static/app.js",
        "app/pyproject.toml",
        "app/.gitignore",
        "app/pkg/.gitignore",
        "app/.dockerignore",
    }


def test_include_brings_back_build_outputs_and_tests_but_never_secrets(tmp_path: Path) -> None:
    table = 'include = ["frontend/build/", ".env", "tests/"]\nexclude-tests = false\n'
    kept = paths(make_project(tmp_path, table))
    assert "app/frontend/build/bundle.js" in kept
    assert "app/tests/test_main.py" in kept
    assert "app/test_top.py" in kept
    assert "app/.env" not in kept, ".env is never included"
    assert not any(p.startswith("app/.git/") for p in kept)


def test_configured_excludes(tmp_path: Path) -> None:
    kept = paths(make_project(tmp_path, 'exclude = ["templates/", "*.html"]\n'))
    assert "app/templates/index.html" not in kept
    assert "app/main.py" in kept


@pytest.mark.parametrize("name", [".env", ".git/config", ".venv/bin/python", "id_rsa"])
def test_never_list(tmp_path: Path, name: str) -> None:
    assert f"app/{name}" not in paths(make_project(tmp_path))


def test_entries_are_root_owned_and_not_group_writable(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    (root / "main.py").chmod(0o777)
    plan = make_plan(load_project(root))
    for entry in app_files(plan).entries:
        assert entry.uid == 0
        assert entry.gid == 0
        assert entry.mode & 0o022 == 0, entry
