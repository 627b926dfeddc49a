"""The builder stage's pure logic: dependency keys, server packages, CA bundle discovery,
secret handling, pylock.toml parsing, failure messages and app interface detection.
No engine: these check decisions, the integration tests check the containers."""

from __future__ import annotations

import base64
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from pydeploy import builder_script, wheels
from pydeploy.config import IndexConfig
from pydeploy.errors import BuildError, CompileError, ConfigError
from pydeploy.plan import BuildPlan, Overrides, make_plan
from pydeploy.project import load_project

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


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
    inputs = wheels.dependency_inputs(plan)
    servers = wheels.server_packages(plan.server)
    index = wheels.index_settings(plan.project.config.index)
    return wheels.dependency_key(builder, inputs, servers, index)


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
        monkeypatch.setattr(wheels, "RECIPE_VERSION", "test-changed")
        after = key_of(plan)
    assert after != before


def test_key_never_contains_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = '[tool.pydeploy.index]\nurl = "https://pkgs.example/simple"\npassword-env = "TOKEN"\n'
    root = write_project(tmp_path / "p", body)
    monkeypatch.setenv("TOKEN", "first-secret-value")
    plan = plan_of(root)
    settings = wheels.index_settings(plan.project.config.index)
    assert "first-secret-value" not in repr(settings)
    before = key_of(plan)
    monkeypatch.setenv("TOKEN", "second-secret-value")
    assert key_of(plan_of(root)) == before, "rotating a token must not rebuild"


def test_local_path_package_content_is_part_of_the_key(tmp_path: Path) -> None:
    root = tmp_path / "cext_app"
    shutil.copytree(FIXTURES / "cext_app", root)
    plan = plan_of(root)
    inputs = wheels.dependency_inputs(plan)
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
    inputs = wheels.dependency_inputs(plan_of(root))
    assert inputs.mount_root == tmp_path
    assert inputs.copies == ("services/api", "shared/lib")
    assert inputs.cwd == "services/api"


def test_uv_lock_inputs_skip_the_project_itself() -> None:
    inputs = wheels.dependency_inputs(plan_of(FIXTURES / "uvlock_app"))
    assert inputs.source == "uv.lock"
    assert [what for what, _ in inputs.digests] == ["uv.lock"]
    assert inputs.package is None
    assert inputs.copies == ("",)


def test_missing_requirements_file_is_a_config_error(tmp_path: Path) -> None:
    body = '[tool.pydeploy.dependencies]\nrequirements = ["requirements/prod.txt"]\n'
    root = write_project(tmp_path / "p", body)
    with pytest.raises(ConfigError, match=r"tool\.pydeploy\.dependencies\.requirements"):
        wheels.dependency_inputs(plan_of(root))


# --- server packages ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "packages"),
    [
        ("gunicorn", ("gunicorn",)),
        ("gunicorn-uvicorn", ("gunicorn", "uvicorn", "uvicorn-worker")),
        ("uvicorn", ("uvicorn",)),
        ("auto", ("gunicorn", "uvicorn", "uvicorn-worker")),
    ],
)
def test_server_packages(server: str, packages: tuple[str, ...]) -> None:
    assert wheels.server_packages(server) == packages


def test_server_packages_are_added_only_when_not_named() -> None:
    lines = [
        "# comment",
        "Gunicorn==23.0.0",
        "uvicorn[standard]>=0.30 ; python_version >= '3.10'",
        "-r other.txt",
        "./vendor/uvicorn-worker",
        "flask @ https://example.invalid/flask.whl",
        "",
    ]
    named = builder_script.requirement_names(lines)
    assert named == {"gunicorn", "uvicorn", "flask"}
    wanted = ["gunicorn", "uvicorn", "uvicorn-worker"]
    assert builder_script.missing_server_packages(named, wanted) == ["uvicorn-worker"]
    assert builder_script.missing_server_packages({"uvicorn-worker"}, ["uvicorn_worker"]) == []


