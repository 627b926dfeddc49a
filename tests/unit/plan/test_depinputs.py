"""What decides a dependency set: the dependency key (stable, complete, never secret), the
inputs read from each source (requirements, uv.lock, pylock.toml, workspace members),
and the builder's mount. No engine."""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from pydeploy.builder.credentials import index_settings
from pydeploy.config.project import load_project
from pydeploy.errors import ConfigError
from pydeploy.plan import depinputs, servers
from pydeploy.plan.locks import pylock
from pydeploy.plan.planner import BuildPlan, DependencyPlan, Overrides, make_plan

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def write_project(root: Path, body: str = "", deps: str = '["itsdangerous>=2.1"]') -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "demo"
            version = "1.0"
            dependencies = {deps}

            [tool.pydeploy]
            app = "app:app"
            """
        )
        + textwrap.dedent(body),
        encoding="utf-8",
    )
    (root / "app.py").write_text(
        "def app(environ, start_response):\n    return []\n", encoding="utf-8"
    )
    return root


def plan_of(root: Path) -> BuildPlan:
    return make_plan(load_project(root), Overrides(base_image="local/base:1"))


def key_of(plan: BuildPlan, builder: str = "sha256:aaa") -> str:
    inputs = depinputs.dependency_inputs(plan)
    wanted = servers.plan_packages(plan)
    index = index_settings(plan.index)
    return depinputs.dependency_key(builder, inputs, wanted, index)


# --- dependency key -------------------------------------------------------------------


def test_key_is_stable_for_the_same_inputs(tmp_path: Path) -> None:
    first = key_of(plan_of(write_project(tmp_path / "a")))
    again = key_of(plan_of(write_project(tmp_path / "a")))
    # Another checkout of the same project (another directory) keeps the key.
    elsewhere = key_of(plan_of(write_project(tmp_path / "b")))
    assert first == again == elsewhere
    assert len(first) == 64


def test_key_ignores_app_code_and_unrelated_config(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    before = key_of(plan_of(root))
    (root / "app.py").write_text(
        "def app(environ, start_response):\n    return [b'changed']\n", encoding="utf-8"
    )
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    (root / "pyproject.toml").write_text(
        text.replace('version = "1.0"', 'version = "2.0"') + "port = 9000\n", encoding="utf-8"
    )
    assert key_of(plan_of(root)) == before


@pytest.mark.parametrize(
    "change",
    ["builder", "dependency", "extras", "server", "index", "recipe"],
)
def test_key_changes_with_each_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    root = write_project(
        tmp_path / "p",
        deps='["itsdangerous>=2.1"]\n\n[project.optional-dependencies]\nfast = ["orjson"]',
    )
    plan = plan_of(root)
    before = key_of(plan)
    if change == "builder":
        after = key_of(plan, builder="sha256:bbb")
    elif change == "dependency":
        write_project(root, deps='["itsdangerous>=2.2"]')
        after = key_of(plan_of(root))
    elif change == "extras":
        write_project(
            root,
            '[tool.pydeploy.dependencies]\nextras = ["fast"]\n',
            deps='["itsdangerous>=2.1"]\n\n[project.optional-dependencies]\nfast = ["orjson"]',
        )
        after = key_of(plan_of(root))
    elif change == "server":
        after = key_of(replace(plan, server="uvicorn"))
    elif change == "index":
        write_project(root, '[tool.pydeploy.index]\nurl = "https://mirror.example/simple"\n')
        after = key_of(plan_of(root))
    else:
        monkeypatch.setattr(depinputs, "RECIPE_VERSION", "test-changed")
        after = key_of(plan)
    assert after != before


def test_key_never_contains_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = '[tool.pydeploy.index]\nurl = "https://pkgs.example/simple"\npassword-env = "TOKEN"\n'
    root = write_project(tmp_path / "p", body)
    monkeypatch.setenv("TOKEN", "first-secret-value")
    plan = plan_of(root)
    settings = index_settings(plan.index)
    assert "first-secret-value" not in repr(settings)
    before = key_of(plan)
    monkeypatch.setenv("TOKEN", "second-secret-value")
    assert key_of(plan_of(root)) == before, "rotating a token must not rebuild"


def test_local_path_package_content_is_part_of_the_key(tmp_path: Path) -> None:
    root = tmp_path / "cext_app"
    shutil.copytree(FIXTURES / "cext_app", root)
    plan = plan_of(root)
    inputs = depinputs.dependency_inputs(plan)
    assert inputs.source == "requirements"
    assert inputs.requirements == ("requirements.txt",)
    assert any(what == "local:vendor/fastsum" for what, _ in inputs.digests)
    before = key_of(plan)
    source = root / "vendor" / "fastsum" / "fastsum.c"
    source.write_text(source.read_text(encoding="utf-8") + "\n/* changed */\n", encoding="utf-8")
    assert key_of(plan_of(root)) != before
    # Build output and caches inside the package are not content.
    after = key_of(plan_of(root))
    (root / "vendor" / "fastsum" / "build").mkdir()
    (root / "vendor" / "fastsum" / "build" / "junk.o").write_bytes(b"x")
    assert key_of(plan_of(root)) == after


def test_local_paths_outside_the_project_widen_the_mount(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "lib"
    shared.mkdir(parents=True)
    (shared / "pyproject.toml").write_text('[project]\nname = "lib"\n', encoding="utf-8")
    root = write_project(tmp_path / "services" / "api")
    (root / "requirements.txt").write_text("../../shared/lib\nflask\n", encoding="utf-8")
    inputs = depinputs.dependency_inputs(plan_of(root))
    assert inputs.mount_root == tmp_path
    assert inputs.copies == ("services/api", "shared/lib")
    assert inputs.cwd == "services/api"


def test_uv_lock_inputs_skip_the_project_itself() -> None:
    inputs = depinputs.dependency_inputs(plan_of(FIXTURES / "uvlock_app"))
    assert inputs.source == "uv.lock"
    assert [what for what, _ in inputs.digests] == ["uv.lock"]
    assert inputs.package is None
    assert inputs.copies == ("",)
    assert inputs.export == depinputs.uv_export_options(DependencyPlan(), None)
    assert "--no-dev" in inputs.export
    assert "--package" not in inputs.export


def test_only_a_uv_lock_has_export_options(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", '[tool.pydeploy.dependencies]\ngroups = ["web"]\n')
    inputs = depinputs.dependency_inputs(plan_of(root))
    assert (inputs.source, inputs.export, inputs.groups) == ("project", (), ("web",))


def test_uv_export_options_follow_the_dependency_plan() -> None:
    options = depinputs.uv_export_options(DependencyPlan(("a",), ("dev", "web")), "member")
    assert "--no-dev" not in options
    assert options[options.index("--package") :] == (
        *("--package", "member", "--extra", "a", "--group", "dev", "--group", "web"),
    )
    assert "--no-dev" in depinputs.uv_export_options(DependencyPlan(groups=("web",)), None)


def test_missing_requirements_file_is_a_config_error(tmp_path: Path) -> None:
    body = '[tool.pydeploy.dependencies]\nrequirements = ["requirements/prod.txt"]\n'
    root = write_project(tmp_path / "p", body)
    with pytest.raises(ConfigError, match=r"tool\.pydeploy\.dependencies\.requirements"):
        depinputs.dependency_inputs(plan_of(root))


# --- pylock.toml ----------------------------------------------------------------------------


PYLOCK = """\
lock-version = "1.0"
created-by = "test"

