"""The lock readers (plan/locks): poetry.lock 1.x/2.x, pdm.lock 4.x, Pipfile.lock, each
turned on the host into the requirement lines the builder installs as they are:
markers judged for the target Python (or kept for uv when it is not known), groups,
extras, hashes enforced, git and path sources, and locks older than their project."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from pydeploy.config.models import read_pyproject
from pydeploy.errors import ConfigError
from pydeploy.plan.locks import common, pdm, pipenv, poetry
from pydeploy.plan.locks.common import Conditions, Locked, Target

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PY311 = Target.of("3.11.2")
HASH = "sha256:" + "ab" * 32


def names(lines: list[str]) -> list[str]:
    return [line.split("==")[0].split(" ")[0] for line in lines]


def fixture(tmp_path: Path, name: str) -> Path:
    shutil.copytree(FIXTURES / name, tmp_path / name)
    return tmp_path / name


def poetry_lines(
    root: Path, extras: tuple[str, ...] = (), groups: tuple[str, ...] = (), target: Target = PY311
) -> list[str]:
    selection = poetry.read(root, read_pyproject(root), extras, groups, target)
    return selection.lines("poetry.lock")


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


# --- common -----------------------------------------------------------------------------


def test_a_target_decides_only_what_every_candidate_python_agrees_on() -> None:
    anywhere = Target.of(None)
    assert anywhere.decide('python_version < "3.11"', "x") is None
    assert anywhere.decide('sys_platform == "win32"', "x") is False
    assert anywhere.decide('os_name == "posix"', "x") is True
    assert anywhere.decide('platform_machine == "x86_64"', "x") is None  # the machine is open
    assert PY311.decide('python_version < "3.11"', "x") is False
    assert PY311.decide('python_full_version >= "3.11.1"', "x") is True
    # A project's Python constraint narrows the candidates.
    assert Target.of(None, lambda v: v.startswith("3.12")).decide('python_version >= "3.12"', "x")
    with pytest.raises(ConfigError, match="not a valid environment marker"):
        PY311.decide("python_version <<< 3", "lock")


def test_conditions_keep_the_weakest_ways_a_package_is_needed() -> None:
    found = Conditions()
    assert found.add(frozenset({"a", "b"}))
    assert not found.add(frozenset({"a", "b", "c"}))  # stricter: adds nothing
    assert found.add(frozenset({"c"}))
    assert found.marker() == "((a) and (b)) or ((c))"
    assert found.add(frozenset())
    assert found.marker() is None  # needed always


def test_an_index_package_without_hashes_is_refused() -> None:
    line = common.requirement_line(
        Locked("six", "1.16.0", (HASH,), marker='os_name == "posix"'), "l"
    )
    assert line == f'six==1.16.0 ; os_name == "posix" --hash={HASH}'
    with pytest.raises(ConfigError, match=r"lock: package `six` 1.16.0 has no hashes.*enforced"):
        common.requirement_line(Locked("six", "1.16.0"), "lock")
    assert common.requirement_line(Locked("lib", path="libs/lib"), "l") == "./libs/lib"


# --- Poetry -----------------------------------------------------------------------------


def test_poetry1_fixture_main_group_with_its_extra(tmp_path: Path) -> None:
    root = fixture(tmp_path, "poetry1_app")
    lines = poetry_lines(root, extras=("cli",))
    # colorama: Windows only; tomli: Python < 3.11 only; iniconfig, blinker: other groups.
    assert names(lines) == ["click", "idna", "itsdangerous", "./libs/localpkg", "six"]
    assert all(line.count("--hash=sha256:") == 2 for line in lines if "==" in line)
    # idna comes only through the path dependency's own dependencies in the lock.
    assert names(poetry_lines(root)) == ["idna", "itsdangerous", "./libs/localpkg", "six"]


def test_poetry_groups_are_added_only_when_asked(tmp_path: Path) -> None:
    root = fixture(tmp_path, "poetry1_app")
    assert "iniconfig" in names(poetry_lines(root, groups=("dev",)))
    assert "blinker" in names(poetry_lines(root, groups=("docs",)))
    with pytest.raises(ConfigError, match=r"groups` names 'test'.*\(it has dev, docs\)"):
        poetry_lines(root, groups=("test",))
    with pytest.raises(ConfigError, match=r"extras` names 'web'.*\(it has cli\)"):
        poetry_lines(root, extras=("web",))


def test_an_undecided_marker_stays_in_the_line_for_uv(tmp_path: Path) -> None:
    root = fixture(tmp_path, "poetry1_app")
    lines = poetry_lines(root, target=Target.of(None))  # the project allows 3.10 too
    tomli = next(line for line in lines if line.startswith("tomli"))
    assert tomli.startswith('tomli==2.0.1 ; python_full_version < "3.11"')
    assert not any(line.startswith("colorama") for line in lines)


def test_poetry2_lock_follows_project_dependencies_and_extras(tmp_path: Path) -> None:
    root = fixture(tmp_path, "poetry2_app")
    assert names(poetry_lines(root)) == ["click", "itsdangerous"]
    assert names(poetry_lines(root, extras=("signals",))) == ["blinker", "click", "itsdangerous"]
    assert "iniconfig" in names(poetry_lines(root, groups=("dev",)))


WINDOWS_ONLY = '{version = "*", markers = "sys_platform == \\"win32\\""}'
POETRY_PROJECT = """\
    [tool.poetry]
    name = "svc"
    version = "1.0"

    [tool.poetry.dependencies]
    python = "^3.10"
    web = { version = "^1.0", extras = ["fast"] }
    lib = { git = "https://git.example/lib.git", branch = "main" }
    """


def lock_package(name: str, version: str, body: str = "", files: bool = True) -> str:
    listed = f'files = [{{file = "{name}-{version}.tar.gz", hash = "{HASH}"}}]' if files else ""
    head = f'[[package]]\nname = "{name}"\nversion = "{version}"\npython-versions = "*"\n'
    return f"{head}{listed}\n{body}\n"


def test_extras_of_dependencies_git_sources_and_cycles(tmp_path: Path) -> None:
    lock = (
        lock_package(
            "web", "1.2.0",
            '[package.dependencies]\nspeed = {version = ">=1", optional = true}\n'
            'loop = "*"\n[package.extras]\nfast = ["speed (>=1)"]\n',
        )
        + lock_package("speed", "1.0.0", f"[package.dependencies]\nwin = {WINDOWS_ONLY}\n")
        + lock_package("win", "1.0.0")
        + lock_package("loop", "2.0.0", '[package.dependencies]\nweb = "*"\n')
        + lock_package(
            "lib", "0.4.0",
            '[package.source]\ntype = "git"\nurl = "https://git.example/lib.git"\n'
            'reference = "main"\nresolved_reference = "0123abcd"\nsubdirectory = "py"\n',
            files=False,
        )
        + '[metadata]\nlock-version = "2.0"\npython-versions = "^3.10"\ncontent-hash = "x"\n'
    )  # fmt: skip
    root = write(tmp_path, {"pyproject.toml": POETRY_PROJECT, "poetry.lock": lock})
    lines = poetry_lines(root)
    assert names(lines) == ["lib", "loop", "speed", "web"]
    assert lines[0] == "lib @ git+https://git.example/lib.git@0123abcd#subdirectory=py"


def test_poetry_1_1_lock_with_categories_and_metadata_files(tmp_path: Path) -> None:
    lock = """\
        [[package]]
        name = "six"
        version = "1.16.0"
        category = "main"
        optional = false
        python-versions = ">=2.7"

        [[package]]
        name = "pytest"
        version = "7.0.0"
        category = "dev"
        optional = false
        python-versions = ">=3.6"

        [metadata]
        lock-version = "1.1"
        python-versions = "^3.10"
        content-hash = "x"

        [metadata.files]
        six = [
            {file = "six-1.16.0-py2.py3-none-any.whl", hash = "sha256:8abb"},
            {file = "six-1.16.0.tar.gz", hash = "sha256:1e61"},
        ]
        pytest = []
        """
    project = """\
        [tool.poetry]
        name = "old"
        version = "1"
        [tool.poetry.dependencies]
        python = "^3.10"
        six = "^1.16"
        [tool.poetry.dev-dependencies]
        pytest = "^7"
        """
    root = write(tmp_path, {"pyproject.toml": project, "poetry.lock": lock})
    assert poetry_lines(root) == ["six==1.16.0 --hash=sha256:1e61 --hash=sha256:8abb"]
    with pytest.raises(ConfigError, match=r"package `pytest` 7.0.0 has no hashes"):
        poetry_lines(root, groups=("dev",))


def test_a_poetry_lock_older_than_pyproject_is_refused(tmp_path: Path) -> None:
    root = fixture(tmp_path, "poetry1_app")
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    (root / "pyproject.toml").write_text(
        text.replace('six = "^1.16"', 'six = "^1.16"\nrequests = "^2.32"'), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"poetry.lock is out of date.*`requests`") as caught:
        poetry_lines(root)
    assert "poetry lock" in (caught.value.hint or "")
    # A requirement no allowed Python needs is not locked by Poetry, and not missing.
    (root / "pyproject.toml").write_text(
        text.replace('six = "^1.16"', 'six = "^1.16"\nold = { version = "*", python = "<3.8" }'),
        encoding="utf-8",
    )
    assert "six" in names(poetry_lines(root, target=Target.of(None, lambda v: v >= "3.10")))


def test_a_name_locked_twice_is_chosen_by_python(tmp_path: Path) -> None:
    lock = (
        lock_package("numpy", "1.24.4").replace(
            'python-versions = "*"', 'python-versions = ">=3.8"'
        )
        + lock_package("numpy", "2.1.0").replace(
            'python-versions = "*"', 'python-versions = ">=3.10"'
        )
        + '[metadata]\nlock-version = "2.0"\npython-versions = "^3.9"\ncontent-hash = "x"\n'
    )
    project = """\
        [tool.poetry]
        name = "n"
        version = "1"
        [tool.poetry.dependencies]
        python = "^3.9"
        numpy = [
            { version = "<1.25", python = "<3.10" },
            { version = ">=2.1", python = ">=3.10" },
        ]
        """
    root = write(tmp_path, {"pyproject.toml": project, "poetry.lock": lock})
    assert [line.split(" ")[0] for line in poetry_lines(root)] == ["numpy==2.1.0"]


def test_a_poetry_lock_of_an_unknown_format_is_refused(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {"pyproject.toml": POETRY_PROJECT, "poetry.lock": '[metadata]\nlock-version = "3.0"\n'},
    )
    with pytest.raises(ConfigError, match=r"lock-version 3\.0 is not 1\.x or 2\.x"):
        poetry_lines(root)


# --- PDM --------------------------------------------------------------------------------


def pdm_lines(root: Path, extras: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> list[str]:
    return pdm.read(root, read_pyproject(root), extras, groups, PY311).lines("pdm.lock")


def test_pdm_default_group_only_unless_asked(tmp_path: Path) -> None:
    root = fixture(tmp_path, "pdm_app")
    assert names(pdm_lines(root)) == ["idna", "six"]
    assert names(pdm_lines(root, groups=("dev",))) == ["idna", "iniconfig", "six"]
    with pytest.raises(ConfigError, match=r"groups` names 'docs'.*locked without it") as caught:
        pdm_lines(root, groups=("docs",))
    assert "pdm lock -G docs" in (caught.value.hint or "")


def test_pdm_sources_and_markers(tmp_path: Path) -> None:
    lock = f"""\
        [metadata]
        groups = ["default"]
        strategy = ["inherit_metadata"]
        lock_version = "4.5.0"

        [[package]]
        name = "lib"
        version = "0.1.0"
        groups = ["default"]
        git = "https://git.example/lib.git"
        ref = "main"
        revision = "feedbeef"

        [[package]]
        name = "local"
        version = "1.0"
        groups = ["default"]
        path = "./packages/local"
        editable = true

        [[package]]
        name = "arm"
        version = "1.0"
        groups = ["default"]
        marker = "platform_machine == \\"aarch64\\""
        files = [{{file = "arm-1.0.tar.gz", hash = "{HASH}"}}]

        [[package]]
        name = "win"
        version = "1.0"
        groups = ["default"]
        marker = "sys_platform == \\"win32\\""
        files = []
        """
    root = write(
        tmp_path, {"pyproject.toml": '[project]\nname = "p"\nversion = "1"\n', "pdm.lock": lock}
    )
    assert pdm_lines(root) == [
        f'arm==1.0 ; platform_machine == "aarch64" --hash={HASH}',
        "lib @ git+https://git.example/lib.git@feedbeef",
        "./packages/local",
    ]


def test_old_or_stale_pdm_locks_are_refused(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "pyproject.toml": '[project]\nname = "p"\nversion = "1"\n',
            "pdm.lock": '[metadata]\nlock_version = "3.1"\n',
        },
    )
    with pytest.raises(ConfigError, match=r"lock_version 3\.1 is older than 4\.0"):
        pdm_lines(root)
    root = fixture(tmp_path, "pdm_app")
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    (root / "pyproject.toml").write_text(
        text.replace('"idna>=3.7"', '"idna>=3.7", "attrs"'), "utf-8"
    )
    with pytest.raises(ConfigError, match=r"pdm.lock is out of date.*`attrs`"):
        pdm_lines(root)


# --- Pipenv -----------------------------------------------------------------------------


def pipenv_lines(root: Path, groups: tuple[str, ...] = ()) -> list[str]:
    return pipenv.read(root, groups, PY311).lines("Pipfile.lock")


def test_pipenv_default_section_only_unless_develop_is_asked(tmp_path: Path) -> None:
    root = fixture(tmp_path, "pipenv_app")
    assert names(pipenv_lines(root)) == ["idna", "itsdangerous"]
    for group in ("develop", "dev-packages"):
        assert names(pipenv_lines(root, (group,))) == ["idna", "iniconfig", "itsdangerous"]
    with pytest.raises(ConfigError, match=r"groups` names 'docs'.*no section"):
        pipenv_lines(root, ("docs",))


def test_pipenv_git_and_path_sources(tmp_path: Path) -> None:
    lock: dict[str, dict[str, object]] = {
        "_meta": {"hash": {"sha256": "x"}},
        "default": {
            "lib": {"git": "https://git.example/lib.git", "ref": "cafe1234", "editable": True},
            "local": {"path": "./local", "editable": True},
            "six": {"version": "==1.16.0", "hashes": []},
        },
        "develop": {},
    }
    root = write(tmp_path, {"Pipfile.lock": json.dumps(lock)})
    with pytest.raises(ConfigError, match=r"package `six` 1\.16\.0 has no hashes"):
        pipenv_lines(root)
    lock["default"].pop("six")
    (root / "Pipfile.lock").write_text(json.dumps(lock), encoding="utf-8")
    assert pipenv_lines(root) == ["lib @ git+https://git.example/lib.git@cafe1234", "./local"]


def test_a_pipfile_lock_older_than_its_pipfile_is_refused(tmp_path: Path) -> None:
    root = fixture(tmp_path, "pipenv_app")
    text = (root / "Pipfile").read_text(encoding="utf-8")
    (root / "Pipfile").write_text(text.replace('idna = "*"', 'idna = "*"\nattrs = "*"'), "utf-8")
    with pytest.raises(ConfigError, match=r"Pipfile.lock is out of date.*`attrs`") as caught:
        pipenv_lines(root)
    assert "pipenv lock" in (caught.value.hint or "")