def test_requirement_file_names_follow_includes(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("gunicorn==23.0\n", encoding="utf-8")
    (tmp_path / "prod.txt").write_text("-r base.txt\nflask\n", encoding="utf-8")
    assert builder_script.requirement_file_names(str(tmp_path / "prod.txt")) == {
        "gunicorn",
        "flask",
    }


def test_editable_lines_become_plain_paths(tmp_path: Path) -> None:
    (tmp_path / "more.txt").write_text("--editable=./b\n", encoding="utf-8")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("-e ./a\n-r more.txt\nflask\n", encoding="utf-8")
    builder_script.drop_editable(reqs)
    assert reqs.read_text(encoding="utf-8") == "./a\n-r more.txt\nflask\n"
    assert (tmp_path / "more.txt").read_text(encoding="utf-8") == "./b\n"


# --- CA bundle --------------------------------------------------------------------------


def test_ca_bundle_discovery_order(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("cfg", "ssl", "pip", "req")}
    for path in files.values():
        path.write_text("pem", encoding="utf-8")
    env = {
        "SSL_CERT_FILE": str(files["ssl"]),
        "PIP_CERT": str(files["pip"]),
        "REQUESTS_CA_BUNDLE": str(files["req"]),
    }
    find = wheels.find_ca_bundle
    assert find("cfg.pem", tmp_path, env) == files["cfg"]
    assert find(None, tmp_path, env) == files["ssl"]
    assert (
        find(None, tmp_path, {**env, "SSL_CERT_FILE": str(tmp_path / "gone.pem")}) == files["pip"]
    )
    assert find(None, tmp_path, {"REQUESTS_CA_BUNDLE": str(files["req"])}) == files["req"]
    assert find(None, tmp_path, {}) is None


def test_configured_ca_bundle_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tool\.pydeploy\.index\.ca-bundle"):
        wheels.find_ca_bundle("missing.pem", tmp_path, {})


# --- credentials and masking --------------------------------------------------------------


def test_credentials_come_from_the_named_variables() -> None:
    index = IndexConfig(
        url="https://pkgs.example/simple",
        username_env="U",
        password_env="P",  # noqa: S106 - the NAME of a variable, not a password
    )
    creds = wheels.read_credentials(index, {"U": "robot", "P": "tok/en:with@chars"})
    assert creds == wheels.Credentials("robot", "tok/en:with@chars")
    with pytest.raises(ConfigError, match=r"tool\.pydeploy\.index\.password-env.*\bP\b"):
        wheels.read_credentials(index, {"U": "robot"})


def test_index_environment_carries_secrets_only_as_values() -> None:
    index = IndexConfig(
        url="https://pkgs.example/simple",
        extra_urls=["https://extra.example/simple"],
        username_env="U",
        password_env="P",  # noqa: S106 - the NAME of a variable, not a password
    )
    creds = wheels.Credentials("robot", "s3cr3t/token")
    env = wheels.index_environment(index, creds)
    assert env["UV_DEFAULT_INDEX"] == "pydeploy-0=https://pkgs.example/simple"
    assert env["UV_INDEX"] == "pydeploy-1=https://extra.example/simple"
    assert env["UV_INDEX_PYDEPLOY_0_PASSWORD"] == "s3cr3t/token"  # noqa: S105
    assert env["UV_INDEX_PYDEPLOY_1_USERNAME"] == "robot"
    assert env["PIP_INDEX_URL"] == "https://robot:s3cr3t%2Ftoken@pkgs.example/simple"
    assert not any("s3cr3t" in name for name in env)
    # No index configured: PyPI, and credentials go nowhere.
    assert wheels.index_environment(IndexConfig(), creds) == {}


def test_masker_hides_every_form_of_a_secret() -> None:
    creds = wheels.Credentials("robot", "s3cr3t/token")
    mask = wheels.Masker(creds.secrets())
    header = base64.b64encode(b"robot:s3cr3t/token").decode()
    text = (
        "GET https://robot:s3cr3t%2Ftoken@pkgs.example/simple "
        f"Authorization: Basic {header} password s3cr3t/token"
    )
    masked = mask(text)
    assert "s3cr3t" not in masked
    assert header not in masked
    assert masked.count("****") == 4
    # Too-short values would mangle ordinary output; they are left alone.
    assert wheels.Masker(["ab"])("about") == "about"


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
    assert wheels.parse_pylock(PYLOCK) == [
        "itsdangerous==2.2.0",
        "colorama==0.4.6 ; sys_platform == 'win32'",
        "./libs/mylib",
        "tool @ git+https://git.example/tool.git@abc123",
        "blob @ https://files.example/blob-1.0.tar.gz",
        "nover @ ./wheels/nover-1.0-py3-none-any.whl",
    ]


def test_parse_pylock_errors() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        wheels.parse_pylock("[[packages]\n")
    with pytest.raises(ConfigError, match="has no `name`"):
        wheels.parse_pylock('[[packages]]\nversion = "1"\n')


def test_pylock_source_reads_local_paths(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    (root / "libs" / "mylib").mkdir(parents=True)
    (root / "libs" / "mylib" / "pyproject.toml").write_text("[project]\n", encoding="utf-8")
    (root / "pylock.toml").write_text(PYLOCK, encoding="utf-8")
    inputs = wheels.dependency_inputs(plan_of(root))
    assert inputs.source == "pylock"
    assert inputs.requirement_lines[2] == "./libs/mylib"
    assert {what for what, _ in inputs.digests} == {"pylock.toml", "local:libs/mylib"}


# --- failure messages -------------------------------------------------------------------------


COMPILE_FAILURE = """\
Resolved 2 packages in 12ms
error: Failed to build `badext @ file:///build/src/vendor/badext`
  cause: The build backend returned an error
  cause: Call to `setuptools.build_meta.build_wheel` failed (exit status: 1)
         [stderr]
         badext.c: In function 'add':
         badext.c:9:34: error: expected ';' before 'this'
         error: command '/usr/bin/x86_64-linux-gnu-gcc' failed with exit code 1
  hint: This usually indicates a problem with the package or the build environment.
error: `/cache/tools/uv/bin/uv pip install ...` exited with 1
"""


def test_compile_failure_names_package_tail_and_key(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p"))
    error = wheels.explain_failure("install", COMPILE_FAILURE, plan)
    assert isinstance(error, CompileError)
    assert error.exit_code == 6
    assert "`badext`" in error.message
    assert "badext.c:9:34: error" in error.message
    assert "tool.pydeploy.build-packages" in error.message
    assert "hint: This usually" not in error.message
    assert "exited with 1" not in error.message


def test_pure_python_build_failure_is_not_a_compile_error(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p"))
    output = (
        "error: Failed to build `slowpkg==1.0`\n"
        "  cause: The build backend returned an error\n"
        "         ModuleNotFoundError: No module named 'flit_core'\n"
    )
    error = wheels.explain_failure("install", output, plan)
    assert type(error) is BuildError
    assert "`slowpkg`" in error.message


def test_resolution_failure_shows_the_resolver_message(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p"))
    output = (
        "Using Python 3.11.2\n"
        "error: No solution found when resolving dependencies\n"
        "  cause: Because nosuchpkg was not found in the package registry and you require "
        "nosuchpkg, we can conclude that your requirements are unsatisfiable.\n"
        "error: `/cache/tools/uv/bin/uv pip compile ...` exited with 1\n"
    )
    error = wheels.explain_failure("resolve", output, plan)
    assert type(error) is BuildError
    assert "nosuchpkg was not found in the package registry" in error.message
    assert "Traceback" not in error.message
    assert "exited with 1" not in error.message
    assert "[project.dependencies]" in error.message


def test_tls_failure_points_at_the_ca_bundle(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p"))
    output = "error: Request failed\n  cause: invalid peer certificate: UnknownIssuer\n"
    error = wheels.explain_failure("resolve", output, plan)
    assert "tool.pydeploy.index.ca-bundle" in error.message


# --- app interface detection ------------------------------------------------------------------


class AsgiApp:
    async def __call__(self, scope: object, receive: object, send: object) -> None:
        del scope, receive, send


class WsgiApp:
    def __call__(self, environ: object, start_response: object) -> list[bytes]:
        del environ, start_response
        return []


def wsgi_function(environ: object, start_response: object) -> list[bytes]:
    return []


async def asgi_function(scope: object, receive: object, send: object) -> None:
    return None


def star_args(*args: object) -> None:
    return None


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        (AsgiApp(), "asgi"),
        (WsgiApp(), "wsgi"),
        (wsgi_function, "wsgi"),
        (asgi_function, "asgi"),
        (AsgiApp, "class"),
        (42, "not-callable"),
        (star_args, "unknown"),
    ],
)
def test_interface_of(obj: object, kind: str) -> None:
    assert builder_script.interface_of(obj) == kind


# --- workspace members and the engine connection -------------------------------------------


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
    inputs = wheels.dependency_inputs(plan_of(member))
    assert inputs.source == "uv.lock"
    assert inputs.package == "api"
    assert inputs.mount_root == tmp_path
    assert (inputs.copies, inputs.cwd) == (("",), "")
    assert {what for what, _ in inputs.digests} == {"uv.lock", "local:../../libs/shared"}


def test_no_engine_gives_one_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydeploy.engine import Engine
    from pydeploy.errors import EngineError

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(EngineError) as caught:
        Engine.connect()
    message = caught.value.message
    assert caught.value.exit_code == 3
    assert f"unix://{tmp_path}/no-engine.sock" in message
    assert "DOCKER_HOST" in message
    assert "systemctl start docker" in message
    assert "\n" not in message
