"""The builder stage's control flow against a fake engine (fake_engine.py): which builder
image each job runs in (the light base first, the full builder once a build needs
compilers), how venv volumes are reused, claimed and cleaned up after a failure, how the
app check's report becomes WSGI or ASGI (or an error), and that no container outlives a
failure. The fake proves logic only; tests/integration proves that the images work."""

from __future__ import annotations

import dataclasses
import json
import tarfile
from pathlib import Path

import pytest
from tests.unit.builder.conftest import MakePlan
from tests.unit.builder.fake_engine import (
    BASE,
    BASE_ID,
    PYTHON,
    FakeContainer,
    FakeEngine,
    Reply,
    checks,
    failed,
    installs,
    projects,
    result,
)

from pydeploy import cachekeys
from pydeploy.builder import appcheck, stage
from pydeploy.builder.transcript import Reporting
from pydeploy.config.project import load_project
from pydeploy.errors import AppCheckError, BuildError, CompileError, ConfigError
from pydeploy.payload.builder_script import MARK
from pydeploy.plan import depinputs
from pydeploy.plan.planner import VENV, BuildPlan, Overrides, make_plan

NO_BUILD_PACKAGES = "build-packages = []\n"
OPAQUE_APP = "from somewhere import make\napp = make()\n"  # no scan can tell what it is
UV_FAILURE = Reply(
    ["  \u00d7 No solution found when resolving dependencies:", "  ╰─▶ flask>=99 was not found"], 1
)


class Said:
    """A Progress that keeps every detail the stage reports."""

    def __init__(self) -> None:
        self.details: list[str] = []

    def __call__(self, _step: str, _elapsed: float, detail: str | None) -> None:
        self.details.append(detail or "")

    def mentions(self, text: str) -> bool:
        return any(text in detail for detail in self.details)


def images_of(engine: FakeEngine, role: str) -> list[str]:
    return [box.image for box in engine.started(role)]


def install(engine: FakeEngine, plan: BuildPlan, said: Said | None = None) -> stage.Dependencies:
    progress = said or Said()
    builder = stage.ensure_builder(engine, plan, progress)
    return stage.install_dependencies(engine, plan, builder, Reporting(progress))


def app_tar(tmp_path: Path) -> Path:
    path = tmp_path / "app.tar"
    with tarfile.open(path, "w"):
        pass
    return path


def venv_of(engine: FakeEngine, deps: stage.Dependencies) -> dict[str, bytes]:
    return engine.volumes[deps.volume].files


# --- the builder image --------------------------------------------------------------------


def test_without_build_packages_the_base_image_is_the_builder(
    engine: FakeEngine, make: MakePlan
) -> None:
    builder = stage.ensure_builder(engine, make(NO_BUILD_PACKAGES), Said())
    assert (builder.name, builder.image_id, builder.light) == (BASE, BASE_ID, False)
    assert builder.python == stage.PythonInfo(
        "/usr/local/bin/python3", "3.12.1", "lib/python3.12/site-packages"
    )
    assert images_of(engine, "probe") == [BASE]
    assert engine.commits == []


def test_with_build_packages_the_builder_starts_light_and_builds_nothing(
    engine: FakeEngine, make: MakePlan
) -> None:
    builder = stage.ensure_builder(engine, make('build-packages = ["libpq-dev"]\n'), Said())
    assert (builder.name, builder.light) == (BASE, True)
    assert engine.started("apt-download") == []
    assert engine.commits == []


def test_the_probe_is_remembered_in_a_volume_so_a_warm_build_runs_none(
    engine: FakeEngine, make: MakePlan
) -> None:
    plan = make()
    first = stage.ensure_builder(engine, plan, Said())
    second = stage.ensure_builder(engine, plan, Said())
    assert first == second
    assert len(engine.started("probe")) == 1
    (probe_volume,) = [
        name for name in engine.volumes if name.startswith(cachekeys.PYTHON_VOLUME_PREFIX)
    ]
    assert engine.volumes[probe_volume].labels[cachekeys.LABEL_PYTHON_BASE] == BASE_ID


