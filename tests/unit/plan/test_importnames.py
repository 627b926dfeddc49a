"""Which import name a source file has once its project is installed: the build
backends' renames, read from pyproject.toml, and detection naming modules by them."""

from __future__ import annotations

import textwrap
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from pydeploy.config.toml import parse_toml
from pydeploy.plan.detect import scan_project
from pydeploy.plan.importnames import module_parts, source_roots


def name_of(pyproject: str, path: str, src_layout: bool = False) -> str:
    data: dict[str, Any] = parse_toml(textwrap.dedent(pyproject), "pyproject.toml")
    return ".".join(module_parts(PurePosixPath(path), source_roots(data), src_layout))


@pytest.mark.parametrize(
    ("pyproject", "path", "name"),
    [
        # hatch: `sources` as a mapping renames, as a list strips; `packages` ships by name.
        ('[tool.hatch.build.targets.wheel.sources]\n"src/webapp" = "shop"\n',
         "src/webapp/main.py", "shop.main"),
        ('[tool.hatch.build.targets.wheel.sources]\n"src/webapp" = "shop.web"\n',
         "src/webapp/__init__.py", "shop.web.__init__"),
        ('[tool.hatch.build.targets.wheel.sources]\n"lib" = ""\n', "lib/svc/api.py", "svc.api"),
        ('[tool.hatch.build.targets.wheel]\nsources = ["code"]\n', "code/svc/api.py", "svc.api"),
        ('[tool.hatch.build.targets.wheel]\npackages = ["code/svc"]\n', "code/svc/api.py",
         "svc.api"),
        ('[tool.hatch.build.sources]\n"src/x" = "y"\n', "src/x/a.py", "y.a"),
        # setuptools: package-dir renames or moves the root; find.where moves it.
        ('[tool.setuptools.package-dir]\napp = "src/webapp"\n', "src/webapp/views.py",
         "app.views"),
        ('[tool.setuptools.package-dir]\n"" = "lib"\n', "lib/app/views.py", "app.views"),
        ('[tool.setuptools.packages.find]\nwhere = ["python"]\n', "python/app/x.py", "app.x"),
        # poetry: `from` is the root, `to` a prefix.
        ('[[tool.poetry.packages]]\ninclude = "app"\nfrom = "lib"\n', "lib/app/main.py",
         "app.main"),
        ('[[tool.poetry.packages]]\ninclude = "app"\nfrom = "lib"\nto = "vendor"\n',
         "lib/app/main.py", "vendor.app.main"),
        # Nothing said: a src layout drops `src`; other paths are their own names.
        ("", "src/app/main.py", "src.app.main"),
        ("[tool.flit.module]\nname = 'app'\n", "app/main.py", "app.main"),
    ],
)  # fmt: skip
def test_backend_renames(pyproject: str, path: str, name: str) -> None:
    assert name_of(pyproject, path) == name


def test_default_src_layout_and_the_most_specific_rule() -> None:
    assert name_of("", "src/app/main.py", src_layout=True) == "app.main"
    both = '[tool.setuptools.package-dir]\n"" = "src"\nshop = "src/webapp"\n'
    assert name_of(both, "src/webapp/a.py") == "shop.a"
    assert name_of(both, "src/other/a.py") == "other.a"


@pytest.mark.parametrize(
    "pyproject",
    [
        '[tool.hatch.build.targets.wheel.sources]\n"../outside" = "x"\n',
        '[tool.hatch.build.targets.wheel.sources]\n"/abs" = "x"\n',
        '[tool.hatch.build.targets.wheel.sources]\n"src/a" = "not-a-name"\n',
        '[tool.setuptools]\npackage-dir = "src"\n',
        '[[tool.poetry.packages]]\ninclude = "app*"\nfrom = "src"\n',
        "[tool.poetry]\npackages = 3\n",
    ],
)
def test_rules_that_name_nothing_importable_are_ignored(pyproject: str) -> None:
    data: dict[str, Any] = parse_toml(pyproject, "pyproject.toml")
    assert [r for r in source_roots(data) if str(r.directory) in ("src/a", "src")] == []


def test_detection_uses_the_wheel_s_name(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "shop"\nversion = "1"\n\n'
        '[tool.hatch.build.targets.wheel.sources]\n"src/webapp" = "shop"\n',
        encoding="utf-8",
    )
    (tmp_path / "src" / "webapp").mkdir(parents=True)
    (tmp_path / "src" / "webapp" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "src" / "webapp" / "main.py").write_text(
        "from fastapi import FastAPI\napp = FastAPI()\n", encoding="utf-8"
    )
    best = scan_project(tmp_path).best
    assert best is not None
    assert (best.target, best.source) == ("shop.main:app", "src/webapp/main.py")


def test_an_unreadable_pyproject_leaves_detection_to_paths(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project\n", encoding="utf-8")
    (tmp_path / "src" / "app").mkdir(parents=True)
    (tmp_path / "src" / "app" / "main.py").write_text(
        "from flask import Flask\napp = Flask(__name__)\n", encoding="utf-8"
    )
    best = scan_project(tmp_path).best
    assert best is not None
    assert best.target == "app.main:app"
