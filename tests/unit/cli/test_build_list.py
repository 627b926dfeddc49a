"""`pydeploy build --all --list [--json]` (pydeploy.matrix) on copies of
examples/monorepo: which services, their references as `build` would tag them, the
empty matrix, the errors, and schema/build-list.schema.json. No engine is touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest

from pydeploy.config import workspace
from pydeploy.config.project import load_project
from pydeploy.plan.planner import Overrides, make_plan

if TYPE_CHECKING:
    from tests.unit.cli.conftest import Cli, FakeEngine

ROOT = Path(__file__).resolve().parents[3]
MONOREPO = ROOT / "examples" / "monorepo"
SCHEMA = ROOT / "schema" / "build-list.schema.json"

Document = dict[str, Any]


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-c", "commit.gpgsign=false",
         "-C", str(root), *args],
        check=True, capture_output=True,
    )  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "mono"
    shutil.copytree(MONOREPO, root, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "init")
    return root


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def listing(runner: Cli, validator: jsonschema.Draft202012Validator, *args: str) -> Document:
    outcome = runner.run("build", "--all", "--list", "--json", *args)
    assert outcome.code == 0, outcome.output
    document: Document = json.loads(outcome.stdout)
    assert [e.message for e in validator.iter_errors(document)] == []
    return document


def test_lists_every_service_with_the_references_build_would_push(
    runner: Cli, validator: jsonschema.Draft202012Validator, repo: Path, fake_engine: FakeEngine
) -> None:
    args = ("--registry", "reg.example:5000/team/", "--tag", "abc", "--tag", "latest")
    document = listing(runner, validator, str(repo / "services" / "web"), *args)
    assert document == {
        "workspace": str(repo.resolve()),
        "changed_since": None,
        "services": [
            {"name": "api", "directory": "services/api", "image": "reg.example:5000/team/api:abc",
             "tags": ["reg.example:5000/team/api:abc", "reg.example:5000/team/api:latest"],
             "app": "main:app"},
            {"name": "web", "directory": "services/web", "image": "reg.example:5000/team/web:abc",
             "tags": ["reg.example:5000/team/web:abc", "reg.example:5000/team/web:latest"],
             "app": "app:app"},
        ],
        "include": [
            {"name": "api", "directory": "services/api", "image": "reg.example:5000/team/api:abc"},
            {"name": "web", "directory": "services/web", "image": "reg.example:5000/team/web:abc"},
        ],
    }  # fmt: skip
    # The planner's own answer for each member, as `build --all` computes it.
    overrides = Overrides(tags=("abc", "latest"), registry="reg.example:5000/team/")
    for service in document["services"]:
        plan = make_plan(load_project(repo / service["directory"]), overrides, os.environ)
        assert service["tags"] == list(plan.tags)
    assert fake_engine.calls == [], "listing needs no engine"


def test_config_tags_names_and_the_root_as_a_member(
    runner: Cli, validator: jsonschema.Draft202012Validator, repo: Path
) -> None:
    api = repo / "services" / "api" / "pyproject.toml"
    api.write_text(
        api.read_text().replace(
            "[tool.pydeploy]\n",
            '[tool.pydeploy]\nname = "team/backend"\ntags = ["1.2", "ghcr.io/o/pinned:v1"]\n',
        )
    )
    # A root with a [project] and a [tool.pydeploy] table is a member itself.
    root_pyproject = repo / "pyproject.toml"
    root_pyproject.write_text(
        '[project]\nname = "Root_App"\nversion = "3.0"\ndependencies = []\n'
        '[tool.pydeploy]\napp = "rootapp:app"\n' + root_pyproject.read_text()
    )
    (repo / "rootapp.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    document = listing(runner, validator, str(repo))
    services = {s["name"]: s for s in document["services"]}
    assert list(services) == ["api", "root-app", "web"]
    assert services["api"]["tags"] == ["team/backend:1.2", "ghcr.io/o/pinned:v1"]
    assert services["api"]["image"] == "team/backend:1.2"
    assert services["root-app"]["directory"] == "."
    assert services["root-app"]["tags"] == ["root_app:3.0"]  # the image name keeps `_`
    # --registry prefixes names, never a full reference from the config.
    document = listing(runner, validator, str(repo), "--registry", "r.example", "--only", "api")
    assert document["services"][0]["tags"] == ["r.example/team/backend:1.2", "ghcr.io/o/pinned:v1"]


def test_changed_since_and_only(
    runner: Cli, validator: jsonschema.Draft202012Validator, repo: Path
) -> None:
    empty = listing(runner, validator, str(repo), "--changed-since", "HEAD")
    assert empty["changed_since"] == "HEAD"
    assert (empty["services"], empty["include"]) == ([], [])

    app = repo / "services" / "web" / "app.py"
    app.write_text(app.read_text() + "\n# changed\n")
    changed = listing(runner, validator, str(repo), "--changed-since", "HEAD")
    assert [s["name"] for s in changed["include"]] == ["web"]
    only = listing(runner, validator, str(repo), "--changed-since", "HEAD", "--only", "api")
    assert only["include"] == []

    library = next((repo / "libs" / "shared").rglob("__init__.py"))
    library.write_text(library.read_text() + "\n# changed\n")
    changed = listing(runner, validator, str(repo), "--changed-since", "HEAD")
    assert [s["name"] for s in changed["include"]] == ["api", "web"]
    only = listing(runner, validator, str(repo), "--only", "API")
    assert [s["name"] for s in only["services"]] == ["api"]
    # The same selection `build --all` makes.
    selected = [m.name for m in workspace.deployable(repo)]
    assert [s["name"] for s in listing(runner, validator, str(repo))["services"]] == selected


def test_text_output_and_the_empty_selection(runner: Cli, repo: Path, tmp_path: Path) -> None:
    outcome = runner.run("build", "--all", "--list", str(repo), "--tag", "t1", "--tag", "t2")
    assert outcome.code == 0, outcome.output
    assert outcome.stdout.splitlines() == [
        "api  services/api  api:t1, api:t2",
        "web  services/web  web:t1, web:t2",
    ]
    assert outcome.stderr == ""
    outcome = runner.run("build", "--all", "--list", str(repo), "--changed-since", "HEAD")
    assert (outcome.code, outcome.stdout) == (0, "")
    assert outcome.stderr == "pydeploy: no workspace member to build (nothing changed since HEAD)\n"

    # --metadata-file writes the --json document.
    target = tmp_path / "list.json"
    outcome = runner.run("build", "--all", "--list", "--json", str(repo),
                         "--metadata-file", str(target))  # fmt: skip
    assert outcome.code == 0, outcome.output
    assert json.loads(target.read_text()) == json.loads(outcome.stdout)


def test_errors(runner: Cli, repo: Path, tmp_path: Path) -> None:
    runner.assert_paragraph(runner.run("build", "--list", str(repo)), 2, "config",
                            "--list goes with --all")  # fmt: skip
    for extra in (["--push"], ["--output", "oci:out"], ["--jobs", "2"]):
        runner.assert_paragraph(
            runner.run("build", "--all", "--list", str(repo), *extra), 2, "config",
            "--list builds nothing",
        )  # fmt: skip
    runner.assert_paragraph(runner.run("build", "--all", "--list", str(repo), "--only", "webb"),
                            2, "config", "Did you mean 'web'?")  # fmt: skip
    runner.assert_paragraph(
        runner.run("build", "--all", "--list", str(repo), "--changed-since", "no-such-ref"),
        2, "config", "'no-such-ref' is not a commit",
    )  # fmt: skip
    runner.assert_paragraph(
        runner.run("build", "--all", "--list", str(repo), "--registry", "Bad Prefix"),
        2, "config", "--registry",
    )  # fmt: skip
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    runner.assert_paragraph(runner.run("build", "--all", "--list", str(lone)), 2, "config",
                            "--all needs a uv workspace")  # fmt: skip


def test_schema_rejects_what_the_listing_never_prints(
    validator: jsonschema.Draft202012Validator,
) -> None:
    good: Document = {
        "workspace": "/w",
        "changed_since": None,
        "services": [{"name": "api", "directory": "services/api", "image": "api:1",
                      "tags": ["api:1"], "app": "main:app"}],
        "include": [{"name": "api", "directory": "services/api", "image": "api:1"}],
    }  # fmt: skip
    assert list(validator.iter_errors(good)) == []
    bad_documents = [
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "include"},
        {**good, "include": [{**good["include"][0], "tags": ["api:1"]}]},  # an array in a job
        {**good, "services": [{**good["services"][0], "tags": []}]},
        {**good, "services": [{**good["services"][0], "name": "Not_Normal"}]},
    ]
    for document in bad_documents:
        assert list(validator.iter_errors(document)), document