def test_a_base_image_without_python_is_a_clear_error(engine: FakeEngine, make: MakePlan) -> None:
    engine.handlers["probe"] = lambda _box: Reply(["pydeploy: no python3 on PATH"], 127)
    with pytest.raises(BuildError, match=r"Cannot find a python3 interpreter.*exit 127"):
        stage.ensure_builder(engine, make(), Said())
    assert engine.live() == []


def test_the_full_builder_is_committed_with_the_base_config_and_its_own_labels(
    engine: FakeEngine, make: MakePlan
) -> None:
    plan = make('build-packages = ["libpq-dev", "gcc"]\n')
    full = stage.ensure_full_builder(engine, plan, Said())
    assert full.name.startswith(f"{cachekeys.BUILDER_REPOSITORY}:")
    assert (full.light, full.packages) == (False, ("gcc", "libpq-dev"))
    # Downloads first, then an install that is committed; both in the base image.
    assert images_of(engine, "apt-download") == images_of(engine, "apt-install") == [BASE]
    ((name, settings),) = engine.commits
    assert name == full.name
    base = engine.images[BASE]
    assert (settings.env, settings.cmd) == (base.env, base.cmd), "nothing of the container"
    assert settings.labels["org.example.base"] == "1"
    assert settings.labels[cachekeys.LABEL_BUILDER_BASE] == BASE_ID
    assert settings.labels[cachekeys.LABEL_PACKAGES] == "gcc libpq-dev"
    assert settings.labels[cachekeys.LABEL_KEY] == full.name.split(":", 1)[1]
    assert json.loads(settings.labels[cachekeys.LABEL_PYTHON])["version"] == "3.12.1"
    # The scratch volume of the downloads is gone; so is every container.
    assert [v for v in engine.volumes if v.startswith(cachekeys.APT_VOLUME_PREFIX)] == []
    assert engine.live() == []


def test_a_full_builder_on_the_engine_is_used_without_building_or_probing(
    engine: FakeEngine, make: MakePlan
) -> None:
    plan = make('build-packages = ["gcc"]\n')
    built = stage.ensure_full_builder(engine, plan, Said())
    fresh = FakeEngine()  # another build on the same engine: the image is all it shares
    fresh.images[built.name] = engine.images[built.name]
    found = stage.ensure_builder(fresh, plan, Said())
    assert (found.name, found.light, found.packages) == (built.name, False, ("gcc",))
    assert found.python == built.python
    assert fresh.started("probe") == []
    assert fresh.commits == []


def test_debian_s_own_python_without_headers_gets_python3_dev(
    engine: FakeEngine, make: MakePlan
) -> None:
    debian = {**PYTHON, "executable": "/usr/bin/python3", "headers": False}
    engine.handlers["probe"] = lambda _box: Reply([result(debian)])
    full = stage.ensure_full_builder(engine, make('build-packages = ["gcc"]\n'), Said())
    assert full.packages == ("gcc", "python3-dev")
    (download,) = engine.started("apt-download")
    assert download.env["PYDEPLOY_PACKAGES"] == "gcc python3-dev"