[[packages]]
name = "itsdangerous"
version = "2.2.0"
index = "https://pypi.org/simple"
wheels = [{ url = "https://files.example/itsdangerous-2.2.0-py3-none-any.whl", hashes = {} }]

[[packages]]
name = "colorama"
version = "0.4.6"
marker = "sys_platform == 'win32'"

[[packages]]
name = "mylib"
directory = { path = "libs/mylib", editable = true }

[[packages]]
name = "tool"
vcs = { type = "git", url = "https://git.example/tool.git", commit-id = "abc123" }

[[packages]]
name = "blob"
archive = { url = "https://files.example/blob-1.0.tar.gz", hashes = {} }

[[packages]]
name = "nover"
wheels = [{ path = "wheels/nover-1.0-py3-none-any.whl", hashes = {} }]
"""


def test_parse_pylock() -> None:
    assert pylock.parse_pylock(PYLOCK) == [
        "itsdangerous==2.2.0",
        "colorama==0.4.6 ; sys_platform == 'win32'",
        "./libs/mylib",
        "tool @ git+https://git.example/tool.git@abc123",
        "blob @ https://files.example/blob-1.0.tar.gz",
        "nover @ ./wheels/nover-1.0-py3-none-any.whl",
    ]


def test_parse_pylock_errors() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        pylock.parse_pylock("[[packages]\n")
    with pytest.raises(ConfigError, match="has no `name`"):
        pylock.parse_pylock('[[packages]]\nversion = "1"\n')


def test_pylock_source_reads_local_paths(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    (root / "libs" / "mylib").mkdir(parents=True)
    (root / "libs" / "mylib" / "pyproject.toml").write_text("[project]\n", encoding="utf-8")
    (root / "pylock.toml").write_text(PYLOCK, encoding="utf-8")
    inputs = depinputs.dependency_inputs(plan_of(root))
    assert inputs.source == "pylock"
    assert inputs.requirement_lines[2] == "./libs/mylib"
    assert {what for what, _ in inputs.digests} == {"pylock.toml", "local:libs/mylib"}


# --- workspace members ------------------------------------------------------------------------


WORKSPACE_LOCK = """\
version = 1
requires-python = ">=3.10"

