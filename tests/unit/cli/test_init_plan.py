"""`pydeploy init` and `pydeploy plan` on real example projects, without an engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pydeploy.cli.main import cli
from pydeploy.config.models import read_pyproject

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"


def strip_table(project: Path) -> str:
    """Remove [tool.pydeploy*] sections, keeping everything else byte for byte."""
    path = project / "pyproject.toml"
    kept: list[str] = []
    skipping = False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.startswith("[tool.pydeploy")
        if not skipping:
            kept.append(line)
    text = "".join(kept).rstrip("\n") + "\n"
    path.write_text(text, encoding="utf-8")
    return text


@pytest.mark.parametrize(
    ("example", "target"),
    [
        ("flask-app", "app:app"),
        ("fastapi-app", "main:app"),
        ("django-app", "mysite.wsgi:application"),
    ],
)
def test_init_detects_the_app_and_keeps_the_file(tmp_path: Path, example: str, target: str) -> None:
    project = tmp_path / example
    shutil.copytree(EXAMPLES / example, project)
    before = strip_table(project)
    result = CliRunner().invoke(cli, ["init", str(project)])
    assert result.exit_code == 0, result.output
    after = (project / "pyproject.toml").read_text(encoding="utf-8")
    assert after.startswith(before), "init must only append"
    assert f'app = "{target}"' in after
    assert "# " in after[len(before) :], "the table is commented"
    assert read_pyproject(project)["tool"]["pydeploy"]["app"] == target
    check = CliRunner().invoke(cli, ["check", str(project)])
    assert check.exit_code == 0, check.output


def test_init_refuses_an_existing_table(tmp_path: Path) -> None:
    project = tmp_path / "flask-app"
    shutil.copytree(EXAMPLES / "flask-app", project)
    before = (project / "pyproject.toml").read_bytes()
    result = CliRunner().invoke(cli, ["init", str(project)])
    assert result.exit_code == 2
    assert "already has a [tool.pydeploy] table" in result.output
    assert (project / "pyproject.toml").read_bytes() == before


def test_init_without_an_app_asks_for_one(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    (tmp_path / "util.py").write_text("def helper() -> int:\n    return 1\n")
    result = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert "pydeploy init --app" in result.output
    ok = CliRunner().invoke(cli, ["init", str(tmp_path), "--app", "util:helper"])
    assert ok.exit_code == 0, ok.output
    assert 'app = "util:helper"' in (tmp_path / "pyproject.toml").read_text()


FLASK_FACTORY = (
    "from flask import Flask\n\n"
    "def create_app(test_config=None):\n"
    "    app = Flask(__name__, instance_relative_config=True)\n"
    "    return app\n"
)


def test_init_proposes_an_app_factory_when_there_is_no_app_object(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "blog"\nversion = "1"\n')
    (tmp_path / "blog").mkdir()
    (tmp_path / "blog" / "__init__.py").write_text(FLASK_FACTORY)
    result = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert read_pyproject(tmp_path)["tool"]["pydeploy"]["app"] == "blog:create_app()"
    assert "factory" in (tmp_path / "pyproject.toml").read_text()


def test_init_names_a_factory_that_needs_arguments(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "blog"\nversion = "1"\n')
    source = FLASK_FACTORY.replace("test_config=None", "config_name")
    (tmp_path / "blog.py").write_text(source)
    result = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert "only an app factory" in result.output
    assert "pydeploy init --app 'blog:create_app(...)'" in result.output
    target = 'blog:create_app("production")'
    ok = CliRunner().invoke(cli, ["init", str(tmp_path), "--app", target])
    assert ok.exit_code == 0, ok.output
    assert read_pyproject(tmp_path)["tool"]["pydeploy"]["app"] == target


def test_init_rejects_a_bad_app_argument_and_leaves_the_file(tmp_path: Path) -> None:
    original = '[project]\nname = "x"\nversion = "1"\n'
    (tmp_path / "pyproject.toml").write_text(original)
    result = CliRunner().invoke(cli, ["init", str(tmp_path), "--app", "not a target"])
    assert result.exit_code == 2
    assert "`tool.pydeploy.app` must be `module:attribute`" in result.output
    assert (tmp_path / "pyproject.toml").read_text() == original
    assert [p.name for p in tmp_path.iterdir()] == ["pyproject.toml"], "no temp files left"


@pytest.mark.parametrize("example", ["flask-app", "django-app", "fastapi-app"])
def test_check_and_plan_pass_on_examples(example: str) -> None:
    check = CliRunner().invoke(cli, ["check", str(EXAMPLES / example)])
    assert check.exit_code == 0, check.output
    plan = CliRunner().invoke(cli, ["plan", str(EXAMPLES / example), "--json"])
    assert plan.exit_code == 0, plan.output
    data = json.loads(plan.output)
    assert data["project"]["name"] == example
    assert data["tags"] == [f"{example}:0.1.0"]
    assert [layer["role"] for layer in data["layers"]] == [
        "base",
        "no-setuid",
        "user",
        "dependencies",
        "app",
        "launcher",
    ]
    command = data["server"]["command"]
    assert command[0] == "/opt/venv/bin/gunicorn"
    expected_worker = "ASGIWorker" if example == "fastapi-app" else "WSGIWorker"
    assert command[command.index("--worker-class") + 1] == f"pydeploy_workers.{expected_worker}"
    assert data["user"]["uid"] != 0


def test_plan_flags_override_the_table(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "plan",
            str(EXAMPLES / "fastapi-app"),
            "--json",
            "--base",
            "debian-python:local",
            "--tag",
            "registry.local/team/api:2",
            "--tag",
            "edge",
            "--network",
            "host",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["base_image"] == {"name": "debian-python:local", "origin": "--base"}
    assert data["tags"] == ["registry.local/team/api:2", "fastapi-app:edge"]
    assert data["network"] == "host"


def test_plan_text_shows_command_and_layers() -> None:
    result = CliRunner().invoke(cli, ["plan", str(EXAMPLES / "flask-app")])
    assert result.exit_code == 0, result.output
    assert "--workers <WEB_CONCURRENCY or 2 x CPUs + 1, as memory allows>" in result.output
    assert "4. dependencies" in result.output


def test_plan_says_missing_libraries_are_found_at_build_unless_auto_is_off(tmp_path: Path) -> None:
    project = tmp_path / "libpq"
    shutil.copytree(ROOT / "tests" / "fixtures" / "libpq_app", project)
    result = CliRunner().invoke(cli, ["plan", str(project)])
    assert result.exit_code == 0, result.output
    [line] = [ln for ln in result.output.splitlines() if "shared libraries" in ln]
    assert "missing ones found at build time" in line
    as_json = json.loads(CliRunner().invoke(cli, ["plan", str(project), "--json"]).output)
    assert as_json["dependencies"]["auto_runtime_packages"] is True
    path = project / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("[tool.pydeploy]\n", "[tool.pydeploy]\nauto-runtime-packages = false\n")
    )
    off = CliRunner().invoke(cli, ["plan", str(project)])
    assert off.exit_code == 0, off.output
    assert "shared libraries" not in off.output


def test_plan_rejects_a_server_that_cannot_run_the_app(tmp_path: Path) -> None:
    project = tmp_path / "api"
    shutil.copytree(EXAMPLES / "fastapi-app", project)
    path = project / "pyproject.toml"
    path.write_text(path.read_text() + '\n[tool.pydeploy.server]\ntype = "gunicorn"\n')
    result = CliRunner().invoke(cli, ["plan", str(project)])
    assert result.exit_code == 2
    assert "runs WSGI apps, but the app is ASGI" in result.output


def test_version_flag() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("pydeploy, version ")


def test_plan_json_shows_what_the_build_reads_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pydeploy plan` plans with the host environment (its CA bundle variables) and
    shows the credential variables by name only."""
    project = tmp_path / "flask-app"
    shutil.copytree(EXAMPLES / "flask-app", project)
    path = project / "pyproject.toml"
    path.write_text(
        path.read_text(encoding="utf-8")
        + '\n[tool.pydeploy.index]\nurl = "https://pkgs.example/simple"\n'
        'password-env = "SHOP_TOKEN"\n',
        encoding="utf-8",
    )
    bundle = tmp_path / "proxy.pem"
    bundle.write_text("pem", encoding="utf-8")
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SHOP_TOKEN", "s3cr3t-token-value")
    result = CliRunner().invoke(cli, ["plan", str(project), "--json"])
    assert result.exit_code == 0, result.output
    assert "s3cr3t-token-value" not in result.output
    index = json.loads(result.output)["index"]
    assert index["url"] == "https://pkgs.example/simple"
    assert index["ca_bundle"] == {"path": str(bundle), "origin": "SSL_CERT_FILE"}
    assert index["credentials"] == {"username_env": None, "password_env": "SHOP_TOKEN"}
