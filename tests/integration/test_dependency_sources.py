"""Dependency sources on the real engine: each fixture is built with `pydeploy build`, run,
asked over HTTP, and its installed set (the build's `pins`) compared with what its lock
or production requirements select, exactly: poetry.lock (Poetry 1 and 2), pdm.lock,
Pipfile.lock, and a requirements.txt that includes a file from elsewhere in the
repository beside a requirements-dev.txt that must not ship.

The expected sets are derived by hand from each fixture's pyproject.toml and lock, as
`poetry install --only main -E cli` / `pdm install --prod` / `pipenv install --deploy`
would install them on the test base's Python 3.11 (Linux): no tomli (only Python < 3.11
needs it), no colorama (Windows only), no dev, docs or test groups. The fixtures use
gunicorn's sync workers, so the server adds gunicorn and what gunicorn itself requires
(read from its metadata in the image), nothing else. For Poetry the hand-derived set is
also checked against Poetry's own: a lock Poetry writes for the fixture, and what its
`install --only main` would install from it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Resources, RunPydeploy, WaitHttp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# gunicorn's own requirements (those that apply here), as the image's metadata has them.
SERVER_DEPS = (
    "import importlib.metadata as m, json, re; "
    "print(json.dumps([re.split(r'[^A-Za-z0-9._-]', r)[0] for r in m.requires('gunicorn') or []"
    " if 'extra ==' not in r]))"
)

# fixture (project directory inside it) -> (locked name -> version, what must be absent)
CASES = {
    "poetry1_app": (
        {
            "click": "8.1.7",
            "idna": "3.7",
            "itsdangerous": "2.2.0",
            "localpkg": "0.1.0",
            "six": "1.16.0",
        },
        {"tomli", "colorama", "iniconfig", "blinker"},
    ),
    "poetry2_app": (
        {"click": "8.1.7", "itsdangerous": "2.2.0"},
        {"tomli", "colorama", "iniconfig", "blinker"},
    ),
    "pdm_app": ({"idna": "3.7", "six": "1.16.0"}, {"tomli", "iniconfig"}),
    "pipenv_app": ({"idna": "3.7", "itsdangerous": "2.2.0"}, {"tomli", "iniconfig"}),
    "requirements_app/service": ({"idna": "3.7", "six": "1.16.0"}, {"iniconfig"}),
}


def installed(pins: list[str]) -> dict[str, str]:
    """name -> version of `uv pip freeze` lines ("" for a direct reference)."""
    found = {}
    for pin in pins:
        match = re.match(r"^([A-Za-z0-9._-]+)\s*(?:==\s*(\S+)|@)", pin)
        assert match, pin
        found[match[1].lower().replace("_", "-")] = match[2] or ""
    return found


def git_init(repo: Path) -> None:
    for args in (["init", "-q", "-b", "main"], ["add", "-A"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c",
         "commit.gpgsign=false", "commit", "-q", "-m", "initial"],
        check=True, capture_output=True,
    )  # fmt: skip


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_a_dependency_source_installs_exactly_its_production_set(
    fixture: str,
    tmp_path: Path,
    run_pydeploy: RunPydeploy,
    base_image: str,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    top = fixture.split("/", maxsplit=1)[0]
    shutil.copytree(FIXTURES / top, tmp_path / top)
    # A repository around the fixture: requirements_app includes a file above its service.
    git_init(tmp_path / top)
    project = tmp_path / fixture
    tag = resources.image(f"pydeploy-test/sources-{top.replace('_', '-')}:{uuid.uuid4().hex[:12]}")
    build = run_pydeploy(
        "build", str(project), "--base", base_image, "--network", "host", "--tag", tag, "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-4000:]
    pins = installed(json.loads(build.stdout)["dependencies"]["pins"])
    locked, absent = CASES[fixture]
    assert {name: pins.get(name) for name in locked} == locked
    assert not absent & set(pins)
    probe = resources.run(tag, ["-c", SERVER_DEPS], entrypoint=["/opt/venv/bin/python"])
    assert probe.exit_code == 0, probe.output
    server = {"gunicorn", *(n.lower() for n in json.loads(probe.output.strip().splitlines()[-1]))}
    assert "gunicorn" in pins
    assert set(pins) - set(locked) <= server, "a package neither locked nor the server's"

    container = resources.create(tag, environment={"PORT": str(free_port)})
    container.start()
    body = json.loads(wait_http(f"http://127.0.0.1:{free_port}/"))
    assert body["app"] == top.split("_")[0]
    assert body["importable"] == {name: name in pins for name in body["importable"]}, (
        "the app sees another package set than the build recorded"
    )


def test_a_locked_hash_that_does_not_match_fails_the_build(
    tmp_path: Path, run_pydeploy: RunPydeploy, base_image: str, resources: Resources
) -> None:
    """The lock's hashes are checked by the builder's uv, not only carried along."""
    project = tmp_path / "pipenv_app"
    shutil.copytree(FIXTURES / "pipenv_app", project)
    lock = json.loads((project / "Pipfile.lock").read_text(encoding="utf-8"))
    lock["default"]["idna"]["hashes"] = ["sha256:" + "0" * 64]
    (project / "Pipfile.lock").write_text(json.dumps(lock), encoding="utf-8")
    tag = resources.image(f"pydeploy-test/sources-badhash:{uuid.uuid4().hex[:12]}")
    build = run_pydeploy(
        "build", str(project), "--base", base_image, "--network", "host", "--tag", tag,
        cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 5, build.stderr[-3000:]
    assert "Hash mismatch for `idna==3.7`" in build.stderr
    assert "Pipfile.lock" in build.stderr


def poetry_install_set(project: Path, ca_bundle: Path, tmp_path: Path) -> dict[str, str]:
    """What `poetry install --only main -E cli` installs into a fresh venv of this host's
    Python 3.11 (Linux, as the test base): Poetry's own answer, from a dry run."""
    venv = tmp_path / "poetry-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {
        **os.environ,
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "REQUESTS_CA_BUNDLE": str(ca_bundle),
        "POETRY_CACHE_DIR": str(tmp_path / "poetry-cache"),
        "POETRY_VIRTUALENVS_CREATE": "false",
    }
    poetry = [str(Path(sys.executable).with_name("poetry")), "--no-interaction", "-C", str(project)]
    # A real lock (content hash and all) from Poetry itself; it keeps the fixture's versions.
    subprocess.run([*poetry, "lock"], env=env, check=True, capture_output=True, timeout=300)
    dry = subprocess.run(
        [*poetry, "install", "--only", "main", "-E", "cli", "--no-root", "--dry-run"],
        env=env, check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    found = {}
    for line in dry.stdout.splitlines():
        match = re.match(r"^\s*- Installing (\S+) \((\S+)[^)]*\)(.*)$", line)
        if match and "Skipped" not in match[3]:
            found[match[1].lower()] = match[2]
    assert found, dry.stdout
    return found


def test_a_poetry_lock_installs_what_poetry_install_only_main_installs(
    tmp_path: Path, run_pydeploy: RunPydeploy, base_image: str, resources: Resources,
    ca_bundle: Path,
) -> None:  # fmt: skip
    project = tmp_path / "poetry1_app"
    shutil.copytree(FIXTURES / "poetry1_app", project)
    expected = poetry_install_set(project, ca_bundle, tmp_path)
    assert "tomli" not in expected  # Python < 3.11 only: the marker was judged
    assert "colorama" not in expected  # Windows only
    tag = resources.image(f"pydeploy-test/sources-poetry:{uuid.uuid4().hex[:12]}")
    build = run_pydeploy(
        "build", str(project), "--base", base_image, "--network", "host", "--tag", tag, "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-4000:]
    pins = installed(json.loads(build.stdout)["dependencies"]["pins"])
    probe = resources.run(tag, ["-c", SERVER_DEPS], entrypoint=["/opt/venv/bin/python"])
    assert probe.exit_code == 0, probe.output
    server = {"gunicorn", *(n.lower() for n in json.loads(probe.output.strip().splitlines()[-1]))}
    ours = {name: version for name, version in pins.items() if name not in server - set(expected)}
    assert ours == expected