[[package]]
name = "api"
version = "0.1.0"
source = { virtual = "services/api" }

[[package]]
name = "shared"
version = "0.1.0"
source = { editable = "libs/shared" }
"""


def test_workspace_member_exports_by_name_from_the_root(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.uv.workspace]\nmembers = ["services/*", "libs/*"]\n', encoding="utf-8"
    )
    (tmp_path / "uv.lock").write_text(WORKSPACE_LOCK, encoding="utf-8")
    shared = tmp_path / "libs" / "shared"
    shared.mkdir(parents=True)
    (shared / "pyproject.toml").write_text('[project]\nname = "shared"\n', encoding="utf-8")
    member = tmp_path / "services" / "api"
    member.mkdir(parents=True)
    (member / "pyproject.toml").write_text(
        '[project]\nname = "api"\nversion = "0.1.0"\ndependencies = ["shared"]\n\n'
        '[tool.pydeploy]\napp = "main:app"\n',
        encoding="utf-8",
    )
    inputs = depinputs.dependency_inputs(plan_of(member))
    assert inputs.source == "uv.lock"
    assert inputs.package == "api"
    assert inputs.mount_root == tmp_path
    assert (inputs.copies, inputs.cwd) == (("",), "")
    assert {what for what, _ in inputs.digests} == {"uv.lock", "local:../../libs/shared"}
    # The builder exports the member by name; the export options carry it.
    assert inputs.export[inputs.export.index("--package") + 1] == "api"


def test_workspace_member_receives_the_manifests_not_the_workspace(tmp_path: Path) -> None:
    """The builder gets the root's dependency files, every member's pyproject.toml (uv
    finds the member through them) and the local packages: no service code, no docs."""
    test_workspace_member_exports_by_name_from_the_root(tmp_path)
    (tmp_path / "services" / "api" / "main.py").write_text("app = None\n", encoding="utf-8")
    (tmp_path / "services" / "web").mkdir()
    (tmp_path / "services" / "web" / "pyproject.toml").write_text(
        '[project]\nname = "web"\n', encoding="utf-8"
    )
    (tmp_path / "services" / "web" / "app.py").write_text("", encoding="utf-8")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "big.bin").write_bytes(b"\0" * 1024)
    (tmp_path / ".python-version").write_text("3.11\n", encoding="utf-8")
    (tmp_path / "libs" / "shared" / "shared.py").write_text("X = 1\n", encoding="utf-8")
    inputs = depinputs.dependency_inputs(plan_of(tmp_path / "services" / "api"))
    assert inputs.trees == ("libs/shared",)
    assert [name for name, _ in depinputs.input_files(inputs)] == [
        "",
        ".python-version",
        "libs",
        "libs/shared",
        "libs/shared/pyproject.toml",
        "libs/shared/shared.py",
        "pyproject.toml",
        "services",
        "services/api",
        "services/api/pyproject.toml",
        "services/web",
        "services/web/pyproject.toml",
        "uv.lock",
    ]


def test_builder_inputs_are_filtered_like_the_app_layer(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    files = {
        # what the install needs
        "requirements.txt": "-e ./vendor/pkg\n-r extra/more.txt\nflask\n",
        "extra/more.txt": "--find-links ./wheels\nitsdangerous\n",  # ignored, but named
        "wheels/w-1.0-py3-none-any.whl": "",  # ignored, but named by --find-links
        "vendor/pkg/pyproject.toml": '[project]\nname = "pkg"\n',
        "vendor/pkg/pkg.c": "int x;\n",
        "vendor/pkg/src/pkg/build/__init__.py": "",  # a `build` subpackage stays
        "vendor/pkg/.gitignore": "generated.c\n",
        # never sent
        ".gitignore": "vendor/\nextra/\nwheels/\n*.log\nsecret-data/\n",
        "app.log": "x",
        "secret-data/big.bin": "x",
        ".env": "TOKEN=x",
        ".git/config": "x",
        ".venv/pyvenv.cfg": "x",
        "myenv/pyvenv.cfg": "x",  # a virtualenv by any name
        "myenv/lib/site.py": "x",
        "node_modules/a.js": "x",
        "__pycache__/app.cpython-311.pyc": "x",
        "vendor/pkg/generated.c": "x",  # ignored by the package's own .gitignore
        "vendor/pkg/build/junk.o": "x",  # stale build output next to pyproject.toml
        "vendor/pkg/pkg.egg-info/PKG-INFO": "x",
        "vendor/pkg/.tox/log": "x",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "vendor" / "pkg" / "link.c").symlink_to("pkg.c")
    inputs = depinputs.dependency_inputs(plan_of(root))
    assert inputs.trees == ("", "vendor/pkg", "wheels")
    assert inputs.files == ("extra/more.txt", "pyproject.toml", "requirements.txt")
    sent = depinputs.input_files(inputs)
    assert [name for name, _ in sent] == [
        "",
        ".gitignore",
        "app.py",
        "extra",
        "extra/more.txt",
        "pyproject.toml",
        "requirements.txt",
        "vendor",
        "vendor/pkg",
        "vendor/pkg/.gitignore",
        "vendor/pkg/link.c",
        "vendor/pkg/pkg.c",
        "vendor/pkg/pyproject.toml",
        "vendor/pkg/src",
        "vendor/pkg/src/pkg",
        "vendor/pkg/src/pkg/build",
        "vendor/pkg/src/pkg/build/__init__.py",
        "wheels",
        "wheels/w-1.0-py3-none-any.whl",
    ]
    assert all(path == root / name for name, path in sent)


def test_a_local_package_outside_the_project_is_sent_below_the_common_root(
    tmp_path: Path,
) -> None:
    test_local_paths_outside_the_project_widen_the_mount(tmp_path)
    (tmp_path / "unrelated").mkdir()
    (tmp_path / "unrelated" / "data.bin").write_bytes(b"x")
    inputs = depinputs.dependency_inputs(plan_of(tmp_path / "services" / "api"))
    names = [name for name, _ in depinputs.input_files(inputs)]
    assert "services/api/requirements.txt" in names
    assert "shared/lib/pyproject.toml" in names
    assert not [n for n in names if n.startswith("unrelated")]


def test_what_the_builder_receives_is_not_part_of_the_key() -> None:
    """Pinned: sending files instead of mounting them kept every key (and so every cached
    venv volume) valid. Only a RECIPE_VERSION bump may change this value."""
    base = depinputs.DependencyInputs(
        source="uv.lock",
        mount_root=Path("/ws"),
        copies=("",),
        cwd="",
        package="api",
        digests=(("uv.lock", "0" * 64), ("local:../../libs/shared", "1" * 64)),
    )

    def key(inputs: depinputs.DependencyInputs) -> str:
        return depinputs.dependency_key(
            "sha256:" + "a" * 64, inputs, ["gunicorn", "uvicorn"], {"url": None}
        )

    expected = "6c7eaef434f111ff6c53d6df22ea78d457ece5b7bad47cea5985f70e0bf97ef9"
    assert key(base) == expected
    assert key(replace(base, trees=("libs/shared",), files=("uv.lock",))) == expected
    assert key(replace(base, mount_root=Path("/elsewhere"), copies=("a", "b"))) == expected


# --- local package names (built even in a wheels-only install) ---------------------------


def test_local_package_names_are_read_without_building(tmp_path: Path) -> None:
    by_pyproject = tmp_path / "a"
    by_pyproject.mkdir()
    (by_pyproject / "pyproject.toml").write_text(
        '[project]\nname = "Fast_Sum"\nversion = "1"\n', encoding="utf-8"
    )
    by_setup_cfg = tmp_path / "b"
    by_setup_cfg.mkdir()
    (by_setup_cfg / "setup.cfg").write_text("[metadata]\nname = legacy.pkg\n", encoding="utf-8")
    sdist = tmp_path / "my_lib-2.0.tar.gz"
    wheel = tmp_path / "w-1.0-py3-none-any.whl"
    for file in (sdist, wheel):
        file.write_bytes(b"")
    names = depinputs.local_package_names([by_pyproject, by_setup_cfg, sdist, wheel])
    assert names == ("fast-sum", "legacy-pkg", "my-lib")


def test_a_local_package_without_a_readable_name_gives_none(tmp_path: Path) -> None:
    setup_py_only = tmp_path / "c"
    setup_py_only.mkdir()
    (setup_py_only / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    assert depinputs.local_package_names([setup_py_only]) is None
    assert depinputs.local_package_names([]) == ()


def test_dependency_inputs_name_the_local_packages() -> None:
    assert depinputs.dependency_inputs(plan_of(FIXTURES / "cext_app")).local_names == ("fastsum",)
    assert depinputs.dependency_inputs(plan_of(FIXTURES / "pure_app")).local_names == ()


def test_key_depends_on_the_builder_key_only(tmp_path: Path) -> None:
    """The venv key takes the full builder's content key (base + build packages +
    recipe), the same whichever builder ends up installing."""
    plan = plan_of(write_project(tmp_path / "p"))
    assert key_of(plan, "builderkey1") == key_of(plan, "builderkey1")
    assert key_of(plan, "builderkey1") != key_of(plan, "builderkey2")