def test_a_failing_apt_leaves_no_builder_image_scratch_volume_or_container(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["apt-download"] = lambda _box: Reply(["E: Unable to locate package nope"], 100)
    with pytest.raises(BuildError, match=r"build packages \(nope\)") as caught:
        stage.ensure_full_builder(engine, make('build-packages = ["nope"]\n'), Said())
    assert "Unable to locate package nope" in caught.value.message
    assert engine.commits == []
    assert engine.started("apt-install") == []
    assert [v for v in engine.volumes if v.startswith(cachekeys.APT_VOLUME_PREFIX)] == []
    assert engine.live() == []


# --- dependencies: escalation ---------------------------------------------------------------


def test_a_light_install_that_needs_a_compiler_moves_to_the_full_builder(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["install"] = installs(needs_compilers=True)
    said = Said()
    deps = install(engine, make('build-packages = ["gcc"]\n'), said)
    full = f"{cachekeys.BUILDER_REPOSITORY}:{deps.builder.key}"
    assert images_of(engine, "install") == [BASE, full]
    assert (deps.builder.name, deps.builder.light, deps.needs_compilers) == (full, False, True)
    assert said.mentions("a build ran a compiler (gcc)")
    # Both attempts filled the one volume: the venv key does not depend on the builder.
    volumes = {m.source for box in engine.started("install") for m in box.mounts}
    assert volumes == {cachekeys.CACHE_VOLUME, deps.volume}
    assert json.loads(venv_of(engine, deps)[cachekeys.MARKER])["compilers"] is True
    assert not deps.cached


def test_a_light_install_that_needs_nothing_more_stays_light(
    engine: FakeEngine, make: MakePlan
) -> None:
    said = Said()
    deps = install(engine, make('build-packages = ["gcc"]\n'), said)
    assert images_of(engine, "install") == [BASE]
    assert (deps.builder.light, deps.needs_compilers) == (True, False)
    assert engine.commits == [], "the full builder is made only when needed"
    assert said.mentions("base image (no compilers needed)")


def test_a_failure_a_compiler_cannot_fix_is_reported_not_escalated(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["install"] = lambda _box: UV_FAILURE
    with pytest.raises(BuildError, match="could not be resolved") as caught:
        install(engine, make('build-packages = ["gcc"]\n'))
    assert "flask>=99 was not found" in caught.value.message
    assert images_of(engine, "install") == [BASE]
    assert engine.commits == []


def test_without_build_packages_a_compile_failure_is_the_user_s_to_fix(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["install"] = lambda _box: Reply(
        [
            "  \u00d7 Failed to build `psycopg2==2.9.9`",
            "      src/psycopg/psycopg.h:36:10: error: libpq-fe.h: No such file or directory",
            "      fatal error: libpq-fe.h: No such file",
            failed("install"),
        ],
        3,
    )
    with pytest.raises(CompileError, match="psycopg2") as caught:
        install(engine, make(NO_BUILD_PACKAGES))
    assert "build-packages" in (caught.value.hint or "")
    assert images_of(engine, "install") == [BASE], "the base is the full builder: no retry"


def test_a_local_package_without_a_readable_name_goes_straight_to_the_full_builder(
    engine: FakeEngine, make: MakePlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = depinputs.dependency_inputs
    monkeypatch.setattr(
        stage,
        "dependency_inputs",
        lambda plan, python=None: dataclasses.replace(real(plan, python), local_names=None),
    )
    said = Said()
    deps = install(engine, make('build-packages = ["gcc"]\n'), said)
    assert images_of(engine, "install") == [deps.builder.name]
    assert not deps.builder.light
    assert said.mentions("a local package's name cannot be read without building it")


@pytest.mark.parametrize("output", [True, False], ids=["to-output", "as-progress"])
def test_verbose_streams_each_attempt_s_tool_lines_but_no_protocol_lines(
    engine: FakeEngine, make: MakePlan, output: bool
) -> None:
    engine.handlers["install"] = installs(needs_compilers=True)
    plan = make('build-packages = ["gcc"]\n')
    said, streamed = Said(), list[str]()
    builder = stage.ensure_builder(engine, plan, said)
    report = Reporting(said, verbose=True, output=streamed.append if output else None)
    stage.install_dependencies(engine, plan, builder, report)
    # The light attempt's tool line; the full one printed protocol lines only.
    shown = streamed if output else said.details
    assert [line for line in shown if "tried to compile" in line] == [
        "error: a build tried to compile"
    ]
    assert not [line for line in shown if line.startswith(MARK)]
    if output:
        assert "error: a build tried to compile" not in said.details, "not as progress too"


def test_without_verbose_no_tool_line_is_streamed(engine: FakeEngine, make: MakePlan) -> None:
    engine.handlers["install"] = installs(needs_compilers=True)
    plan = make('build-packages = ["gcc"]\n')
    said, streamed = Said(), list[str]()
    builder = stage.ensure_builder(engine, plan, said)
    stage.install_dependencies(engine, plan, builder, Reporting(said, output=streamed.append))
    assert streamed == []
    assert not said.mentions("tried to compile")


# --- dependencies: volumes ------------------------------------------------------------------


def test_a_new_volume_is_claimed_with_this_build_s_labels(
    engine: FakeEngine, make: MakePlan
) -> None:
    deps = install(engine, make())
    assert deps.volume == cachekeys.VENV_VOLUME_PREFIX + deps.key[:16]
    labels = engine.volumes[deps.volume].labels
    assert labels[cachekeys.LABEL_VENV_KEY] == deps.key
    assert labels[cachekeys.LABEL_OWNER] == engine.build_id
    assert labels[cachekeys.LABEL_OWNER_PROCESS] == engine.owner.label()
    assert labels[cachekeys.LABEL_VENV] == "1"
    assert int(labels[cachekeys.LABEL_CLAIMED]) > 0
    assert engine.volumes[cachekeys.CACHE_VOLUME].labels == {cachekeys.LABEL_CACHE: "1"}
    (job,) = [box.job for box in engine.started("install")]
    assert (job["key"], job["marker"]) == (deps.key, cachekeys.MARKER)
    assert cachekeys.USED in venv_of(engine, deps), "the use is recorded for prune"


def test_a_complete_volume_is_reused_without_an_install(engine: FakeEngine, make: MakePlan) -> None:
    plan = make()
    first = install(engine, plan)
    said = Said()
    again = install(engine, plan, said)
    assert len(engine.started("install")) == 1, "no second install"
    assert (again.cached, again.volume, again.pins) == (True, first.volume, ("flask==3.0.3",))
    assert said.mentions(f"cached in volume {first.volume}")
    used = json.loads(venv_of(engine, again)[cachekeys.USED])
    assert isinstance(used["time"], int), "the last use is recorded for prune"
    assert engine.live() == [], "the pins went with the hold"


def test_a_volume_left_without_a_marker_is_removed_and_filled_afresh(
    engine: FakeEngine, make: MakePlan
) -> None:
    plan = make()
    deps = install(engine, plan)
    volume = engine.volumes[deps.volume]
    del volume.files[cachekeys.MARKER]  # an interrupted build's leftovers
    volume.files["half-written"] = b"x"
    volume.labels.pop(cachekeys.LABEL_OWNER)
    again = install(engine, plan)
    assert not again.cached
    assert deps.volume in engine.removed_volumes
    assert "half-written" not in venv_of(engine, again)
    assert cachekeys.MARKER in venv_of(engine, again)


def test_a_marker_of_another_dependency_set_is_not_reused(
    engine: FakeEngine, make: MakePlan
) -> None:
    plan = make()
    deps = install(engine, plan)
    engine.volumes[deps.volume].files[cachekeys.MARKER] = json.dumps({"key": "other"}).encode()
    engine.volumes[deps.volume].labels.pop(cachekeys.LABEL_OWNER)
    again = install(engine, plan)
    assert not again.cached
    assert len(engine.started("install")) == 2


def test_a_failed_install_removes_its_half_filled_volume_and_containers(
    engine: FakeEngine, make: MakePlan
) -> None:
    def half(box: FakeContainer) -> Reply:
        box.volume(VENV).files["lib/partial.py"] = b"x"
        return UV_FAILURE

    engine.handlers["install"] = half
    with pytest.raises(BuildError):
        install(engine, make())
    assert [v for v in engine.volumes if v.startswith(cachekeys.VENV_VOLUME_PREFIX)] == []
    assert engine.live() == []


def test_an_interrupted_install_removes_its_volume_and_containers(
    engine: FakeEngine, make: MakePlan
) -> None:
    def interrupted(_box: FakeContainer) -> Reply:
        raise KeyboardInterrupt

    engine.handlers["install"] = interrupted
    with pytest.raises(KeyboardInterrupt):
        install(engine, make())
    assert [v for v in engine.volumes if v.startswith(cachekeys.VENV_VOLUME_PREFIX)] == []
    assert engine.live() == []


def test_secrets_reach_builder_containers_on_stdin_only(
    engine: FakeEngine, make: MakePlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_INDEX_USER", "ci")
    monkeypatch.setenv("DEMO_INDEX_TOKEN", "s3cr3t-value")
    plan = make(
        '\n[tool.pydeploy.index]\nurl = "https://pkgs.example/simple"\n'
        'username-env = "DEMO_INDEX_USER"\npassword-env = "DEMO_INDEX_TOKEN"\n'
    )
    install(engine, plan)
    (box,) = engine.started("install")
    assert b"s3cr3t-value" in (box.stdin or b"")
    assert "s3cr3t-value" not in json.dumps(box.env)
    assert all(b"s3cr3t-value" not in data for data in box.files.values())


# --- the app check (in the runtime image) -----------------------------------------------------


def check(engine: FakeEngine, plan: BuildPlan) -> appcheck.AppCheck:
    """The check as the build runs it, in a container of the (here: fake) runtime image."""
    return appcheck.run_check(engine, plan, BASE, Reporting(Said()))


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_the_check_decides_the_interface(
    engine: FakeEngine, make: MakePlan, interface: str
) -> None:
    engine.handlers["check"] = checks({"ok": True, "kind": interface, "interface": interface})
    checked = check(engine, make())
    assert (checked.interface, checked.status) == (interface, "passed")
    assert engine.live() == []


def test_the_check_runs_confined_as_the_image_will(engine: FakeEngine, make: MakePlan) -> None:
    plan = make('writable = ["logs", "/var/lib/demo"]\n[tool.pydeploy.check-env]\nKEY = "x1"\n')
    check(engine, plan)
    (box,) = engine.started("check")
    assert box.argv[:2] == [f"{VENV}/bin/python", "-c"], "the program is no file of the image"
    assert box.job == {"target": "app:app", "app_dir": "/app", "measure": box.job["measure"]}
    confine = box.confine
    assert confine is not None
    assert (confine.user, confine.workdir, confine.read_only) == ("10001:10001", "/app", True)
    owned = "uid=10001,gid=10001,mode=0755"
    assert confine.tmpfs == {"/tmp": "mode=1777", "/app/logs": owned, "/var/lib/demo": owned}
    assert box.env == {"KEY": "x1", "PYTHONHASHSEED": "0"}
    assert box.stdin == b"{}\n"
    assert box.mounts == (), "no builder volume: the venv is the image's"


def test_a_check_that_ends_without_a_report_is_an_app_check_error(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["check"] = checks({}, exit_code=137)
    with pytest.raises(AppCheckError, match=r"without a report \(exit 137\)"):
        check(engine, make())
    assert engine.live() == []


def test_the_check_ends_at_its_result_line_without_awaiting_the_exit(
    engine: FakeEngine, make: MakePlan
) -> None:
    report = {"ok": True, "kind": "asgi", "interface": "asgi"}
    # What an app thread prints after the result is never read (nor waited for).
    engine.handlers["check"] = lambda _box: Reply([result({"app": report}), "late"], exit_code=1)
    checked = check(engine, make())
    (box,) = engine.started("check")
    assert (checked.interface, box.stopped_early) == ("asgi", True)
    assert engine.live() == []


def test_a_forced_interface_settles_a_callable_the_check_cannot_tell(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["check"] = checks({"ok": False, "kind": "unknown", "interface": None})
    plan = make(server='interface = "asgi"\n', source=OPAQUE_APP)
    assert check(engine, plan).interface == "asgi"


def test_what_the_source_scan_saw_settles_a_callable_the_check_cannot_tell(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["check"] = checks({"ok": False, "kind": "unknown", "interface": None})
    plan = make()  # app.py's `def app(environ, start_response)`: the plan says WSGI
    assert plan.interface == "wsgi"
    assert check(engine, plan).interface == "wsgi"


def test_a_callable_neither_the_scan_nor_the_check_can_tell_is_an_error(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["check"] = checks({"ok": False, "kind": "unknown", "interface": None})
    with pytest.raises(AppCheckError, match="neither a WSGI") as caught:
        check(engine, make(source=OPAQUE_APP))
    assert "tool.pydeploy.server.interface" in (caught.value.hint or "")


def test_a_forced_interface_the_app_contradicts_is_an_error(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["check"] = checks({"ok": True, "kind": "asgi", "interface": "asgi"})
    with pytest.raises(AppCheckError, match=r"interface` = 'wsgi'.*an ASGI app"):
        check(engine, make(server='interface = "wsgi"\n'))


def test_a_server_type_that_cannot_serve_the_app_s_interface_is_an_error(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["check"] = checks({"ok": True, "kind": "asgi", "interface": "asgi"})
    with pytest.raises(AppCheckError, match=r"type` = 'gunicorn' cannot run") as caught:
        check(engine, make(server='type = "gunicorn"\n'))
    assert "`uvicorn`" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("report", "says"),
    [
        ({"kind": "import", "error": "ModuleNotFoundError: No module named 'nope'"}, "not import"),
        ({"kind": "attribute", "error": "AttributeError: no app"}, "attribute its module"),
        ({"kind": "class"}, "is a class"),
        ({"kind": "not-callable", "type": "int"}, "not callable"),
    ],
)
def test_an_app_that_cannot_serve_is_an_app_check_error(
    engine: FakeEngine, make: MakePlan, report: dict[str, str], says: str
) -> None:
    engine.handlers["check"] = checks({"ok": False, **report})
    with pytest.raises(AppCheckError, match=says):
        check(engine, make())
    assert engine.live() == [], "the check's container is gone"


# --- the project's own wheel (in the builder) -------------------------------------------------


def build_project(
    engine: FakeEngine, plan: BuildPlan, tmp_path: Path, deps: stage.Dependencies | None = None
) -> Path:
    deps = deps or install(engine, plan)
    return stage.build_project(engine, plan, deps, app_tar(tmp_path), Reporting(Said()))


def test_a_light_project_build_that_needs_a_compiler_moves_to_the_full_builder(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    plan = make('build-packages = ["gcc"]\n')
    deps = install(engine, plan)
    assert deps.builder.light
    engine.handlers["project"] = projects(needs_compilers=True)
    build_project(engine, plan, tmp_path, deps)
    full = f"{cachekeys.BUILDER_REPOSITORY}:{deps.builder.key}"
    assert images_of(engine, "project") == [BASE, full]
    assert [box.job["light"] for box in engine.started("project")] == [True, False]


def test_dependencies_the_full_builder_installed_build_the_project_there(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    plan = make('build-packages = ["gcc"]\n')
    engine.handlers["install"] = installs(needs_compilers=True)
    deps = install(engine, plan)
    # A later build, after the builder image was pruned, finds the volume complete while
    # its own builder is light.
    later = FakeEngine()
    later.volumes = engine.volumes
    cached = install(later, plan)
    assert (cached.cached, cached.builder.light, cached.needs_compilers) == (True, True, True)
    build_project(later, plan, tmp_path, cached)
    assert images_of(later, "project") == [deps.builder.name], "no light attempt first"
    assert later.started("install") == []


def test_the_project_s_own_wheel_comes_back_as_a_site_tree(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    engine.handlers["project"] = projects({"demo/__init__.py": b"VERSION = 1\n"})
    site_tar = build_project(engine, make(), tmp_path)
    with tarfile.open(site_tar) as tar:
        assert tar.getnames() == ["demo/__init__.py"]
    assert engine.live() == []


# --- the base's interpreter against what the project pins ---------------------------------


def test_a_base_other_than_python_version_is_refused_naming_the_file_and_the_fixes(
    tmp_path: Path, engine: FakeEngine, make: MakePlan
) -> None:
    # The fake base has Python 3.12; the project is developed on 3.11.
    (tmp_path / ".python-version").write_text("3.11\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        stage.ensure_builder(engine, make(), Said())
    text = caught.value.message
    assert f"{tmp_path / '.python-version'} pins Python 3.11" in text
    assert "has Python 3.12" in text
    assert "python:3.11-slim" in text
    assert 'tool.pydeploy.python = "3.12"' in text
    # Saying which interpreter to use on this base is the way to build on it anyway.
    stage.ensure_builder(engine, make('python = "3.12"\n'), Said())


def test_a_base_outside_the_poetry_python_constraint_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "rw"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[tool.poetry]\nname = "rw"\nversion = "1"\n[tool.poetry.dependencies]\n'
        'python = "^3.12"\n[tool.pydeploy]\napp = "app:app"\n',
        encoding="utf-8",
    )
    (root / "app.py").write_text("def app(e, s):\n    return []\n", encoding="utf-8")
    plan = make_plan(load_project(root), Overrides(base_image="local/base:1"))
    python = stage.PythonInfo("/usr/bin/python3", "3.11.2", "lib/python3.11/site-packages")
    with pytest.raises(ConfigError, match=r"3\.11\.2 \(from base image local/base:1\).*\^3\.12"):
        stage.check_python(plan, python)
    stage.check_python(plan, dataclasses.replace(python, version="3.12.1"))
